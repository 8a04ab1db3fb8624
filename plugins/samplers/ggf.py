"""Gotta Go Fast (Jolicoeur-Martineau et al. 2021, "Gotta Go Fast When Generating Data with
Score-Based Models", Alg. 1): an adaptive-step solver of the reverse SDE (Song et al.
2021, Eq. 6) with error control.

Each attempted step of size h from t to t − h takes an Euler–Maruyama step x' = x + K₁ and an
improved-Euler (stochastic Heun) step x'' = x + (K₁ + K₂)/2 on the same noise, K_k = −h·b(·) +
g·sqrt(h)·z with b = f − g²·s the reverse drift; their difference estimates the local error,
which a mixed absolute/relative tolerance scales; the step is accepted when the scaled norm
E ≤ 1, and the next h is min(t − eps, θ·h·E^{−r}). The official code is AlexiaJM/
score_sde_fast_sampling, ``AdaptivePredictor`` and ``pc_sampler_adaptive`` in ``sampling.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.core.brownian import StepNoise, noise_kind
from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView
from bench.errors import Unsupported

NORMS = ("l2_scaled", "l2", "linf")
MIN_STEP = 1e-12
"""A step below MIN_STEP·T means the tolerance cannot be met: the cell is unsupported."""


def scaled_norm(e: Tensor, kind: str) -> Tensor:
    """Per-sample norm of the scaled error: RMS (``l2_scaled``), ℓ2 or ℓ∞ over its elements."""
    flat = e.flatten(1)
    if kind == "linf":
        return flat.abs().amax(1)
    out = flat.pow(2).sum(1)
    return (out / flat.shape[1] if kind == "l2_scaled" else out).sqrt()


class GottaGoFast(Sampler):
    """Gotta Go Fast (Jolicoeur-Martineau et al. 2021, Alg. 1; AlexiaJM/score_sde_fast_sampling).

    From t = T until t = eps (the grid's last time), with x_prev = x at the start:

        K₁ = −h·b(x, t) + g(t)·ΔW,   K₂ = −h·b(x + K₁, t − h) + g(t − h)·ΔW,
        x' = x + K₁,  x'' = x + (K₁ + K₂)/2,
        δ = max(abstol, reltol·max(|x'|, |x_prev|)),  E = ‖(x'' − x')/δ‖,
        if E ≤ 1: x ← x'' (``extrapolation``; else x'), x_prev ← x', t ← t − h,
        h ← min(t − eps, θ·h·E^{−r}),

    then (``denoise``) the denoiser at eps. ΔW = sqrt(h)·z with a fresh z per attempted step,
    as the official code (``noise=iid``), or the Brownian increment W(t − h) − W(t)
    (``noise=brownian``: a rejected step is retried on the same path). Each attempt costs 2
    evaluations, accepted or not (counted). The official code adapts h per sample; the suite's
    model takes one t per call, so here the batch shares h and E is its largest sample's: the
    samples depend on the batch (the row says so). ``steps`` and the grid's inner times are
    unused.
    """

    name = "ggf"
    aliases = ("gotta_go_fast",)
    default_schedule = "uniform"
    adaptive = True
    uses_steps = False
    host_loop = True  # the accept/reject decision reads the error on the host
    batch_dependence = "step sizes shared by the batch (error control on its largest error)"

    @dataclass
    class Options:
        """The official defaults: ``abstol`` = ``reltol`` = 0.01, ``h_init`` 0.01 (in t),
        ``safety`` θ = 0.9, ``exp`` r = 0.9, ``norm`` (l2_scaled, l2, linf), ``error_use_prev``
        (δ from max(|x'|, |x_prev|); else |x'|), ``extrapolation`` (accept x''), ``denoise``
        (one last evaluation at eps); ``noise``: ``iid`` (official) or ``brownian``."""

        abstol: float = 0.01
        reltol: float = 0.01
        h_init: float = 0.01
        safety: float = 0.9
        exp: float = 0.9
        norm: str = "l2_scaled"
        error_use_prev: bool = True
        extrapolation: bool = True
        denoise: bool = True
        noise: str = "iid"

        def __post_init__(self) -> None:
            if not (self.abstol > 0.0 and self.reltol >= 0.0 and self.h_init > 0.0):
                raise ValueError("need abstol > 0, reltol >= 0 and h_init > 0")
            if not (0.0 < self.safety <= 1.0 and self.exp > 0.0):
                raise ValueError(f"need 0 < safety <= 1 and exp > 0, got {self.safety}, {self.exp}")
            if self.norm not in NORMS:
                raise ValueError(f"norm is one of {', '.join(NORMS)}, got {self.norm!r}")
            noise_kind(self.noise)

    def nfe_nominal(self, steps: int) -> None:
        """Chosen at run time by the error control: none."""
        return None

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Integrate the reverse SDE from x_T at T to eps with adaptive steps (class docstring).

        Args:
            x_T: the prior sample at t_0 = T.
            grid: only t_0 = T and its last time eps are used.
            model: the model's views; ``model.score`` twice per attempted step, then
                ``model.denoise`` once at eps (``denoise``).
            noise: the cell's noise: one standard normal per attempted step (``iid``).
            callback: called after every accepted step with ``{"i", "t", "x", "h"}``.

        Returns:
            The sample at the data end.
        """
        opt, sde = self.options, model.sde
        eps = grid.t[-2] if grid.steps > 1 else sde.eps
        dw = StepNoise(noise, sde.T, opt.noise)
        x, x_prev, t, h, i = x_T, x_T, grid.t[0], min(opt.h_init, grid.t[0] - eps), 0
        while t - eps > 1e-6:
            if h < MIN_STEP * sde.T:
                raise Unsupported(f"ggf: the step size fell below {MIN_STEP:g}·T at t = {t:.6g}")
            w = dw.increment(t, t - h, x)
            k1 = self.increment(model, x, t, h, w)
            x_em = x + k1
            x_heun = x + (k1 + self.increment(model, x_em, t - h, h, w)) / 2
            x_new, x_check = (x_heun, x_em) if opt.extrapolation else (x_em, x_heun)
            err = self.error(x_heun - x_em, x_check, x_prev)
            if err <= 1.0:
                x, x_prev = x_new, x_check
                t, i = t - h, i + 1
                if callback is not None:
                    callback({"i": i, "t": t, "x": x, "h": h})
            h = min(t - eps, opt.safety * h * err**-opt.exp if err > 0 else t - eps)
        return model.denoise(x, eps) if opt.denoise else x

    def increment(self, model: ModelView, x: Tensor, t: float, h: float, w: Tensor) -> Tensor:
        """K = −h·b(x, t) + g(t)·ΔW, b = f − g²·s the reverse drift (one evaluation)."""
        f, g = model.sde.sde(x, t)
        return (f - model.score(x, t) * g**2).mul_(-h).add_(w, alpha=g)

    def error(self, e: Tensor, x_new: Tensor, x_prev: Tensor) -> float:
        """E: the batch's largest scaled error norm (one host read per attempted step)."""
        opt = self.options
        ref = torch.maximum(x_new.abs(), x_prev.abs()) if opt.error_use_prev else x_new.abs()
        scale = (ref * opt.reltol).clamp_(min=opt.abstol)
        return float(scaled_norm(e / scale, opt.norm).max())


SAMPLERS = (GottaGoFast,)
