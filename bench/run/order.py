"""``bench order``: a sampler's convergence order, measured on an exact Gaussian oracle.

For Gaussian data N(μ, s²·I) and the perturbation kernel x_t = a(t)·x₀ + std(t)·z (Song et al.
2021, Eq. 29–33), every marginal is Gaussian, p_t = N(a·μ, v·I) with v(t) = a²s² + std², and the
score is −(x − a·μ)/v. The probability-flow ODE (Eq. 13), dx/dt = f·x − ½g²·∇log p_t with
f = a'/a and g² = (std²)' − 2f·std², is then linear, and u = (x − a·μ)/sqrt(v) is constant along
it: with y = x − a·μ, y' = (f + ½g²/v)·y, and f + ½g²/v = (2a·a'·s² + (std²)')/(2v) = v'/(2v), the
rate of sqrt(v). So the flow from (x₁, t₁) to t₂ is

    x₂ = a₂·μ + sqrt(v₂/v₁)·(x₁ − a₁·μ),

and the denoiser is Tweedie's D(x, t) = E[x₀ | x_t = x] = μ + (a·s²/v)·(x − a·μ).

A sampler's N steps end at σ = 0 with a last step from t_{N−1} > 0 that lands on the denoiser
output there (the suite's convention; :mod:`bench.core.schedule`). Its N → ∞ limit is therefore
the exact flow from its start to the time of its last model evaluation, followed by the exact D
at that time. That is the reference here: taken from the sampler's own first evaluation (the
state and time it starts from) and last evaluation time, so a sampler that picks its own noise
levels (a diffusers scheduler) is measured against its own limit; rows record both times.

The order is the least-squares slope of log(error) against log(N) over the asymptotic range
(:func:`fit_order`). Everything runs in float64; a sweep stops below :data:`ROUND_OFF`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from bench.core.noise import prior_noise
from bench.core.sampler import Sampler
from bench.core.schedule import Schedule, TimeGrid
from bench.core.sde import SDE
from bench.core.views import ModelView
from bench.errors import Unsupported

STEPS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768)
"""Default N: ×1.5 (or ×4/3) apart from the few-step regime to well inside the asymptotic range
of 1st- to 4th-order samplers (4th order reaches ~1e-10 at N = 768), and below the 1,000
timesteps of diffusers' DDPM-type schedulers."""
UNSETTLED = 0.5
"""An interval wider than this gets a note: the local slopes have not settled on one order."""
ROUND_OFF = 1e-11
"""A sweep stops at the first error below this (float64 round-off accumulates to ~1e-13 over
hundreds of steps): smaller errors measure rounding, not the method."""
MEAN, STD, DIM, SAMPLES = 0.5, 0.2, 4, 32
"""The oracle N(μ, s²·I) (gauss1d's μ and s, in DIM dimensions) and the samples per run."""


class DrewNoise(Exception):
    """The sampler called ``noise``: it is stochastic (the flow map is not its limit)."""


@dataclass(frozen=True)
class GaussianOracle:
    """Data N(``mean``, ``std``²·I) in ``dim`` dimensions under any SDE (see the module doc)."""

    mean: float = MEAN
    std: float = STD
    dim: int = DIM

    def moments(self, sde: SDE, t: float) -> tuple[float, float]:
        """(a(t), v(t) = a²s² + std(t)²) of the marginal p_t = N(a·μ, v·I)."""
        a, sigma = sde.marginal_coef(t)
        return a, a * a * self.std**2 + sigma * sigma

    def denoise(self, sde: SDE, x: Tensor, t: float) -> Tensor:
        """Tweedie's D(x, t) = μ + (a·s²/v)·(x − a·μ)."""
        a, v = self.moments(sde, t)
        return (x - a * self.mean) * (a * self.std**2 / v) + self.mean

    def flow(self, sde: SDE, x: Tensor, t_from: float, t_to: float) -> Tensor:
        """The probability-flow solution at ``t_to`` from ``x`` at ``t_from`` (closed form)."""
        a_1, v_1 = self.moments(sde, t_from)
        a_2, v_2 = self.moments(sde, t_to)
        return (x - a_1 * self.mean) * math.sqrt(v_2 / v_1) + a_2 * self.mean

    def limit(self, sde: SDE, x_first: Tensor, t_first: float, t_last: float) -> Tensor:
        """The N → ∞ limit of a sampler from ``x_first`` at ``t_first`` whose last evaluation is
        at ``t_last``: the exact flow to ``t_last``, then the exact denoiser there."""
        return self.denoise(sde, self.flow(sde, x_first, t_first, t_last), t_last)


@dataclass
class Run:
    """One run at one N: the sample, counted NFE and the first/last evaluations."""

    x: Tensor
    nfe: int
    x_first: Tensor
    t_first: float
    t_last: float
    grid: TimeGrid


def run_once(
    sampler: Sampler, sde: SDE, schedule: Schedule, oracle: GaussianOracle, N: int, z: Tensor
) -> Run:
    """Run ``sampler`` from x_T = the prior of ``z`` on ``schedule``'s N-step grid.

    Raises:
        DrewNoise: the sampler called ``noise``.
        Unsupported: the sampler cannot run this SDE, schedule or N.
    """
    sampler.supports(sde, schedule)
    grid = schedule.grid(sde, N)
    sde.discrete = grid.paper
    first: list[Tensor] = []
    times: list[float] = []

    def denoiser(x: Tensor, t: float) -> Tensor:
        if not first:
            first.append(x.clone())
        times.append(t)
        return oracle.denoise(sde, x, t)

    def noise(x: Tensor) -> Tensor:
        raise DrewNoise

    view = ModelView(denoiser, "x0", sde)
    with torch.no_grad():
        x = sampler.sample(sde.prior_sampling(z), grid, view, noise)
    if not first:
        raise Unsupported("the sampler made no model evaluation")
    return Run(x, view.calls, first[0], times[0], times[-1], grid)


