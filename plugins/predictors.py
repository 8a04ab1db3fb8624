"""The paper's predictors (Song et al. 2021, §4.2 and App. E–F)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

import bench
from bench.core.pc import Predictor
from bench.core.sde import SDE
from bench.errors import Unsupported


class EulerMaruyama(Predictor):
    """Euler–Maruyama step for the reverse-time SDE (Eq. 6); dt = −1/N on the paper's grid."""

    name = "euler_maruyama"
    aliases = ("euler", "em")

    def update(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, Tensor]:
        dt = self.sde.step_dt(t, t_next)
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = torch.add(x, drift, alpha=dt)
        if diffusion == 0.0:  # probability flow: no noise to add
            return x_mean, x_mean
        return torch.add(x_mean, self.noise(x), alpha=diffusion * math.sqrt(-dt)), x_mean


class ReverseDiffusion(Predictor):
    """Reverse-diffusion step: the forward discretisation run backwards (App. E, Eq. 46)."""

    name = "reverse_diffusion"
    aliases = ("rd",)

    def update(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, Tensor]:
        f, G = self.rsde.discretize(x, t, t_next)
        x_mean = x - f
        if G == 0.0:  # probability flow (App. D.3): deterministic
            return x_mean, x_mean
        return torch.add(x_mean, self.noise(x), alpha=G), x_mean


class AncestralSampling(Predictor):
    """Ancestral sampling of the discrete chain: SMLD (Eq. 47) or DDPM (Eq. 4)."""

    name = "ancestral_sampling"
    aliases = ("ancestral",)

    @classmethod
    def supports(cls, sde: SDE, probability_flow: bool) -> None:
        if probability_flow:
            raise Unsupported("ancestral sampling has no probability-flow variant")
        # Raises Unsupported for SDEs without the chain (and, on the paper grid, N <= beta_max).
        sde.ancestral_coefficients(sde.T, None if sde.discrete else 0.0)

    def update(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, Tensor]:
        a, b, c = self.sde.ancestral_coefficients(t, t_next)
        x_mean = torch.add(x if a == 1.0 else a * x, self.score_fn(x, t), alpha=b)
        if c == 0.0:
            return x_mean, x_mean
        return torch.add(x_mean, self.noise(x), alpha=c), x_mean


class NonePredictor(Predictor):
    """No predictor: returns x unchanged (corrector-only samplers, e.g. NCSN's ALD)."""

    name = "none"
    nfe_per_step = 0

    def update(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, Tensor]:
        return x, x


@bench.hookimpl
def register_predictors(register):
    register(EulerMaruyama)
    register(ReverseDiffusion)
    register(AncestralSampling)
    register(NonePredictor)
