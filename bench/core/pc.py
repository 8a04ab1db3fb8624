"""The predictor–corrector sampler (Song et al. 2021, Alg. 1, in the reference code's order)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from bench.core.components import Corrector, Predictor
from bench.core.sde import SDE, ScoreFn

Callback = Callable[[dict[str, Any]], None]


@torch.no_grad()
def pc_sample(
    sde: SDE,
    predictor: Predictor,
    corrector: Corrector,
    x_T: Tensor,
    *,
    denoise: bool = True,
    callback: Callback | None = None,
) -> Tensor:
    """Run the PC sampler from the prior sample ``x_T`` and return the final sample.

    At each t of ``linspace(T, eps, N)`` the corrector runs first, then the predictor — the order
    of the reference code, which applies a corrector at t = T and ends on a predictor step at
    t = eps. With ``denoise`` (the paper's "noise removal") the result is the last step's
    ``x_mean``, i.e. that step without its fresh noise; with the ``none`` predictor the last
    ``x_mean`` is x itself, as in the reference.

    Args:
        sde: the forward SDE; its N sets the number of steps.
        predictor: the predictor, built on the same score function and SDE.
        corrector: the corrector, built on the same score function and SDE.
        x_T: the starting point, ``sde.prior_sampling(z)``.
        denoise: return ``x_mean`` (True) or the noisy ``x`` (False) of the last step.
        callback: called after every step with ``{"i", "t", "x", "x_mean"}``.
    """
    # Time grid.
    timesteps = sde.timesteps()
    # Initial sample from the prior.
    x = x_mean = x_T
    for i, t in enumerate(timesteps):
        # Corrector, then predictor, as in the reference code.
        x, x_mean = corrector.update(x, t)
        x, x_mean = predictor.update(x, t)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x_mean": x_mean})
    # Optional final denoising: drop the last step's noise.
    return x_mean if denoise else x


class CountingScore:
    """Wraps a score function and counts its calls: the NFE is measured, never computed."""

    def __init__(self, score_fn: ScoreFn) -> None:
        self.score_fn = score_fn
        self.calls = 0

    def __call__(self, x: Tensor, t: float) -> Tensor:
        self.calls += 1
        return self.score_fn(x, t)
