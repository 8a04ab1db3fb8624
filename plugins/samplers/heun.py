"""EDM's Heun sampler (Karras et al. 2022, Alg. 1) with Alg. 2's stochastic churn.

The probability-flow ODE in the scaled variables x̃ = x/a, σ̃ = std/a = e^{−λ} is
dx̃/dσ̃ = (x̃ − D(x; t))/σ̃ (Eq. 4 with s(t) = a(t)); Heun's 2nd-order method integrates it over the
grid's σ̃_i, with an Euler step into σ̃_N = 0 at the data end. The official code is EDM's
``edm_sampler`` (NVlabs/edm); k-diffusion's ``sample_heun`` is the same method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.sde import SDE
from bench.core.views import ModelView
from bench.errors import Unsupported


class Heun(Sampler):
    """Heun's 2nd-order sampler (Karras et al. 2022, Alg. 1 and 2; EDM's ``edm_sampler``).

    Step i (σ̃ = std/a; x̃ = x/a; D the denoiser):

        γ_i = min(s_churn/N, √2 − 1) if s_tmin ≤ σ̃_i ≤ s_tmax else 0,    σ̂ = σ̃_i·(1 + γ_i),
        x̂ = x̃_i + sqrt(σ̂² − σ̃_i²)·s_noise·z                             (Alg. 2, lines 4–6),
        d = (x̂ − D(x̂; σ̂))/σ̂,   x̃_{i+1} = x̂ + (σ̃_{i+1} − σ̂)·d          (Euler),
        if σ̃_{i+1} ≠ 0:  d' = (x̃_{i+1} − D(x̃_{i+1}; σ̃_{i+1}))/σ̃_{i+1},
                         x̃_{i+1} = x̂ + (σ̃_{i+1} − σ̂)·(d + d')/2          (2nd-order correction).

    The raised level σ̂ is evaluated at the time t̂ = t(λ = −log σ̂) (``sde.t_of_log_snr``). As in
    Alg. 2 and EDM's code, σ̂ is not capped: with churn at t_0 = T the model is evaluated above
    σ̃(T) (EDM: above σ_max), at t̂ > T. That needs an SDE whose σ̃ → t map goes beyond T, i.e.
    whose ``t_of_log_snr`` returns a t̂ with σ̃(t̂) = σ̂ (VE, VP, sub-VP, edm and flow invert in closed
    form for every σ̃ > 0; the base class's bisection stays in [0, T]). Where it does not, the
    cell is unsupported unless ``clamp`` caps σ̂ at σ̃(T) (no churn at T itself, less noise where
    σ̃_i(1 + γ_i) > σ̃(T)); the rows record the option. The sampler sees the SDE, not the model:
    a network that cannot be evaluated above T (a discrete timestep table ending at T) needs
    ``clamp`` too. ``s_tmin`` and ``s_tmax`` are σ̃ levels. NFE = 2N − 1 with or without churn;
    s_churn = 0 is Alg. 1 exactly (no noise).
    """

    name = "heun"
    aliases = ("edm_heun",)
    default_schedule = "edm"

    @dataclass
    class Options:
        """Alg. 2's S_churn, S_tmin, S_tmax (σ̃ levels) and S_noise; s_churn = 0 is Alg. 1.

        ``clamp`` caps σ̂ at σ̃(T), for an SDE or model that cannot be evaluated above T (not in
        Alg. 2 or EDM's code; off by default)."""

        s_churn: float = 0.0
        s_tmin: float = 0.0
        s_tmax: float = math.inf
        s_noise: float = 1.0
        clamp: bool = False

        def __post_init__(self) -> None:
            if not self.s_churn >= 0.0:
                raise ValueError(f"s_churn must be >= 0, got {self.s_churn}")
            if not 0.0 <= self.s_tmin <= self.s_tmax:
                raise ValueError(f"need 0 <= s_tmin <= s_tmax, got {self.s_tmin}, {self.s_tmax}")
            if not self.s_noise >= 0.0:
                raise ValueError(f"s_noise must be >= 0, got {self.s_noise}")
            if not isinstance(self.clamp, bool):
                raise ValueError(f"clamp must be true or false, got {self.clamp!r}")

    def nfe_nominal(self, steps: int) -> int:
        """Two evaluations per step but the last (an Euler step into σ̃ = 0): 2N − 1."""
        return 2 * steps - 1

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run Alg. 2 (Alg. 1 when s_churn = 0) from x_T at t_0 = T to the data end t_N = 0.

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.denoise`` is evaluated twice per step (once in the
                last).
            noise: standard-normal z, drawn in the steps that churn (σ̂ > σ̃_i).
            callback: called after every step with
                ``{"i", "t", "x", "denoised", "sigma", "sigma_hat"}``.

        Returns:
            The sample at the data end.

        Raises:
            Unsupported: σ̂ > σ̃(T) on an SDE with no time there, and ``clamp`` is off.
        """
        opt, sde, N = self.options, model.sde, grid.steps
        a_T, std_T = sde.marginal_coef(sde.T)
        sigma_top = std_T / a_T  # σ̃(T), the highest level of the grid
        x = x_T
        for i, t, t_next in grid.pairs():
            a, a_next = grid.alpha[i], grid.alpha[i + 1]
            sigma, sigma_next = grid.sigma[i] / a, grid.sigma[i + 1] / a_next
            churn = opt.s_tmin <= sigma <= opt.s_tmax
            gamma = min(opt.s_churn / N, math.sqrt(2.0) - 1.0) if churn else 0.0
            sigma_hat = sigma * (1.0 + gamma)
            if opt.clamp:
                sigma_hat = max(min(sigma_hat, sigma_top), sigma)
            if sigma_hat > sigma:  # Alg. 2: raise the noise level to σ̂ at time t̂
                t_hat = time_of_level(sde, sigma_hat, sigma_top)
                a_hat = sde.marginal_coef(t_hat)[0]
                level = opt.s_noise * math.sqrt(sigma_hat**2 - sigma**2)
                x_hat = (x / a).add_(noise(x), alpha=level)  # x̂ (scaled)
                denoised = model.denoise(x_hat * a_hat, t_hat)
            else:
                sigma_hat = sigma
                x_hat = x / a
                denoised = model.denoise(x, t)
            d = (x_hat - denoised).div_(sigma_hat)
            x_next = x_hat + d * (sigma_next - sigma_hat)  # Euler step (Alg. 1, line 5)
            if sigma_next > 0.0:  # 2nd-order correction (Alg. 1, lines 7–8)
                denoised_next = model.denoise(x_next * a_next, t_next)
                d_next = (x_next - denoised_next).div_(sigma_next)
                x_next = x_hat.add_(d.add_(d_next), alpha=0.5 * (sigma_next - sigma_hat))
            x = x_next.mul_(a_next)
            if callback is not None:
                callback(
                    {
                        "i": i,
                        "t": t,
                        "x": x,
                        "denoised": denoised,
                        "sigma": sigma,
                        "sigma_hat": sigma_hat,
                    }
                )
        return x


def time_of_level(sde: SDE, sigma_hat: float, sigma_top: float) -> float:
    """The time t̂ with σ̃(t̂) = σ̂ (λ = −log σ̂); above σ̃(T) only where the SDE maps it back.

    Raises:
        Unsupported: σ̂ > σ̃(T) and ``sde.t_of_log_snr`` has no time for it (σ̃(t̂) ≠ σ̂).
    """
    if sigma_hat == sigma_top:
        return sde.T
    t_hat = sde.t_of_log_snr(-math.log(sigma_hat))
    if sigma_hat < sigma_top:
        return min(t_hat, sde.T)
    a_hat, std_hat = sde.marginal_coef(t_hat)
    if not (t_hat > sde.T and math.isclose(std_hat / a_hat, sigma_hat, rel_tol=1e-9)):
        raise Unsupported(
            f"heun: the churn raises the noise level to σ̂ = {sigma_hat:.6g} above "
            f"σ̃(T) = {sigma_top:.6g}, where the {sde.name} SDE has no time (its σ̃ → t map "
            "ends at T); set -o sampler.heun.clamp=true to cap σ̂ at σ̃(T)"
        )
    return t_hat


SAMPLERS = (Heun,)
