"""Weak and strong orders of stochastic samplers on the exact Gaussian oracle (``bench order
--kind weak,strong``).

**Weak order.** Every sampler starts from the exact marginal at t_0 = T, x_T = a_0·μ +
sqrt(v_0)·z (not the SDE's prior), so every member of the family of SDEs with the model's
marginals (the probability-flow ODE, the reverse SDE of Song et al. 2021, Eq. 6, and all between:
ancestral η, DPM-Solver's η, SA-Solver's τ, ER-SDE's noise scale, Restart's jumps) has the exact
marginal p_t = N(a·μ, v) at every t, and the N → ∞ limit of a sampler whose last step lands on the
denoiser at t_last (every sampler in the suite but ``pc``) is D(x; t_last) for x ~ p_{t_last}:
mean μ, variance a²s⁴/v at t_last (Tweedie's D = μ + (a·s²/v)·(x − a·μ)). The weak error at N is
|mean − μ| + |variance − a²s⁴/v| of one coordinate of the final sample.

On Gaussian data the denoiser is affine, so a fixed-step sampler's output is an affine function
of its inputs (z and every standard normal it draws): its mean is its output with every input at
0, and its variance is the sum of its squared coefficients, read off by running it on a design
in which sample j sees 1 at input j and 0 elsewhere (:class:`DesignNoise`). Both are exact: no
Monte-Carlo error, so the fitted slopes are as clean as the deterministic ones. A sampler whose
output is not affine in its noise (a step size that depends on it) is caught by a check run.

**Strong order.** Per-sample RMS distance between the sample at N and a fine solution at
``STRONG_FINE``·(largest N) steps of the same sampler, from the same x_T (the SDE's prior) and
the same Brownian path (seed 0): the slope of the strong order. The reverse SDEs of VE, VP and
sub-VP have additive noise (g depends on t only), where Euler–Maruyama's strong order is 1. A
sampler that draws its noise per step (``iid``) has no path to converge on: its error does not
fall, and the row says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bench.core.noise import SampleNoise, prior_noise
from bench.core.sampler import Sampler
from bench.core.schedule import Schedule, TimeGrid
from bench.core.sde import SDE
from bench.core.views import ModelView
from bench.errors import BenchError, Unsupported
from bench.run.order import GaussianOracle, Measurement, Point

STRONG_STEPS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
"""Default N for the strong order (the fine solution runs STRONG_FINE times the largest)."""
STRONG_FINE = 16
WEAK_STEPS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384)
"""Default N for the weak order."""
STRONG_SAMPLES = 64
CHECK = -0.7
"""The value of the check sample's noise input (with 0.5 of the start's): its output must be
the same combination of the design's outputs."""
LINEARITY_TOL = 1e-8
"""Relative gap between two predictions of the same output beyond which a sampler is not affine
in its noise (float64 round-off is ~1e-13)."""


class DesignNoise(SampleNoise):
    """Draws that are a design instead of random numbers: draw ``k`` of stream ``s`` for ``n``
    numbers per sample is 1 for the samples whose input (s, n, k) it is, 0 for all others.

    Every instance (the cell's and the Brownian path's, built with ``type(noise)``) records the
    inputs it is asked for in the shared ``record`` and reads the shared design (:meth:`use`).
    """

    record: set[tuple[int, int, int]] = set()
    codes = torch.empty(0, dtype=torch.int64)
    values = torch.empty(0, dtype=torch.float64)
    code_of: dict[tuple[int, int, int], int] = {}

    @classmethod
    def use(cls, design: Sequence[tuple[int, int, int] | None], last: float = 1.0) -> None:
        """Sample j's input is ``design[j]`` (``None``: every draw 0), of value 1 (the last
        sample's: ``last``)."""
        cls.code_of = {key: i for i, key in enumerate(dict.fromkeys(k for k in design if k))}
        cls.codes = torch.tensor([cls.code_of[k] if k else -1 for k in design])
        cls.values = torch.ones(len(design), dtype=torch.float64)
        cls.values[-1] = last

    def draws(self, indices: Sequence[int], like: Tensor) -> Tensor:
        numel = self._numel(like)
        keys = [(self.stream, numel, int(k)) for k in indices]
        DesignNoise.record.update(keys)
        wanted = torch.tensor([self.code_of.get(key, -2) for key in keys], dtype=torch.int64)
        rows = self.codes[self.start : self.start + self.size]
        value = self.values[self.start : self.start + self.size].to(like.dtype)
        out = (wanted.view(-1, 1) == rows.view(1, -1)).to(like.dtype) * value
        return out.view(len(keys), self.size, *[1] * (like.dim() - 1)).expand(-1, *like.shape)

    def views(self, indices: Sequence[int], like: Tensor) -> list[Tensor]:
        return list(self.draws(indices, like).unbind(0))


