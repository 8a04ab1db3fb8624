"""DPM-Solver++(3M) SDE (Lu et al. 2022, "DPM-Solver++"; k-diffusion's ``sample_dpmpp_3m_sde``).

The η-weighted reverse SDE in data prediction (see :mod:`bench_plugins.samplers.dpmpp_2m_sde`)
with D(λ) extrapolated from the three latest outputs: the exponential integrator's φ-functions
taken at (1 + η)·h, DPM-Solver++(3M)'s divided differences, the published φ₃ weight of the
second difference.
"""

from __future__ import annotations

import math

from bench_plugins.samplers.dpmpp_2m_sde import SDEOptions
from torch import Tensor

from bench.core.brownian import StepNoise
from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView


def weights(h_eta: float, r0: float | None, r1: float | None) -> list[float]:
    """[w_0, w_1, w_2] of D_i, D_{i−1}, D_{i−2} in the step's data term, before the factor a_{i+1}.

    φ₁ = 1 − e^{−h_η}, φ₂ = 1 − φ₁/h_η, φ₃ = φ₂/h_η − ½ (h_η = (1 + η)·h). First step: φ₁·D_i;
    second: + φ₂·(D_i − D_{i−1})/r₀; then + φ₂·D1 − φ₃·D2 with D1_0 = (D_i − D_{i−1})/r₀,
    D1_1 = (D_{i−1} − D_{i−2})/r₁, D1 = D1_0 + r₀·(D1_0 − D1_1)/(r₀ + r₁), D2 = (D1_0 −
    D1_1)/(r₀ + r₁), r_k = h_{i−k−1}/h.
    """
    phi_1 = -math.expm1(-h_eta)
    phi_2 = 1.0 - phi_1 / h_eta
    out = [phi_1, 0.0, 0.0]
    if r0 is None:
        return out
    d1_0 = [1 / r0, -1 / r0, 0.0]
    if r1 is None:
        return [w + phi_2 * d for w, d in zip(out, d1_0)]
    phi_3 = phi_2 / h_eta - 0.5
    d1_1 = [0.0, 1 / r1, -1 / r1]
    d2 = [(p - q) / (r0 + r1) for p, q in zip(d1_0, d1_1)]
    d1 = [p + r0 * q for p, q in zip(d1_0, d2)]
    return [w + phi_2 * p - phi_3 * q for w, p, q in zip(out, d1, d2)]


class DPMSolverPP3MSDE(Sampler):
    """DPM-Solver++(3M) SDE (k-diffusion's ``sample_dpmpp_3m_sde``, crowsonkb/k-diffusion).

    Step i, h = λ_{i+1} − λ_i, D_i = D(x_i; t_i), [w_k] = :func:`weights`:

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
                for d, w in zip(ds, weights((1.0 + opt.eta) * h, r[0], r[1])):
                    x.add_(d, alpha=a_next * w)
                if opt.eta > 0.0:
                    level = (
                        opt.s_noise * grid.sigma[i + 1] * math.sqrt(-math.expm1(-2 * opt.eta * h))
                    )
                    x.add_(z.normal(t, t_next, x), alpha=level)
                hs = [h, *hs][:2]
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised})
        return x


SAMPLERS = (DPMSolverPP3MSDE,)
