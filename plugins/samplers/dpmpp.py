"""DPM-Solver++ multistep samplers in data prediction (Lu et al. 2022, "DPM-Solver++").

The probability-flow ODE in the log-SNR λ = log(a/std) and the data prediction D = x̂₀ has the
exact solution (Lu et al. 2022, "DPM-Solver++", §4) from t_s to t_t, h = λ_t − λ_s:

    x_t = (std_t/std_s)·x_s + a_t·∫_{λ_s}^{λ_t} e^{−(λ_t − λ)}·D(λ) dλ,

and a k-th order multistep method replaces D(λ) by its Taylor expansion at λ_s, estimated by
divided differences of the k most recent model outputs. Every model evaluation is reused by the
following steps, so a run of N steps costs N evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView

FEW_STEPS = 15
"""Below this many steps, ``lower_order_final`` also lowers the second-to-last step (diffusers)."""


@dataclass
class DPMSolverPP3MOptions:
    """Options of ``dpmpp_3m``.

    ``lower_order_final``: the last steps of a short run use lower orders (diffusers' rule): with
    it (the default) and N < 15 steps, step N−2 uses at most second order (step N−1, into the data
    end, is first order whatever the option, see :meth:`_MultistepDPMSolverPP.step_order`).

    ``variant``: ``taylor`` (default) weighs the second divided difference D2 ≈ h²·D''/2 by the
    Taylor coefficient 2·φ₃ (third order); ``reference`` uses φ₃, as DPM-Solver's reference code,
    diffusers' DPMSolverMultistepScheduler and k-diffusion do, which is second order only (the
    D'' term of the local error is off by a_t·φ₃·h²·D''/2 = O(h³)); for reproducing those.
    """

    lower_order_final: bool = True
    variant: str = "taylor"

    def __post_init__(self) -> None:
        if self.variant not in ("taylor", "reference"):
            raise ValueError(f"variant is 'taylor' or 'reference', got {self.variant!r}")


def combine(x: Tensor, c_x: float, ms: list[Tensor], cs: list[float]) -> Tensor:
    """c_x·x + Σ_j cs[j]·ms[j] in one new tensor (host-float weights; zero weights skipped)."""
    out = x * c_x
    for m, c in zip(ms, cs):
        if c != 0.0:
            out.add_(m, alpha=c)
    return out


class _MultistepDPMSolverPP(Sampler):
    """DPM-Solver++(kM), k = ``solver_order``: the loop shared by ``dpmpp_2m`` and ``dpmpp_3m``."""

    solver_order: ClassVar[int]
    default_schedule = "logsnr"

    def nfe_nominal(self, steps: int) -> int:
        """One data-prediction evaluation per step, at t_0 … t_{N−1}: N."""
        return steps

    def step_order(self, i: int, grid: TimeGrid) -> int:
        """The order of step i: lower while warming up, into std = 0, and at the end of short runs.

        Step i has i + 1 model outputs to use (warm-up). The step into the data end (std = 0,
        λ = +∞, h = ∞) is first order, x_N = a_N·D_{N−1} exactly: the higher-order terms have no
        finite limit there (diffusers' ``final_sigmas_type="zero"`` does the same).
        """
        if grid.sigma[i + 1] == 0.0:
            return 1
        order = min(self.solver_order, i + 1)
        if getattr(self.options, "lower_order_final", False) and grid.steps < FEW_STEPS:
            order = min(order, grid.steps - i)  # diffusers: N − 2 → ≤ 2, N − 1 → 1
        return order

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run DPM-Solver++(kM) from x_T at t_0 = T to the data end t_N = 0.

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.denoise`` is evaluated once per step, at t_i.
            noise: unused (the sampler is deterministic).
            callback: called after every step with ``{"i", "t", "x", "denoised"}``.

        Returns:
            The sample at the data end.
        """
        lam = grid.lambdas()
        x, ms = x_T, []  # ms: the latest model outputs … D_{i−1}, D_i (newest last)
        for i, t, _ in grid.pairs():
            denoised = model.denoise(x, t)
            ms = [*ms, denoised][-self.solver_order :]
            c_x, cs = self.coefficients(lam, grid, i, self.step_order(i, grid))
            x = combine(x, c_x, ms[::-1], cs)
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "denoised": denoised})
        return x

    def coefficients(
        self, lam: list[float], grid: TimeGrid, i: int, order: int
    ) -> tuple[float, list[float]]:
        """(c_x, [c_0, c_1, c_2]) of x_{i+1} = c_x·x_i + Σ_k c_k·D_{i−k} for one step of ``order``.

        With h = λ_{i+1} − λ_i, r_k = h_{i−k−1}/h (h_j = λ_{j+1} − λ_j) and the divided differences
        D1_0 = (D_i − D_{i−1})/r_0 ≈ h·D', D1_1 = (D_{i−1} − D_{i−2})/r_1, φ₁ = 1 − e^{−h},
        φ₂ = (e^{−h} − 1)/h + 1, φ₃ = (e^{−h} − 1 + h)/h² − ½ (host floats; e^{−h} − 1 by expm1):

        * order 1 (DPM-Solver++(1), i.e. DDIM): x = (std_t/std_s)·x + a_t·φ₁·D_i;
        * order 2 (Alg. 2, DPM-Solver++(2M)): D_i is replaced by D_i + D1_0/2;
        * order 3: x = (std_t/std_s)·x + a_t·(φ₁·D_i + φ₂·D1 − w·φ₃·D2) with
          D1 = D1_0 + r_0·D2 ≈ h·D', D2 = (D1_0 − D1_1)/(r_0 + r_1) ≈ h²·D''/2, and w = 2 (the
          Taylor weight; ``variant="reference"``: w = 1, as the reference code).

        The D's are coefficient vectors over (D_i, D_{i−1}, D_{i−2}).
        """
        h = lam[i + 1] - lam[i]
        a_t, phi_1 = grid.alpha[i + 1], -math.expm1(-h)  # φ₁ = 1 at the data end (h = ∞)
        c_x = grid.sigma[i + 1] / grid.sigma[i]  # = (a_t/a_s)·e^{−h}
        D0 = [1.0, 0.0, 0.0]
        if order == 1:
            return c_x, [a_t * phi_1 * d for d in D0]
        r0 = (lam[i] - lam[i - 1]) / h
        D1_0 = [1.0 / r0, -1.0 / r0, 0.0]
        if order == 2:
            return c_x, [a_t * phi_1 * (d0 + 0.5 * d1) for d0, d1 in zip(D0, D1_0)]
        r1 = (lam[i - 1] - lam[i - 2]) / h
        D1_1 = [0.0, 1.0 / r1, -1.0 / r1]
        D2 = [(p - q) / (r0 + r1) for p, q in zip(D1_0, D1_1)]
        D1 = [p + r0 * d2 for p, d2 in zip(D1_0, D2)]
        phi_2 = 1.0 - phi_1 / h
        phi_3 = phi_2 / h - 0.5
        w = 1.0 if getattr(self.options, "variant", "taylor") == "reference" else 2.0
        return c_x, [
            a_t * (phi_1 * d0 + phi_2 * d1 - w * phi_3 * d2) for d0, d1, d2 in zip(D0, D1, D2)
        ]