@dataclass
class WeakRun:
    """The exact mean and variance of one coordinate of a sampler's output at one N."""

    mean: float
    variance: float
    nfe: int
    t_last: float
    inputs: int


def exact_start(sde: SDE, oracle: Any, t: float) -> tuple[float, float]:
    """(mean, sd) of the exact marginal at t: a·μ and sqrt(a²s² + std²)."""
    a, v = oracle.moments(sde, t)
    return a * oracle.mean, math.sqrt(v)


def run_design(
    sampler: Sampler,
    sde: SDE,
    grid: TimeGrid,
    oracle: Any,
    z: Tensor,
    design: Sequence[tuple[int, int, int] | None],
    last: float = 1.0,
) -> tuple[Tensor, int, float]:
    """The sampler from x_T = the exact marginal at t_0 of ``z`` on design noise (the last
    sample's input of value ``last``): (output, counted NFE, time of its last evaluation)."""
    DesignNoise.use(design, last)
    times: list[float] = []

    def denoiser(x: Tensor, t: float) -> Tensor:
        times.append(t)
        return oracle.denoise(sde, x, t)

    m, sd = exact_start(sde, oracle, grid.t[0])
    view = ModelView(denoiser, "x0", sde)
    with torch.no_grad():
        x = sampler.sample(m + sd * z, grid, view, DesignNoise(0, 0, len(design)))
    if not times:
        raise Unsupported("the sampler made no model evaluation")
    return x[:, 0], view.calls, times[-1]


