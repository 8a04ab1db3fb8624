"""SA-Solver: stochastic Adams methods for diffusion SDEs (Xue et al. 2023, "SA-Solver: Stochastic
Adams Solver for Fast Sampling of Diffusion Models").

The SDE family dx = [f·x − ½(1 + τ²)·g²·∇log p] dt + τ·g dw̄ (τ = 0: the probability-flow ODE,
τ = 1: the reverse SDE) has, in data prediction and λ = log(a/std), the exact solution from λ_s
to λ_t, h = λ_t − λ_s:

    x_t = e^{−τ²h}·(std_t/std_s)·x_s + (1 + τ²)·std_t·e^{−τ²λ_t}·∫ e^{(1+τ²)λ}·D(λ) dλ
          + std_t·sqrt(1 − e^{−2τ²h})·z.

The SA-Predictor (an Adams–Bashforth step) puts the Lagrange interpolant of the latest p
outputs in the integral; the SA-Corrector (Adams–Moulton) redoes the step once the model has
been evaluated at the predicted point, interpolating through that new output too, with the same
z. The new output is the next predictor's, so correcting costs no evaluation: NFE = N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from bench.core.brownian import StepNoise, noise_kind
from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView

GAUSS_POINTS = 24
"""Gauss–Legendre nodes for ∫ e^{cu}·ℓ_j(u) du: exact to round-off for the steps of a grid."""


def adams_weights(lams: list[float], lam_s: float, lam_t: float, c: float) -> list[float]:
    """∫_{λ_s}^{λ_t} e^{c(λ − λ_t)}·ℓ_j(λ) dλ for the Lagrange basis ℓ_j on ``lams`` (newest
    first): the SA weights of the module docstring's integral before the factor (1 + τ²)·a_t."""
    u, w = np.polynomial.legendre.leggauss(GAUSS_POINTS)
    lam = lam_s + (u + 1) / 2 * (lam_t - lam_s)
    w = w * (lam_t - lam_s) / 2 * np.exp(c * (lam - lam_t))
    out = []
    for j, lam_j in enumerate(lams):
        basis = np.ones_like(lam)
        for m, lam_m in enumerate(lams):
            if m != j:
                basis *= (lam - lam_m) / (lam_j - lam_m)
        out.append(float(np.sum(w * basis)))
    return out


def second_order_term(h: float, c: float, corrector: bool, h_prev: float) -> float:
    """The official codes' O(h³) term added to (subtracted from) the weights of D_0 (D_1) at
    order 2, before the factor (1 + τ²)·a_t: (h²/2 − (ch − 1 + e^{−ch})/c²)/(λ_s − λ_{s−1}) for
    the predictor, h/2 − (ch − 1 + e^{−ch})/(c²h) for the corrector."""
    core = (c * h + math.expm1(-c * h)) / c**2
    return h / 2 - core / h if corrector else (h * h / 2 - core) / h_prev


