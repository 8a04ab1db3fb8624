"""The paper's correctors: Langevin (Alg. 4/5) and annealed Langevin dynamics (NCSN)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

import bench
from bench.core.pc import Corrector


def batch_mean_norm(v: Tensor) -> Tensor:
    """Mean over the batch of the per-sample L2 norms (a 0-d tensor on v's device)."""
    return v.reshape(v.shape[0], -1).norm(dim=-1).mean()


class Langevin(Corrector):
    """Langevin corrector, step ε = 2α(r‖z‖/‖s‖)² from batch-mean norms (Alg. 4 and 5).

    The step size is a 0-d tensor that stays on the device: no host synchronisation per step.
    """

    name = "langevin"
    batch_dependence = "Langevin step size from batch-mean norms (Alg. 4/5)"

    def update(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, Tensor]:
        alpha = self.sde.langevin_alpha(t, t_next)
        x_mean = x
        for _ in range(self.n_steps):
            grad = self.score_fn(x, t)
            z = self.noise(x)
            ratio = batch_mean_norm(z) / batch_mean_norm(grad)
            step = (2 * alpha * self.snr**2) * ratio.square()
            x_mean = torch.addcmul(x, step, grad)
            x = torch.addcmul(x_mean, (2 * step).sqrt(), z)
        return x, x_mean


class AnnealedLangevin(Corrector):
    """Annealed Langevin dynamics, step ε = 2α(r·std(t))² (NCSN/NCSNv2 schedule)."""

    name = "ald"
    aliases = ("annealed_langevin",)

    def update(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, Tensor]:
        alpha = self.sde.langevin_alpha(t, t_next)
        _, std = self.sde.marginal_coef(t)
        step = 2 * alpha * (self.snr * std) ** 2
        noise_scale = math.sqrt(2 * step)
        x_mean = x
        for _ in range(self.n_steps):
            grad = self.score_fn(x, t)
            x_mean = torch.add(x, grad, alpha=step)
            x = torch.add(x_mean, self.noise(x), alpha=noise_scale)
        return x, x_mean


class NoneCorrector(Corrector):
    """No corrector: returns x unchanged (predictor-only samplers)."""

    name = "none"
    nfe_per_step = 0

    def update(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, Tensor]:
        return x, x


@bench.hookimpl
def register_correctors(register):
    register(Langevin)
    register(AnnealedLangevin)
    register(NoneCorrector)
