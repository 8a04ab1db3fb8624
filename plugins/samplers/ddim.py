"""DDIM: denoising diffusion implicit models (Song, Meng & Ermon 2021), for any (a, std) kernel.

The paper's update (Eq. 12) is written for ᾱ_t with x_t = sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·ε; here it is
written for the general kernel x_t = a(t)·x₀ + std(t)·z, so it runs on VE, VP and sub-VP alike:
replace sqrt(ᾱ) by a and sqrt(1 − ᾱ) by std. With η = 0 it is the probability-flow ODE's Euler
step in x̃ = x/a, σ̃ = std/a (the same map as the ``euler`` sampler); η = 1 is DDPM's ancestral
noise level (Eq. 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView


class DDIM(Sampler):
    """DDIM (Song, Meng & Ermon 2021, Eq. 12 and 16) in (a, std) form, with noise weight η.

    Step i from t_i to t_{i+1} (the data end t_N has a = 1, std = 0), with ε̂ = ε(x_i; t_i):

        x̂₀ = (x_i − std_i·ε̂)/a_i,
        c_i = η·std_{i+1}·sqrt(1 − (σ̃_{i+1}/σ̃_i)²),         σ̃ = std/a,
        x_{i+1} = a_{i+1}·x̂₀ + sqrt(std_{i+1}² − c_i²)·ε̂ + c_i·z.

    c_i is Eq. 16's σ_t(η) = η·sqrt((1 − ᾱ_{t−1})/(1 − ᾱ_t))·sqrt(1 − ᾱ_t/ᾱ_{t−1}) for a general
    kernel (the posterior std of x_{i+1} given x_i and x₀, times η). The last step lands on x̂₀.
    One evaluation per step (NFE = N). The default schedule is ``quadratic``: DDIM's own
    time-step selection for CIFAR-10 (App. D.2), denser near the data, where the ODE is stiffest.
    The official code is DDIM's repository (ermongroup/ddim, ``generalized_steps``), whose last
    step also lands on x̂₀ (its ᾱ table is extended by ᾱ = 1 below the first timestep).
    """

    name = "ddim"
    default_schedule = "quadratic"

    @dataclass
    class Options:
        """``eta``: the noise weight η ∈ [0, 1] (0: deterministic DDIM, 1: DDPM-like)."""

        eta: float = 0.0

        def __post_init__(self) -> None:
            if not 0.0 <= self.eta <= 1.0:
                raise ValueError(f"eta must lie in [0, 1], got {self.eta}")

    def nfe_nominal(self, steps: int) -> int:
        """One noise-prediction evaluation per step: N."""
        return steps

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run DDIM from x_T at t_0 = T to the data end t_N = 0 (see the class docstring).

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.eps`` is evaluated once per step.
            noise: standard-normal z, drawn once per step where c_i > 0 (η > 0, not the last).
            callback: called after every step with ``{"i", "t", "x", "denoised"}``.

        Returns:
            The sample at the data end.
        """
        eta = self.options.eta
        x = x_T
        for i, t, _ in grid.pairs():
            a, std = grid.alpha[i], grid.sigma[i]
            a_next, std_next = grid.alpha[i + 1], grid.sigma[i + 1]
            ratio = (std_next * a) / (std * a_next)  # σ̃_{i+1}/σ̃_i < 1
            c = eta * std_next * math.sqrt(max(0.0, 1.0 - ratio * ratio))  # Eq. 16's σ_t(η)
            direction = std_next * math.sqrt(max(0.0, 1.0 - eta * eta * (1.0 - ratio * ratio)))
            eps = model.eps(x, t)
            denoised = (x - std * eps).div_(a)  # "predicted x₀" of Eq. 12
            x = (denoised * a_next).add_(eps, alpha=direction)  # + "direction pointing to x_t"
            if c > 0.0:
                x.add_(noise(x), alpha=c)  # + "random noise"
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised})
        return x


SAMPLERS = (DDIM,)
