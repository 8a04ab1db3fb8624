"""DPM-Solver++(3M) SDE (Lu et al. 2022, "DPM-Solver++"; k-diffusion's ``sample_dpmpp_3m_sde``).

The η-weighted reverse SDE in data prediction (see :mod:`bench_plugins.samplers.dpmpp_2m_sde`)
with D(λ) extrapolated from the three latest outputs: the exponential integrator's φ-functions
taken at (1 + η)·h, DPM-Solver++(3M)'s divided differences, the published φ₃ weight of the
second difference.
"""

from __future__ import annotations

import math

from bench_plugins.samplers._multistep import data_weights
from bench_plugins.samplers.dpmpp_2m_sde import SDEOptions
from torch import Tensor

from bench.core.brownian import StepNoise
from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView


class DPMSolverPP3MSDE(Sampler):
    """DPM-Solver++(3M) SDE (k-diffusion's ``sample_dpmpp_3m_sde``, crowsonkb/k-diffusion).

    Step i, h = λ_{i+1} − λ_i, D_i = D(x_i; t_i), [w_k] the data weights of DPM-Solver++(3M)
    at h_η = (1 + η)·h (:func:`~bench_plugins.samplers._multistep.data_weights`, Taylor second
    order while the history fills):

        x_{i+1} = (std_{i+1}/std_i)·e^{−ηh}·x_i + a_{i+1}·Σ_k w_k·D_{i−k}
                  + s_noise·std_{i+1}·sqrt(1 − e^{−2ηh})·z,

    first and second order while the history fills; x_N = D_{N−1} into the data end. One
    evaluation per step (NFE = N). η = 0 is ``dpmpp_3m lower_order_final=off
    solver_type=taylor``. z: the step's normalised Brownian increment by default (k-diffusion's
    default noise sampler is a Brownian tree), or ``iid``.
    """

    name = "dpmpp_3m_sde"
    default_schedule = "edm"
    Options = SDEOptions

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
        """Run DPM-Solver++(3M) SDE from x_T at t_0 = T to the data end t_N = 0.

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
        x, ds, hs = x_T, [], []  # ds: D_i, D_{i−1}, D_{i−2}; hs: h_{i−1}, h_{i−2}
        for i, t, t_next in grid.pairs():
            denoised = model.denoise(x, t)
            ds = [denoised, *ds][:3]
            if grid.sigma[i + 1] == 0.0:
                x = denoised * grid.alpha[i + 1]  # the denoising step into σ = 0
            else:
                h, a_next = lam[i + 1] - lam[i], grid.alpha[i + 1]
                r = [hk / h for hk in hs] + [None, None]
                x = x * (grid.sigma[i + 1] / grid.sigma[i] * math.exp(-opt.eta * h))
                for d, w in zip(ds, data_weights((1.0 + opt.eta) * h, r[0], r[1])):
                    x.add_(d, alpha=a_next * w)
                if opt.eta > 0.0:
                    level = opt.noise_level(grid.sigma[i + 1], h)
                    x.add_(z.normal(t, t_next, x), alpha=level)
                hs = [h, *hs][:2]
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised})
        return x


SAMPLERS = (DPMSolverPP3MSDE,)
