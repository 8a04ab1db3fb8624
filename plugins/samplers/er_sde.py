"""ER-SDE-Solver (Cui et al. 2023, "Elucidating the solution space of extended reverse-time SDE
for diffusion models").

In EDM's scaled variables x̃ = x/a, σ̃ = std/a, the extended reverse-time SDE family has a noise
scale function φ(σ) (φ(σ) = σ is the probability-flow ODE, φ(σ) = σ² the reverse SDE of Song et
al. 2021, Eq. 6). Its exact solution from σ_i to σ_{i+1}, r = φ(σ_{i+1})/φ(σ_i), is

    x̃_{i+1} = r·x̃_i + φ(σ_{i+1})·∫_{σ_{i+1}}^{σ_i} (φ'(σ)/φ(σ)²)·D(σ) dσ + sqrt(σ_{i+1}² − σ_i²·r²)·z
             = r·x̃_i + (1 − r)·D_i + [terms of D's Taylor expansion in σ] + sqrt(…)·z,

and the k-th order solver keeps k terms of D's Taylor expansion in σ, with
the integrals S₁ = ∫ dσ/φ(σ) and S₂ = ∫ (σ − σ_i)/φ(σ) dσ over [σ_{i+1}, σ_i] and the
derivatives estimated by divided differences of past outputs. The official code is
QinpengCui/ER-SDE-Solver, ``ER_SDE_Solver.ve_xstart_{1,2,3}_order*`` (its EDM example) and
``vp_*_order*``, which compute S₁, S₂ with a 100-point left Riemann sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch import Tensor

from bench.core.brownian import StepNoise, noise_kind
from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView

SCALES: dict[str, Callable[[float], float]] = {
    "ode": lambda s: s,
    "sde": lambda s: s * s,
    "sde_1": lambda s: s * (math.exp(-1.0 / s) + 10.0),
    "sde_2": lambda s: s**1.5,
    "sde_3": lambda s: s**2.5,
    "sde_4": lambda s: s**0.9 * math.log10(1.0 + 100.0 * s**1.5),
    "sde_5": lambda s: s * (math.exp(s**0.3) + 10.0),
}
"""The official code's noise scale functions φ(σ) (``customized_func`` types 1–7; sde_1 at its
default η = 0)."""


def integrals(fn: Callable[[float], float], lo: float, hi: float, rule: str, n: int) -> tuple:
    """(S₁, S₂) = (∫ dσ/φ, ∫ (σ − hi)/φ dσ) over [lo, hi]: the official left Riemann sum of n
    points from lo (``riemann``) or n-point Gauss–Legendre (``gauss``)."""
    if rule == "riemann":
        nodes, w = lo + np.arange(n) / n * (hi - lo), np.full(n, (hi - lo) / n)
    else:
        u, w = np.polynomial.legendre.leggauss(n)
        nodes, w = lo + (u + 1) / 2 * (hi - lo), w * (hi - lo) / 2
    inv = np.array([1.0 / fn(s) for s in nodes])
    return float(np.sum(w * inv)), float(np.sum(w * inv * (nodes - hi)))


class ERSDESolver(Sampler):
    """ER-SDE-Solver-k (Cui et al. 2023; QinpengCui/ER-SDE-Solver), k = ``order``.

    Step i (x̃ = x/a, σ = σ̃, φ the noise scale, D_i = D(x_i; t_i), (S₁, S₂) from
    :func:`integrals`):

        r = φ(σ_{i+1})/φ(σ_i),
        x̃_{i+1} = r·x̃_i + (1 − r)·D_i + (σ_{i+1} − σ_i + S₁·φ(σ_{i+1}))·D'_i
                  + ((σ_{i+1} − σ_i)²/2 + S₂·φ(σ_{i+1}))·D''_i + sqrt(σ_{i+1}² − σ_i²·r²)·z,

    D'_i = (D_i − D_{i−1})/(σ_i − σ_{i−1}), D''_i = 2(D'_i − D'_{i−1})/(σ_i − σ_{i−2}); order 1
    drops both, order 2 the last; the first steps and the step into σ = 0 are of lower order as
    in the official code. As there, a noise variance below ``clip`` (1e-6, in σ̃² units) is
    taken as 0. NFE = N. The noise is the step's normalised Brownian increment by default (the
    official code draws fresh noise per step: the same law on a fixed grid), or ``iid``.
    """

    name = "er_sde"
    aliases = ("er_sde_solver",)
    default_schedule = "edm"

    @dataclass
    class Options:
        """``order`` (1–3, the official default 3), ``scale`` (φ: ode, sde, sde_1 … sde_5; the
        official default sde_5 = σ·(e^{σ^0.3} + 10)), ``quadrature`` for S₁, S₂ (``riemann``,
        the official rule, or ``gauss``: Gauss–Legendre, the suite's option) with
        ``quad_points`` nodes, ``clip`` and ``noise`` (``brownian`` or ``iid``)."""

        order: int = 3
        scale: str = "sde_5"
        quadrature: str = "riemann"
        quad_points: int = 100
        clip: float = 1e-6
        noise: str = "brownian"

        def __post_init__(self) -> None:
            if self.order not in (1, 2, 3):
                raise ValueError(f"order is 1, 2 or 3, got {self.order}")
            if self.scale not in SCALES:
                raise ValueError(f"scale is one of {', '.join(SCALES)}, got {self.scale!r}")
            if self.quadrature not in ("riemann", "gauss"):
                raise ValueError(f"quadrature is riemann or gauss, got {self.quadrature!r}")
            if not self.quad_points >= 1:
                raise ValueError(f"quad_points must be >= 1, got {self.quad_points}")
            if not self.clip >= 0.0:
                raise ValueError(f"clip must be >= 0, got {self.clip}")
            noise_kind(self.noise)

    def nfe_nominal(self, steps: int) -> int:
        """One denoiser evaluation per step: N."""
        return steps

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run ER-SDE-Solver-k from x_T at t_0 = T to the data end t_N = 0.

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.denoise`` is evaluated once per step.
            noise: the cell's noise: a standard normal per step with noise.
            callback: called after every step with ``{"i", "t", "x", "denoised", "sigma"}``.

        Returns:
            The sample at the data end.
        """
        opt, fn = self.options, SCALES[self.options.scale]
        z = StepNoise(noise, model.sde.T, opt.noise)
        s = [sd / a for a, sd in zip(grid.alpha, grid.sigma)]  # σ̃_0 … σ̃_N = 0
        x, ds, d1s = x_T, [], []  # the latest outputs D_i, … and first differences D'_i, …
        for i, t, t_next in grid.pairs():
            denoised = model.denoise(x, t)
            ds = [denoised, *ds][:2]
            x_tilde = x / grid.alpha[i]
            r = fn(s[i + 1]) / fn(s[i]) if s[i + 1] > 0.0 else 0.0
            out = x_tilde.mul_(r).add_(denoised, alpha=1.0 - r)
            k = min(opt.order, i + 1) if s[i + 1] > 0.0 else 1
            if k >= 2:
                S1, S2 = integrals(fn, s[i + 1], s[i], opt.quadrature, opt.quad_points)
                d1 = (ds[0] - ds[1]) / (s[i] - s[i - 1])
                out.add_(d1, alpha=s[i + 1] - s[i] + S1 * fn(s[i + 1]))
                if k == 3:
                    d2 = (d1 - d1s[0]) * (2.0 / (s[i] - s[i - 2]))
                    out.add_(d2, alpha=(s[i + 1] - s[i]) ** 2 / 2 + S2 * fn(s[i + 1]))
                d1s = [d1]
            var = s[i + 1] ** 2 - (s[i] * r) ** 2
            if abs(var) >= opt.clip and var > 0.0:
                out.add_(z.normal(t, t_next, x), alpha=math.sqrt(var))
            x = out.mul_(grid.alpha[i + 1])
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised, "sigma": s[i]})
        return x


SAMPLERS = (ERSDESolver,)