def weak_run(sampler: Sampler, sde: SDE, grid: TimeGrid, oracle: Any) -> WeakRun:
    """Exact output mean and variance on ``grid`` (the module docstring's design)."""
    DesignNoise.record = set()
    zero = torch.zeros(1, 1, dtype=torch.float64)
    mean, nfe, t_last = run_design(sampler, sde, grid, oracle, zero, [None])
    inputs = sorted(DesignNoise.record)
    z = torch.zeros(len(inputs) + 2, 1, dtype=torch.float64)
    z[0] = 1.0  # sample 0: the start's input; samples 1…K: one draw each; the last: a check
    z[-1] = 0.5
    check = inputs[len(inputs) // 2] if inputs else None
    out, _, _ = run_design(sampler, sde, grid, oracle, z, [None, *inputs, check], CHECK)
    c = out - mean
    predicted = 0.5 * c[0] + (CHECK * c[1 + len(inputs) // 2] if inputs else 0.0)
    if abs(float(c[-1] - predicted)) > LINEARITY_TOL * (1.0 + float(c.abs().max())):
        raise BenchError(
            f"sampler {sampler.name!r} is not affine in its noise (its steps depend on it): "
            "its weak order cannot be computed exactly here"
        )
    variance = float(c[:-1].pow(2).sum())
    return WeakRun(float(mean[0]), variance, nfe, t_last, len(inputs))


def weak_error(run: WeakRun, sde: SDE, oracle: Any) -> float:
    """|mean − μ| + |variance − a²s⁴/v| at the last evaluation time (module docstring)."""
    a, v = oracle.moments(sde, run.t_last)
    target = (a * oracle.std**2) ** 2 / v
    return abs(run.mean - oracle.mean) + abs(run.variance - target)


def strong_run(
    sampler: Sampler, sde: SDE, schedule: Schedule, oracle: Any, N: int, z: Tensor
) -> tuple[Tensor, int, int]:
    """The sample at N from the prior of ``z`` on the cell's noise of seed 0: (x, counted NFE,
    the sequential draws it made, ``noise(x)``)."""
    sampler.supports(sde, schedule)
    grid = schedule.grid(sde, N)
    sde.discrete = grid.paper
    noise = RecordingNoise(0, 0, z.shape[0])
    view = ModelView(lambda x, t: oracle.denoise(sde, x, t), "x0", sde)
    with torch.no_grad():
        x = sampler.sample(sde.prior_sampling(z), grid, view, noise)
    return x, view.calls, noise.sequential


class RecordingNoise(SampleNoise):
    """The cell's noise, counting the sequential draws (``noise(x)``) the sampler makes."""

    sequential = 0

    def __call__(self, x: Tensor) -> Tensor:
        self.sequential += 1
        return super().__call__(x)


def strong_samples(oracle: Any) -> Tensor:
    """The prior noise of the strong runs: STRONG_SAMPLES samples of seed 0, float64."""
    return prior_noise(0, 0, STRONG_SAMPLES, (oracle.dim,)).to(torch.float64)


def measure_weak(
    sampler: Sampler,
    sde_of: Callable[[int], SDE],
    schedule: Schedule,
    steps: tuple[int, ...] = WEAK_STEPS,
    oracle: Any = None,
) -> Measurement:
    """The exact weak error at every N of ``steps`` (module docstring); an N the sampler cannot
    run is a point with a note."""
    oracle = oracle or GaussianOracle(dim=1)
    out = Measurement()
    for N in sorted(steps):
        sde = sde_of(N)
        try:
            sampler.supports(sde, schedule)
            grid = schedule.grid(sde, N)
            sde.discrete = grid.paper
            run = weak_run(sampler, sde, grid, oracle)
        except Unsupported as exc:
            out.points.append(Point(N, None, sampler.nfe_nominal(N), None, exc.reason))
            continue
        out.points.append(Point(N, run.nfe, sampler.nfe_nominal(N), weak_error(run, sde, oracle)))
        out.start, out.end = grid.t[0], run.t_last
        out.grid_start, out.grid_end = grid.t[0], grid.t[-2]
    return out


def measure_strong(
    sampler: Sampler,
    sde_of: Callable[[int], SDE],
    schedule: Schedule,
    steps: tuple[int, ...] = STRONG_STEPS,
    oracle: Any = None,
) -> tuple[Measurement, str | None]:
    """The strong error at every N of ``steps`` against the fine solution at STRONG_FINE·max(N)
    on the same path, and a note when the sampler's sequential draws change in number with N
    (per-step noise: no path to follow; draws that do not, e.g. Restart's jumps, are shared)."""
    oracle = oracle or GaussianOracle()
    z, out, fine_n = strong_samples(oracle), Measurement(), STRONG_FINE * max(steps)
    per_step = False
    try:
        fine, _, drawn = strong_run(sampler, sde_of(fine_n), schedule, oracle, fine_n, z)
    except Unsupported as exc:
        out.points = [Point(N, None, sampler.nfe_nominal(N), None, exc.reason) for N in steps]
        return out, None
    for N in sorted(steps):
        sde = sde_of(N)
        try:
            x, nfe, drew = strong_run(sampler, sde, schedule, oracle, N, z)
        except Unsupported as exc:
            out.points.append(Point(N, None, sampler.nfe_nominal(N), None, exc.reason))
            continue
        per_step = per_step or drew != drawn
        error = float((x - fine).pow(2).mean().sqrt())
        out.points.append(Point(N, nfe, sampler.nfe_nominal(N), error))
    out.stop = f"fine solution: N = {fine_n}"
    note = None
    if per_step:
        note = "draws per-step noise (noise(x), not a Brownian path): no strong convergence"
    return out, note
