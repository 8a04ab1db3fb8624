"""Euler's method on the probability-flow ODE in EDM's scaled variables (Karras et al. 2022).

With the perturbation kernel x_t = a(t)·x₀ + std(t)·z, the scaled state x̃ = x/a and noise level
σ̃ = std/a = e^{−λ} turn the probability-flow ODE (Song et al. 2021, Eq. 13) into EDM's Eq. 4
with s(t) = a(t): dx̃/dσ̃ = (x̃ − D(x; t))/σ̃, D the denoiser. One Euler step per grid interval,
the last one into σ̃ = 0 (x̃ ← D) — k-diffusion's ``sample_euler`` and diffusers'
``EulerDiscreteScheduler``.
"""

from __future__ import annotations

from torch import Tensor

from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView


class Euler(Sampler):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Eq. 4).

    EDM's Alg. 1 without its 2nd-order correction. Step i, from σ̃_i = std_i/a_i to σ̃_{i+1} (σ̃_N = 0 at the data end):

        x̃_i = x_i/a_i,  d_i = (x̃_i − D(x_i; t_i))/σ̃_i,  x_{i+1} = a_{i+1}·(x̃_i + (σ̃_{i+1} − σ̃_i)·d_i).

    One evaluation per step (NFE = N); deterministic, first order.
    """

    name = "euler"
    aliases = ("euler_ode",)
    default_schedule = "edm"

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
        """Integrate from x_T at t_0 = T to the data end t_N = 0 (see the class docstring).

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.denoise`` is evaluated once per step.
            noise: unused (the method is deterministic).
            callback: called after every step with ``{"i", "t", "x", "denoised", "sigma"}``.

        Returns:
            The sample at the data end.
        """
        x = x_T
        for i, t, _ in grid.pairs():
            a, a_next = grid.alpha[i], grid.alpha[i + 1]
            sigma, sigma_next = grid.sigma[i] / a, grid.sigma[i + 1] / a_next  # σ̃ = std/a
            denoised = model.denoise(x, t)
            x_tilde = x / a
            d = (x_tilde - denoised).div_(sigma)  # dx̃/dσ̃ (Eq. 4 with s = a)
            x = x_tilde.add_(d, alpha=sigma_next - sigma).mul_(a_next)
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised, "sigma": sigma})
        return x


SAMPLERS = (Euler,)