class SASolver(Sampler):
    """SA-Solver (Xue et al. 2023; diffusers' ``SASolverScheduler``, data prediction).

    Step i from t_i to t_{i+1}, h = λ_{i+1} − λ_i, c = 1 + τ_i², D_i = D(x_i; t_i):

        corrector (i ≥ 1): x_i ← SA(x_{i−1}; D_i, D_{i−1}, …; order q_{i−1}; z_{i−1}),
        predictor:         x_{i+1} = SA(x_i; D_i, D_{i−1}, …; order p_i; z_i),
        SA(x_s; D…) = e^{−τ²h}·(std_t/std_s)·x_s + c·a_t·Σ_j b_j·D_j + std_t·sqrt(1 − e^{−2τ²h})·z,

    b_j from :func:`adams_weights` (plus :func:`second_order_term` at order 2). Orders: p_i =
    min(p, i + 1, N − i), q_i = min(q, i + 2, N − i + 1) (warm-up; diffusers'
    ``lower_order_final``); the step into the data end is x_N = a_N·D_{N−1} (λ = +∞, order 1,
    no noise). τ_i = ``tau`` where tau_start ≤ t_i/T ≤ tau_end, else 0 (diffusers' default
    τ(t) = 1 for timesteps 200–800 of 1000). NFE = N. The noise is the step's normalised
    Brownian increment by default (diffusers draws fresh noise per step: the same law on a fixed
    grid), or ``iid``.
    """

    name = "sa_solver"
    default_schedule = "uniform"

    @dataclass
    class Options:
        """``predictor_order`` p and ``corrector_order`` q (1–4; diffusers' defaults 2 and 2; q
        counts the new output), ``tau`` and its window [tau_start, tau_end] in t/T,
        ``lower_order_final`` and ``noise`` (``brownian`` or ``iid``)."""

        predictor_order: int = 2
        corrector_order: int = 2
        tau: float = 1.0
        tau_start: float = 0.2
        tau_end: float = 0.8
        lower_order_final: bool = True
        noise: str = "brownian"

        def __post_init__(self) -> None:
            for key in ("predictor_order", "corrector_order"):
                if getattr(self, key) not in (1, 2, 3, 4):
                    raise ValueError(f"{key} is 1, 2, 3 or 4, got {getattr(self, key)}")
            if not self.tau >= 0.0:
                raise ValueError(f"tau must be >= 0, got {self.tau}")
            if not 0.0 <= self.tau_start <= self.tau_end:
                window = f"{self.tau_start}, {self.tau_end}"
                raise ValueError(f"need 0 <= tau_start <= tau_end, got {window}")
            noise_kind(self.noise)

    def nfe_nominal(self, steps: int) -> int:
        """One evaluation per step, the corrector reusing the next predictor's: N."""
        return steps

    def orders(self, i: int, N: int) -> tuple[int, int]:
        """(p_i, q_i): the predictor's order of step i and the corrector's that redoes it."""
        opt = self.options
        p, q = min(opt.predictor_order, i + 1), min(opt.corrector_order, i + 2)
        if opt.lower_order_final:
            p, q = min(p, N - i), min(q, N - i + 1)
        return p, q

    def tau(self, t: float, T: float) -> float:
        opt = self.options
        return opt.tau if opt.tau_start <= t / T <= opt.tau_end else 0.0

    def step(
        self,
        x: Tensor,
        ds: list[Tensor],
        lams: list[float],
        j: int,
        grid: TimeGrid,
        tau: float,
        z: Tensor | None,
        corrector: bool,
    ) -> Tensor:
        """SA(x_j → x_{j+1}) with outputs ``ds`` at ``lams`` (newest first), see the class doc."""
        lam, a_t, std_t = grid.lambdas(), grid.alpha[j + 1], grid.sigma[j + 1]
        if std_t == 0.0:
            return ds[0] * a_t  # into the data end: x_N = a_N·D_{N−1}
        h, c = lam[j + 1] - lam[j], 1.0 + tau * tau
        b = adams_weights(lams, lam[j], lam[j + 1], c)
        if len(ds) == 2:
            extra = second_order_term(h, c, corrector, lam[j] - lam[j - 1] if j else 1.0)
            b = [b[0] + extra, b[1] - extra]
        out = x * (math.exp(-tau * tau * h) * std_t / grid.sigma[j])
        for d, w in zip(ds, b):
            out.add_(d, alpha=c * a_t * w)
        if z is not None:
            out.add_(z, alpha=std_t * math.sqrt(-math.expm1(-2 * tau * tau * h)))
        return out

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run SA-Solver from x_T at t_0 = T to the data end t_N = 0.

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.denoise`` is evaluated once per step.
            noise: the cell's noise: a standard normal per step with τ_i > 0 (not the last).
            callback: called after every step with ``{"i", "t", "x", "denoised"}`` (x: the
                predictor's x_{i+1}, before its correction).

        Returns:
            The sample at the data end.
        """
        T, N, lam = model.sde.T, grid.steps, grid.lambdas()
        noise_of = StepNoise(noise, T, self.options.noise)
        x, ds, last = x_T, [], None  # last: the previous step's (x_i, τ_i, z_i, q_i)
        for i, t, t_next in grid.pairs():
            denoised = model.denoise(x, t)
            ds = [denoised, *ds][:4]
            if last is not None:  # the SA-Corrector redoes step i − 1 through D_i
                x_prev, tau_prev, z_prev, q = last
                lams = lam[i : i - q : -1] if i - q >= 0 else lam[i::-1]
                x = self.step(x_prev, ds[:q], lams, i - 1, grid, tau_prev, z_prev, True)
            p, q = self.orders(i, N)
            tau = self.tau(t, T)
            z = noise_of.normal(t, t_next, x) if tau > 0.0 and grid.sigma[i + 1] > 0 else None
            last = (x, tau, z, q)
            lams = lam[i : i - p : -1] if i - p >= 0 else lam[i::-1]
            x = self.step(x, ds[:p], lams, i, grid, tau, z, False)
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised})
        return x


SAMPLERS = (SASolver,)
