"""Euler ancestral sampling in EDM's scaled variables: k-diffusion's ``sample_euler_ancestral``.

With x̃ = x/a and σ̃ = std/a = e^{−λ} (Karras et al. 2022, Eq. 4 with s(t) = a(t)), each step
goes from σ̃_i to σ̃_{i+1} as DDPM's ancestral step does (Ho et al. 2020, Eq. 6–7): an Euler step
of the probability-flow ODE down to σ_down < σ̃_{i+1}, then fresh noise of level σ_up back up to
σ̃_{i+1}, σ_down² + σ_up² = σ̃_{i+1}². η scales σ_up: η = 1 is the posterior's noise level (a
discretisation of the reverse SDE, Song et al. 2021, Eq. 6), η = 0 is the ``euler`` sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from bench.core.brownian import StepNoise, noise_kind
from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView


def ancestral_levels(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(σ_down, σ_up): σ_up = min(σ_{i+1}, η·σ_{i+1}·sqrt(1 − σ_{i+1}²/σ_i²)), σ_down =
    sqrt(σ_{i+1}² − σ_up²) (k-diffusion's ``get_ancestral_step``)."""
    up = min(sigma_next, eta * sigma_next * math.sqrt(1.0 - (sigma_next / sigma) ** 2))
    return math.sqrt(sigma_next**2 - up**2), up


class EulerAncestral(Sampler):
    """Euler ancestral sampling (k-diffusion's ``sample_euler_ancestral``, crowsonkb/k-diffusion).

    Step i (x̃ = x/a, σ̃ = std/a, D the denoiser, z a standard normal):

        d = (x̃_i − D(x_i; t_i))/σ̃_i,    (σ_down, σ_up) = ancestral_levels(σ̃_i, σ̃_{i+1}, η),
        x̃_{i+1} = x̃_i + (σ_down − σ̃_i)·d + s_noise·σ_up·z     (no noise into σ̃ = 0),

    x_{i+1} = a_{i+1}·x̃_{i+1}. One evaluation per step (NFE = N). ``noise``: k-diffusion draws
    fresh noise per step (``default_noise_sampler``); the default here is the step's normalised
    Brownian increment (W(t_{i+1}) − W(t_i))/sqrt(t_i − t_{i+1}), which has the same law on a
    fixed grid and follows one path at every N; ``iid`` is k-diffusion's sequential draws.
    """

    name = "euler_ancestral"
    aliases = ("euler_a",)
    default_schedule = "edm"

    @dataclass
    class Options:
        """``eta``: the noise scale η ≥ 0 (1: ancestral; 0: the ODE's Euler). ``s_noise``: the
        extra factor on σ_up. ``noise``: ``brownian`` or ``iid`` (see the class docstring)."""

        eta: float = 1.0
        s_noise: float = 1.0
        noise: str = "brownian"

        def __post_init__(self) -> None:
            if not self.eta >= 0.0:
                raise ValueError(f"eta must be >= 0, got {self.eta}")
            if not self.s_noise >= 0.0:
                raise ValueError(f"s_noise must be >= 0, got {self.s_noise}")
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
        """Run Euler ancestral from x_T at t_0 = T to the data end t_N = 0.

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.denoise`` is evaluated once per step.
            noise: the cell's noise: a standard normal per step but the last (when η > 0).
            callback: called after every step with ``{"i", "t", "x", "denoised", "sigma"}``.

        Returns:
            The sample at the data end.
        """
        opt = self.options
        z = StepNoise(noise, model.sde.T, opt.noise)
        x = x_T
        for i, t, t_next in grid.pairs():
            a, a_next = grid.alpha[i], grid.alpha[i + 1]
            sigma, sigma_next = grid.sigma[i] / a, grid.sigma[i + 1] / a_next
            down, up = ancestral_levels(sigma, sigma_next, opt.eta)
            denoised = model.denoise(x, t)
            x_tilde = x / a
            d = (x_tilde - denoised).div_(sigma)
            x_tilde.add_(d, alpha=down - sigma)  # Euler step of the flow down to σ_down
            if sigma_next > 0.0 and up > 0.0:
                x_tilde.add_(z.normal(t, t_next, x), alpha=opt.s_noise * up)
            x = x_tilde.mul_(a_next)
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised, "sigma": sigma})
        return x


SAMPLERS = (EulerAncestral,)
