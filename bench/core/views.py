"""Model views: the score, the noise prediction ε, the denoiser D, v and the velocity.

With the perturbation kernel x_t = a(t)·x₀ + std(t)·z (Song et al. 2021, Eq. 29–33 and App. B),
the three parameterisations are one function seen three ways (Karras et al. 2022, Eq. 3 and
Table 1; Lu et al. 2022, Eq. 2.4):

    ε(x, t) = −std(t)·s(x, t),        D(x, t) = x̂₀ = (x + std(t)²·s(x, t)) / a(t).

Two more outputs of the same function: Salimans & Ho's (2022, §4 and App. D) v, and the
flow-matching velocity u (Lipman et al. 2022, Eq. 9; Liu et al. 2022, Eq. 1), the time derivative
of the interpolant at fixed (x₀, z), with a' = da/dt, std' = dstd/dt (:meth:`SDE.marginal_rates`):

    v = (a·ε − std·x̂₀)/r,  r = sqrt(a² + std²),        u = a'·x̂₀ + std'·ε.

On VP (a² + std² = 1) v is Salimans & Ho's a·ε − std·x₀. For any a, std, write
(a, std) = r·(cos φ, sin φ): then x/r = cos φ·x₀ + sin φ·z and v = d(x/r)/dφ, the same
definition (the rate along the arc) with the normalisation r that makes it the VP one. On the
flow SDE (a = 1 − t, std = t) u = z − x̂₀. Every output is linear in (x̂₀, ε̂) at fixed t,
``kind = α·x̂₀ + β·ε̂``, with (α, β) = (0, −1/std) for the score, (0, 1) for ε, (1, 0) for x₀,
(−std/r, a/r) for v and (a', std') for u, and so is x = a·x̂₀ + std·ε̂. So any output y converts to
any other as c₁·y + c₂·x, the 2×2 solve of (α_k, β_k) = c₁·(α_n, β_n) + c₂·(a, std), coefficients
in float64; it needs no division by a or std that the conversion does not itself need (the
velocity's score at a = 0 is −x).

A model declares what its network outputs natively (``score``, ``eps``, ``x0``, ``v`` or
``velocity``); a view converts from that. Every view call is one call of the model's function,
counted by the view: a conversion is never an extra evaluation, and no evaluation goes uncounted.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from torch import Tensor

from bench.core.sde import SDE

ModelFn = Callable[[Tensor, float], Tensor]
NATIVE = ("score", "eps", "x0", "v", "velocity")


class ModelView:
    """One model under one SDE, behind one NFE counter.

    Attributes:
        sde: the SDE whose marginals the model serves (a(t), std(t), λ(t)).
        native: what ``fn`` returns: ``score``, ``eps``, ``x0``, ``v`` or ``velocity``.
        calls: evaluations so far (batched calls; each is one NFE for every sample in the batch).
        scheduler_config: the model's own diffusers scheduler config
            (``ScoreModel.scheduler_config``), or ``None``.
    """

    def __init__(
        self,
        fn: ModelFn,
        native: str,
        sde: SDE,
        scheduler_config: dict[str, Any] | None = None,
    ) -> None:
        if native not in NATIVE:
            raise ValueError(f"a model's native output is one of {NATIVE}, got {native!r}")
        self.fn = fn
        self.native = native
        self.sde = sde
        self.scheduler_config = scheduler_config
        self.calls = 0
        views = {
            kind: self._call
            if kind == native
            else getattr(self, f"_{kind}_from_{native}", None) or self._converter(kind)
            for kind in NATIVE
        }
        self.score: ModelFn = views["score"]
        self.eps: ModelFn = views["eps"]
        self.denoise: ModelFn = views["x0"]
        self.v: ModelFn = views["v"]
        self.velocity: ModelFn = views["velocity"]

    def __call__(self, x: Tensor, t: float) -> Tensor:
        """The score s(x, t): a view is a score function too (for predictors and correctors)."""
        return self.score(x, t)

    def _call(self, x: Tensor, t: float) -> Tensor:
        """The model's own output: one counted evaluation (the view of its native kind)."""
        self.calls += 1
        return self.fn(x, t)

    # -- any output from any other (v and velocity) ------------------------------------------
    def coefficients(self, kind: str, t: float) -> tuple[float, float]:
        """(α, β) with ``kind``(x, t) = α·x̂₀ + β·ε̂ under this SDE at time t."""
        a, std = self.sde.marginal_coef(t)
        if kind == "score":
            return 0.0, -1.0 / std
        if kind == "eps":
            return 0.0, 1.0
        if kind == "x0":
            return 1.0, 0.0
        if kind == "v":
            r = math.hypot(a, std)
            return -std / r, a / r
        return self.sde.marginal_rates(t)

    def _converter(self, kind: str) -> ModelFn:
        """The ``kind`` view of a native output: one counted evaluation, then c₁·y + c₂·x."""

        def view(x: Tensor, t: float) -> Tensor:
            a, std = self.sde.marginal_coef(t)
            alpha_n, beta_n = self.coefficients(self.native, t)
            alpha_k, beta_k = self.coefficients(kind, t)
            det = alpha_n * std - beta_n * a
            c1 = (alpha_k * std - beta_k * a) / det
            c2 = (alpha_n * beta_k - beta_n * alpha_k) / det
            return self._call(x, t) * c1 + x * c2

        return view

    # -- from a score network ---------------------------------------------------------------

    def _eps_from_score(self, x: Tensor, t: float) -> Tensor:
        _, std = self.sde.marginal_coef(t)
        return self._call(x, t) * -std

    def _x0_from_score(self, x: Tensor, t: float) -> Tensor:
        a, std = self.sde.marginal_coef(t)
        return (x + self._call(x, t) * std**2) / a

    # -- from a noise-prediction network ----------------------------------------------------
    def _score_from_eps(self, x: Tensor, t: float) -> Tensor:
        _, std = self.sde.marginal_coef(t)
        return self._call(x, t) / -std

    def _x0_from_eps(self, x: Tensor, t: float) -> Tensor:
        a, std = self.sde.marginal_coef(t)
        return (x - self._call(x, t) * std) / a

    # -- from a denoiser (data prediction) --------------------------------------------------
    def _score_from_x0(self, x: Tensor, t: float) -> Tensor:
        a, std = self.sde.marginal_coef(t)
        return (self._call(x, t) * a - x) / std**2

    def _eps_from_x0(self, x: Tensor, t: float) -> Tensor:
        a, std = self.sde.marginal_coef(t)
        return (x - self._call(x, t) * a) / std
