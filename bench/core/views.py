"""Model views: the score, the noise prediction ε and the denoiser D from any score model.

With the perturbation kernel x_t = a(t)·x₀ + std(t)·z (Song et al. 2021, Eq. 29–33 and App. B),
the three parameterisations are one function seen three ways (Karras et al. 2022, Eq. 3 and
Table 1; Lu et al. 2022, Eq. 2.4):

    ε(x, t) = −std(t)·s(x, t),        D(x, t) = x̂₀ = (x + std(t)²·s(x, t)) / a(t).

A model declares what its network outputs natively (``score``, ``eps`` or ``x0``); a view
converts from that. Every view call is one call of the model's function, counted by the view:
a conversion is never an extra evaluation, and no evaluation goes uncounted.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from bench.core.sde import SDE

ModelFn = Callable[[Tensor, float], Tensor]
NATIVE = ("score", "eps", "x0")


class ModelView:
    """One model under one SDE, behind one NFE counter.

    Attributes:
        sde: the SDE whose marginals the model serves (a(t), std(t), λ(t)).
        native: what ``fn`` returns: ``score``, ``eps`` or ``x0``.
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
            kind: self._call if kind == native else getattr(self, f"_{kind}_from_{native}")
            for kind in NATIVE
        }
        self.score: ModelFn = views["score"]
        self.eps: ModelFn = views["eps"]
        self.denoise: ModelFn = views["x0"]

    def __call__(self, x: Tensor, t: float) -> Tensor:
        """The score s(x, t): a view is a score function too (for predictors and correctors)."""
        return self.score(x, t)

    def _call(self, x: Tensor, t: float) -> Tensor:
        """The model's own output: one counted evaluation (the view of its native kind)."""
        self.calls += 1
        return self.fn(x, t)

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
