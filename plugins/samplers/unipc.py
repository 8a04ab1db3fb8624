"""UniPC: a unified predictor–corrector framework (Zhao et al. 2023), data prediction.

Both halves discretise the exact solution of the probability-flow ODE in the log-SNR
λ = log(a/std) with the data prediction D (Lu et al. 2022, "DPM-Solver++"), h = λ_t − λ_s:

    x_t = (std_t/std_s)·x_s + a_t·∫_{λ_s}^{λ_t} e^{−(λ_t − λ)}·D(λ) dλ.

UniP-p (the predictor) extrapolates D from the p latest model outputs; UniC-p (the corrector)
re-runs the same step once the model has been evaluated at the predicted point, adding that
evaluation to the fit. The evaluation is the one the next step needs anyway, so the corrector
costs no extra NFE and raises the order from p to p + 1 (Zhao et al. 2023, §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from bench_plugins.samplers._multistep import capped_order, combine, lower_order_final_rule
from torch import Tensor

from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView


class StepCoefficients(NamedTuple):
    """One UniP/UniC step from t_i to t_{i+1} as ``c_x·x_i + Σ_k c_k·m_k`` (host floats).

    ``predictor`` weighs (m_i, m_{i−1}, …); ``corrector`` weighs (m_{i+1}, m_i, m_{i−1}, …),
    m_{i+1} being the model output at the predicted x_{i+1}.
    """

    c_x: float
    predictor: list[float]
    corrector: list[float]


class UniPC(Sampler):
    """UniPC-p (Zhao et al. 2023, "UniPC", §3: UniP-p then UniC-p, B(h) forms), NFE = N.

    Step i from t_i to t_{i+1} with order p, h = λ_{i+1} − λ_i, r_k = (λ_{i−k} − λ_i)/h
    (k = 1 … p − 1, negative), D_k = (m_{i−k} − m_i)/r_k, m_j = D(x_j, t_j), and in data
    prediction hh = −h, h·φ₁ = e^{hh} − 1, B(h) = hh (``bh1``) or e^{hh} − 1 (``bh2``):

        UniP:  x_{i+1} = (std_{i+1}/std_i)·x_i − a_{i+1}·(e^{hh} − 1)·m_i
                         − a_{i+1}·B(h)·Σ_k ρ^p_k·D_k,
        UniC:  x^c_{i+1} = (same first two terms) − a_{i+1}·B(h)·(Σ_k ρ^c_k·D_k + ρ^c_p·D_p),

    with D_p = m_{i+1} − m_i (r_p = 1), m_{i+1} evaluated at the predicted x_{i+1}. The ρ solve
    the order conditions R·ρ = b, R_{jk} = r_k^{j−1}, b_j = j!·hh·φ_{j+1}(hh)/B(h): ρ^p from the
    first p − 1 rows and columns, ρ^c from all p; as in the paper's code, ρ^p = ½ for p = 2 and
    ρ^c = ½ for p = 1. The corrected x^c_{i+1} is where step i + 1 starts; m_{i+1} is kept as is.

    Orders: step i uses min(p, i + 1) (warm-up), capped by ``lower_order_final``: ``official``
    (default) min(p, N − 1 − i), ``diffusers`` min(p, N − i), ``off`` no cap; the step into the
    data end (λ = +∞) is first order, x_N = m_{N−1}. No corrector follows it (it would need an
    evaluation at t_N), nor the step before it (its corrected x_{N−1} would be weighed by
    std_N/std_{N−1} = 0 in diffusers, and the official code skips the corrector at its last
    step). ``unipc-3`` is ``-o sampler.unipc.order=3``. The default schedule is ``logsnr``
    (uniform λ, DPM-Solver's 'logSNR' step selection; UniPC works in λ too).

    By default this is the official code's method: UniPC's repository (wl-zhao/UniPC),
    ``UniPC(algorithm_type="data_prediction", variant="bh1").sample(method="multistep", order=2,
    lower_order_final=True, steps=N − 1, denoise_to_zero=True)`` on the same σ_0 … σ_{N−1}.
    diffusers' ``UniPCMultistepScheduler`` (default ``solver_type="bh2"``) is
    ``variant=bh2 lower_order_final=diffusers``.
    """

    name = "unipc"
    default_schedule = "logsnr"

    @dataclass
    class Options:
        """``order``: p ∈ {1, 2, 3} of UniPC-p; ``variant``: B(h), ``bh1`` (−h, default, the
        official code's) or ``bh2`` (e^{−h} − 1, diffusers' default); ``lower_order_final``: the
        cap on the orders of the last steps, ``official`` (default, UniPC's rule: step i at most
        order N − 1 − i), ``diffusers`` (N − i) or ``off``; ``true``/``false`` = official/off."""

        order: int = 2
        variant: str = "bh1"
        lower_order_final: str = "official"

        def __post_init__(self) -> None:
            if self.order not in (1, 2, 3):
                raise ValueError(f"order must be 1, 2 or 3, got {self.order}")
            if self.variant not in ("bh1", "bh2"):
                raise ValueError(f"variant is 'bh1' or 'bh2', got {self.variant!r}")
            self.lower_order_final = lower_order_final_rule(self.lower_order_final)

    def nfe_nominal(self, steps: int) -> int:
        """One data-prediction evaluation per step, at t_0 … t_{N−1}: N (UniC reuses them)."""
        return steps

    def step_order(self, i: int, grid: TimeGrid) -> int:
        """The order of step i: warm-up, ``lower_order_final``, first order into std = 0."""
        if grid.sigma[i + 1] == 0.0:
            return 1  # h = ∞: only the first-order step has a limit (x = a·D)
        order = min(self.options.order, i + 1)
        return capped_order(order, i, grid.steps, self.options.lower_order_final, None)

    def coefficients(self, lam: list[float], grid: TimeGrid, i: int, p: int) -> StepCoefficients:
        """The UniP-p and UniC-p coefficients of step i (see the class docstring)."""
        h = lam[i + 1] - lam[i]
        a_t, hh = grid.alpha[i + 1], -h
        h_phi_1 = math.expm1(hh)  # e^{−h} − 1, −1 at the data end
        c_x, base = grid.sigma[i + 1] / grid.sigma[i], -a_t * h_phi_1
        if h == math.inf:
            return StepCoefficients(c_x, [base], [])
        B = hh if self.options.variant == "bh1" else h_phi_1
        r = np.array([(lam[i - k] - lam[i]) / h for k in range(1, p)] + [1.0])
        R = np.vander(r, p, increasing=True).T  # R[j, k] = r_k^j
        b, g, fact = np.empty(p), h_phi_1 / hh - 1.0, 1.0  # g_j = hh·φ_{j+1}(hh)
        for j in range(1, p + 1):
            b[j - 1] = g * fact / B
            fact *= j + 1
            g = g / hh - 1.0 / fact
        rho_p = [] if p == 1 else [0.5] if p == 2 else list(np.linalg.solve(R[:-1, :-1], b[:-1]))
        rho_c = [0.5] if p == 1 else list(np.linalg.solve(R, b))

        def weights(rho: list[float], r: np.ndarray) -> list[float]:
            """−a_t·B(h)·Σ_k ρ_k·(m_k − m_i)/r_k plus the base term, as weights of (m_i, m_k …)."""
            w = [-a_t * B * float(c / rk) for c, rk in zip(rho, r)]
            return [base - sum(w), *w]

        *older, newest = weights(rho_c, r)  # (m_i, m_{i−1}, …, m_{i+1}) → m_{i+1} first
        return StepCoefficients(c_x, weights(rho_p, r[:-1]), [newest, *older])

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run UniPC-p from x_T at t_0 = T to the data end t_N = 0.

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.denoise`` is evaluated once per step, at t_i.
            noise: unused (the sampler is deterministic).
            callback: called after every step with ``{"i", "t", "x", "denoised"}``: x is the
                predicted x_{i+1} (step i + 1 corrects it after its evaluation).

        Returns:
            The sample at the data end.
        """
        lam = grid.lambdas()
        x, ms = x_T, []  # ms: the latest model outputs … m_{i−1}, m_i (newest last)
        last: tuple[Tensor, StepCoefficients] | None = None  # x_{i−1}, step i − 1's coefficients
        for i, t, _ in grid.pairs():
            denoised = model.denoise(x, t)
            if last is not None:  # UniC: redo step i − 1 with m_i = D(x_i) in the fit
                x_s, c = last
                x = combine(x_s, c.c_x, [denoised, *ms[::-1]], c.corrector)
            ms = [*ms, denoised][-self.options.order :]
            c = self.coefficients(lam, grid, i, self.step_order(i, grid))
            # UniC follows every step but the last two: the step into std = 0 weighs x by 0.
            last = (x, c) if i + 1 < grid.steps and grid.sigma[i + 2] > 0.0 else None
            x = combine(x, c.c_x, ms[::-1], c.predictor)
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised})
        return x


SAMPLERS = (UniPC,)