class DPMSolverPP2M(_MultistepDPMSolverPP):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), data prediction, NFE = N.

    x_{i+1} = (std_{i+1}/std_i)·x_i − a_{i+1}·(e^{−h_i} − 1)·((1 + 1/(2r_i))·D_i − D_{i−1}/(2r_i)),
    h_i = λ_{i+1} − λ_i, r_i = h_{i−1}/h_i, D_i = D(x_i, t_i). The first step is DPM-Solver++(1)
    (DDIM); so is the step into the data end (λ = +∞), where it gives x_N = D_{N−1} exactly. No
    options: diffusers' ``lower_order_final`` only lowers that final step, which is first order
    here anyway. The default schedule is ``logsnr``, DPM-Solver's recommended uniform-λ ('logSNR')
    step selection.
    """

    name = "dpmpp_2m"
    aliases = ("dpmpp2m",)
    solver_order = 2


class DPMSolverPP3M(_MultistepDPMSolverPP):
    """DPM-Solver++(3M) (Lu et al. 2022, "DPM-Solver++", Alg. 2's multistep at 3rd order), NFE = N.

    The third-order update of :meth:`coefficients` from the three latest outputs, after a first-
    and a second-order warm-up step; the step into the data end is first order, and with
    ``lower_order_final`` and N < 15 the one before it second order (as diffusers). Third order
    needs the Taylor weight of the second difference (``variant="taylor"``, the default);
    ``variant="reference"`` reproduces the reference code and diffusers, second order.
    """

    name = "dpmpp_3m"
    aliases = ("dpmpp3m",)
    Options = DPMSolverPP3MOptions
    solver_order = 3


SAMPLERS = (DPMSolverPP2M, DPMSolverPP3M)
