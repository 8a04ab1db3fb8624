"""DPM-Solver++(2M) SDE (Lu et al. 2022, "DPM-Solver++"; k-diffusion's ``sample_dpmpp_2m_sde``).

The reverse SDE in data prediction, with the noise weighted by η (η = 1: the reverse SDE of Song
et al. 2021, Eq. 6; η = 0: the probability-flow ODE), has the exact solution from t_i to t_{i+1}
(h = λ_{i+1} − λ_i, λ = log(a/std))

    x_{i+1} = (std_{i+1}/std_i)·e^{−ηh}·x_i + a_{i+1}·∫ (1 + η)·e^{−(1+η)(λ_{i+1} − λ)}·D(λ) dλ
              + std_{i+1}·sqrt(1 − e^{−2ηh})·z,

and the 2M method takes D(λ) from the two latest outputs, as DPM-Solver++(2M) does for the ODE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from bench.core.brownian import StepNoise, noise_kind
from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView


@dataclass
class SDEOptions:
    """``eta``: the noise weight η ≥ 0 (1: the reverse SDE; 0: DPM-Solver++(2M) in k-diffusion's
    form). ``s_noise``: an extra factor on the noise. ``noise``: ``brownian`` (default, as
    k-diffusion's ``BrownianTreeNoiseSampler``) or ``iid`` (a fresh draw per step)."""

    eta: float = 1.0
    s_noise: float = 1.0
    noise: str = "brownian"

    def __post_init__(self) -> None:
        if not self.eta >= 0.0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        if not self.s_noise >= 0.0:
            raise ValueError(f"s_noise must be >= 0, got {self.s_noise}")
        noise_kind(self.noise)

    def noise_level(self, std_next: float, h: float) -> float:
        """The noise's weight in a step of log-SNR length h: s_noise·std_{i+1}·sqrt(1 − e^{−2ηh})."""
        return self.s_noise * std_next * math.sqrt(-math.expm1(-2 * self.eta * h))


@dataclass
class Options(SDEOptions):
    """Those of every DPM-Solver++ SDE sampler, and ``solver_type``: ``midpoint`` (default) or
    ``heun``, the second-order correction's weight (see :class:`DPMSolverPP2MSDE`)."""

    solver_type: str = "midpoint"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.solver_type not in ("midpoint", "heun"):
            raise ValueError(f"solver_type is 'midpoint' or 'heun', got {self.solver_type!r}")


class DPMSolverPP2MSDE(Sampler):
    """DPM-Solver++(2M) SDE (k-diffusion's ``sample_dpmpp_2m_sde``, crowsonkb/k-diffusion).

    Step i, h = λ_{i+1} − λ_i, r = h_{i−1}/h, φ = 1 − e^{−(1+η)h}, D_i = D(x_i; t_i):

        x_{i+1} = (std_{i+1}/std_i)·e^{−ηh}·x_i + a_{i+1}·φ·D_i
                  + a_{i+1}·w·(D_i − D_{i−1})/r                   (from the second step on)
                  + s_noise·std_{i+1}·sqrt(1 − e^{−2ηh})·z,

    w = φ/2 (``midpoint``) or w = 1 − φ/((1+η)h) (``heun``); the step into the data end is
    x_N = D_{N−1}. One evaluation per step (NFE = N). z is the step's normalised Brownian
    increment by default (k-diffusion's default noise sampler is a Brownian tree, in σ rather
    than t: the same law on a fixed grid).
    """

    name = "dpmpp_2m_sde"
    default_schedule = "edm"
    Options = Options

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
        """Run DPM-Solver++(2M) SDE from x_T at t_0 = T to the data end t_N = 0.

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.denoise`` is evaluated once per step.
            noise: the cell's noise: a standard normal per step but the last (when η > 0).
            callback: called after every step with ``{"i", "t", "x", "denoised"}``.

        Returns:
            The sample at the data end.
        """
        opt, lam = self.options, grid.lambdas()
        z = StepNoise(noise, model.sde.T, opt.noise)
        x, old, h_last = x_T, None, None
        for i, t, t_next in grid.pairs():
            denoised = model.denoise(x, t)
            if grid.sigma[i + 1] == 0.0:
                x = denoised * grid.alpha[i + 1]  # the denoising step into σ = 0
            else:
                h, a_next = lam[i + 1] - lam[i], grid.alpha[i + 1]
                h_eta = (1.0 + opt.eta) * h
                phi = -math.expm1(-h_eta)
                x = x * (grid.sigma[i + 1] / grid.sigma[i] * math.exp(-opt.eta * h))
                x.add_(denoised, alpha=a_next * phi)
                if old is not None:
                    w = 0.5 * phi if opt.solver_type == "midpoint" else 1.0 - phi / h_eta
                    x.add_(denoised - old, alpha=a_next * w * h / h_last)
                if opt.eta > 0.0:
                    level = opt.noise_level(grid.sigma[i + 1], h)
                    x.add_(z.normal(t, t_next, x), alpha=level)
                h_last = h
            old = denoised
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised})
        return x


SAMPLERS = (DPMSolverPP2MSDE,)