@dataclass
class Point:
    """The error at one N: RMS over samples and coordinates of sample − limit."""

    steps: int
    nfe: int | None
    nfe_nominal: int | None
    error: float | None
    note: str | None = None


@dataclass
class Measurement:
    """One sampler × SDE × schedule: its points and the order fitted to them."""

    points: list[Point] = field(default_factory=list)
    start: float | None = None
    """Time of the sampler's first evaluation (at the largest N run)."""
    end: float | None = None
    """Time of its last evaluation."""
    grid_start: float | None = None
    """t_0 of the grid it was given."""
    grid_end: float | None = None
    """t_{N−1}, the grid's last time before the data end."""
    stop: str | None = None
    """Why the sweep stopped before the largest N, if it did."""


def measure(
    sampler: Sampler,
    sde_of: Callable[[int], SDE],
    schedule: Schedule,
    steps: tuple[int, ...] = STEPS,
    oracle: GaussianOracle | None = None,
) -> Measurement:
    """The error of ``sampler`` at every N of ``steps`` from one x_T (seed 0, float64).

    ``sde_of(N)`` builds the SDE of an N-step run. An N the sampler cannot run (``Unsupported``)
    is a point with a note; the sweep stops at a non-finite error or one below ``ROUND_OFF``.
    """
    oracle = oracle or GaussianOracle()
    z = prior_noise(0, 0, SAMPLES, (oracle.dim,)).to(torch.float64)
    out = Measurement()
    for N in sorted(steps):
        sde = sde_of(N)
        try:
            run = run_once(sampler, sde, schedule, oracle, N, z)
        except Unsupported as exc:
            out.points.append(Point(N, None, sampler.nfe_nominal(N), None, exc.reason))
            continue
        limit = oracle.limit(sde, run.x_first, run.t_first, run.t_last)
        error = float((run.x - limit).pow(2).mean().sqrt())
        out.points.append(Point(N, run.nfe, sampler.nfe_nominal(N), error))
        out.start, out.end = run.t_first, run.t_last
        out.grid_start, out.grid_end = run.grid.t[0], run.grid.t[-2]
        if not math.isfinite(error):
            out.stop = f"non-finite sample at N = {N}"
            break
        if error < ROUND_OFF:
            out.stop = f"error below {ROUND_OFF:g} (round-off) at N = {N}"
            break
    return out


@dataclass(frozen=True)
class OrderFit:
    """The measured order and its interval (``None`` with a ``note`` when it cannot be fitted).

    Attributes:
        order: −slope of the least-squares line of log(error) against log(N) over ``steps``.
        low, high: the interval (see :func:`fit_order`).
        steps: the N of the fitted (asymptotic) range.
        local: the local slopes −Δlog(error)/Δlog(N) between consecutive fitted points.
    """

    order: float | None
    low: float | None = None
    high: float | None = None
    steps: tuple[int, ...] = ()
    local: tuple[float, ...] = ()
    note: str | None = None


def usable(points: list[Point]) -> list[Point]:
    """The points an order can be fitted to: finite errors at or above ``ROUND_OFF``."""
    return [p for p in points if p.error is not None and ROUND_OFF <= p.error < math.inf]


def fit_order(points: list[Point], confidence: float = 0.95) -> OrderFit:
    """Fit the order over the asymptotic range: the upper half of the usable N (at least 3).

    The order is the least-squares slope of log(error) against log(N) there. The errors are
    exact (no sampling noise), so what the regression's residuals measure is curvature: the
    local slopes still drifting towards their limit. The interval is the smallest range that
    holds (1) the regression's ``confidence`` interval (standard error × Student-t quantile,
    n − 2 degrees of freedom), (2) every local slope in the range and (3) their extrapolation
    to N → ∞ (least squares of the local slope against 1/N, at each pair's geometric mean N),
    so a slope still drifting widens the interval towards where it is heading.
    """
    from scipy import stats

    good = usable(points)
    if len(good) < 3:
        return OrderFit(None, note=f"{len(good)} usable points (at least 3 are needed)")
    window = good[len(good) - max(3, (len(good) + 1) // 2) :]
    x = np.log([p.steps for p in window])
    y = np.log([p.error for p in window])
    line = stats.linregress(x, y)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(window) - 2) * line.stderr)
    local = -np.diff(y) / np.diff(x)
    inverse_n = np.exp(-(x[:-1] + x[1:]) / 2)
    ends = [-line.slope - half, -line.slope + half, *local]
    if len(local) >= 2:
        ends.append(float(np.polyfit(inverse_n, local, 1)[1]))
    low, high = float(min(ends)), float(max(ends))
    note = None
    if high - low > UNSETTLED:
        note = "the local slopes have not settled: not yet asymptotic, or no single order"
    return OrderFit(
        float(-line.slope),
        low,
        high,
        tuple(p.steps for p in window),
        tuple(float(s) for s in local),
        note,
    )
