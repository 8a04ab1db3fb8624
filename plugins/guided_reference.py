"""What a conditional oracle's samples are measured against, and each sample's error to it.

* At guidance scale s = 1 the conditional data distribution is closed form: the exact-sample
  metrics (:mod:`.metrics`) draw their reference set and floors from p_0(x | c_i), with the
  cell's own labels c_i (the same class composition as the sampler's samples).
* At s ≠ 1 the guided distribution has no closed form. Its reference is the probability-flow
  solution of the guided model (Song et al. 2021, Eq. 13, with the guided score): from x_T at
  t = T to the SDE's eps with an 8th-order Runge–Kutta method (scipy's DOP853, Hairer et al.)
  at relative and absolute tolerance :data:`TOLERANCE` in float64, then the guided denoiser
  D̃(x, eps) — the N → ∞ limit of a sampler whose N steps end at σ = 0 with a last evaluation at
  eps (the suite's convention). Reference sets and floors are such solutions from other seeds'
  x_T with the cell's labels.
* ``ode_err`` is each sample's distance to that solution from its own x_T and label: the
  sampler's error to the exact probability-flow map, at any s (and for an unconditional oracle
  too). A deterministic sampler converges to 0; a stochastic one converges in distribution
  only, so for it ``ode_err`` stays of the order of the data's spread.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor

from bench.core.guidance import GuidedFn
from bench.core.metric import Metric
from bench.core.noise import prior_noise
from bench.core.sde import SDE
from bench.core.views import ModelView
from bench.errors import Unsupported

TOLERANCE = 1e-10
"""DOP853's rtol and atol: the reference's error is about this, far below any sampler's."""


def model_fn(model: Any, sde: SDE, conditioning: Any, labels: Tensor | None) -> Any:
    """The model's native function in float64: guided with ``labels``, or unconditional."""
    exact = copy.copy(model)
    exact.dtype, exact.device = torch.float64, torch.device("cpu")
    if conditioning is None:
        return exact.native_fn(sde)
    guided = GuidedFn(exact.conditional_fn(sde), conditioning.guidance, sde)
    guided.labels = labels
    return guided


def flow_solution(
    model: Any, sde: SDE, conditioning: Any, x_T: Tensor, labels: Tensor | None
) -> Tensor:
    """D̃(x(eps), eps) with x(eps) the probability-flow solution from x_T at T (float64, CPU)."""
    from scipy.integrate import solve_ivp  # scipy only when a reference is computed

    view = ModelView(model_fn(model, sde, conditioning, labels), model.native, sde)
    flow = sde.reverse(view.score, probability_flow=True)
    shape = x_T.shape

    def drift(t: float, y: Any) -> Any:
        x = torch.from_numpy(y).view(shape)
        return flow.sde(x, float(t))[0].reshape(-1).numpy()

    y0 = x_T.to("cpu", torch.float64).reshape(-1).numpy().copy()
    solution = solve_ivp(
        drift,
        (sde.T, sde.eps),
        y0,
        method="DOP853",
        t_eval=[sde.eps],
        rtol=TOLERANCE,
        atol=TOLERANCE,
    )
    if solution.status != 0:
        raise RuntimeError(f"reference probability-flow solve failed: {solution.message}")
    x_eps = torch.from_numpy(solution.y[:, -1].copy()).view(shape)
    return view.denoise(x_eps, sde.eps)


_solutions: dict[tuple[Any, ...], Tensor] = {}


def solution_from_seed(
    model: Any, sde: SDE, conditioning: Any, seed: int, start: int, size: int
) -> Tensor:
    """The reference solution of samples start..start+size of ``seed``: their x_T (the cell's
    own prior noise) and the cell's labels of the same samples (cached: every sampler of a grid
    is measured against the same solutions)."""
    cond = None if conditioning is None else conditioning.key()
    key = (id(model), type(sde).__name__, repr(sde.describe()), cond, seed, start, size)
    hit = _solutions.get(key)
    if hit is None:
        z = prior_noise(seed, start, size, model.data_shape).to(torch.float64)
        labels = None if conditioning is None else conditioning.labels(start, size)
        hit = flow_solution(model, sde, conditioning, sde.prior_sampling(z), labels)
        if len(_solutions) >= 64:  # bounded: a process sees a few models, seeds and batches
            _solutions.clear()
        _solutions[key] = hit
    return hit


def target_samples(model: Any, context: Any, n: int, seed: int) -> Tensor:
    """n samples of what a conditional cell's samples should follow, flattened (n, D) float64:
    exact conditional samples at s = 1, reference solutions from ``seed``'s x_T otherwise."""
    conditioning = context.conditioning
    if conditioning.guided:
        return solution_from_seed(model, context.sde, conditioning, seed, 0, n).reshape(n, -1)
    generator = torch.Generator().manual_seed(seed)
    samples = model.sample_conditional(conditioning.labels(0, n), generator)
    return samples.reshape(n, -1).to(torch.float64)


class ODEError(Metric):
    """RMS distance of each sample to the probability-flow solution from its own x_T and label."""

    name = "ode_err"

    @classmethod
    def supports(cls, model: Any) -> None:
        if not model.exact:
            raise Unsupported("metric 'ode_err' needs an exact-score model (a Gaussian mixture)")

    def __init__(self, model: Any, n: int, **kwargs: Any) -> None:
        super().__init__(model, n, **kwargs)
        self.total, self.count = 0.0, 0

    def update(self, samples: Tensor) -> None:
        raise RuntimeError("ode_err needs each batch's first sample index (update_at)")

    def update_at(self, samples: Tensor, start: int) -> None:
        context = self.context
        if context is None or context.sde is None or context.seed is None:
            raise RuntimeError("ode_err needs the cell's SDE and seed (its metric context)")
        size = samples.shape[0]
        ref = solution_from_seed(
            self.model, context.sde, context.conditioning, context.seed, start, size
        )
        diff = samples.to("cpu", torch.float64).reshape(size, -1) - ref.reshape(size, -1)
        self.total += float(diff.square().sum())
        self.count += size

    def state(self) -> tuple[float, int]:
        return self.total, self.count

    def merge(self, states: list[tuple[float, int]]) -> None:
        self.total = sum(total for total, _ in states)
        self.count = sum(count for _, count in states)

    def compute(self) -> dict[str, float]:
        return {"ode_err": math.sqrt(self.total / self.count) if self.count else math.nan}
