"""DPM-Solver++ multistep samplers in data prediction (Lu et al. 2022, "DPM-Solver++").

The probability-flow ODE in the log-SNR λ = log(a/std) and the data prediction D = x̂₀ has the
exact solution (Lu et al. 2022, "DPM-Solver++", §4) from t_s to t_t, h = λ_t − λ_s:

    x_t = (std_t/std_s)·x_s + a_t·∫_{λ_s}^{λ_t} e^{−(λ_t − λ)}·D(λ) dλ,

and a k-th order multistep method replaces D(λ) by its Taylor expansion at λ_s, estimated by
divided differences of the k most recent model outputs. Every model evaluation is reused by the
following steps, so a run of N steps costs N evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bench_plugins.samplers._multistep import (
    capped_order,
    combine,
    data_weights,
    lower_order_final_rule,
)
from torch import Tensor

from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView

FEW_STEPS = {"official": 10, "diffusers": 15}
"""DPM-Solver's ``lower_order_final`` lowers only short runs: fewer steps than this, counted as
the rule's code counts them (official: N − 1, diffusers: N; see :func:`capped_order`)."""


@dataclass
class DPMSolverPPOptions:
    """Options of ``dpmpp_2m`` (and of ``dpmpp_3m``).

    ``lower_order_final``: the cap on the orders of a short run's last steps before the one into
    σ = 0 (which is first order whatever the option). ``official`` (default), DPM-Solver's rule:
    when N − 1 < 10, step i has order ≤ N − 1 − i (step N − 2 first order, N − 3 at most second);
    ``diffusers``: when N < 15, order ≤ N − i (step N − 2 at most second order); ``off``: no
    cap. ``true`` and ``false`` are ``official`` and ``off``.

    ``solver_type``: the second-order step, as DPM-Solver's option of that name: ``dpmsolver``
    (default; D_i + D1_0/2 weighted by φ₁, Alg. 2) or ``taylor`` (φ₁·D_i + φ₂·D1_0, the Taylor
    form; diffusers' ``solver_type="heun"``, k-diffusion's second step of 3M).
    """

    lower_order_final: str = "official"
    solver_type: str = "dpmsolver"

    def __post_init__(self) -> None:
        self.lower_order_final = lower_order_final_rule(self.lower_order_final)
        if self.solver_type not in ("dpmsolver", "taylor"):
            raise ValueError(f"solver_type is 'dpmsolver' or 'taylor', got {self.solver_type!r}")


@dataclass
class DPMSolverPP3MOptions(DPMSolverPPOptions):
    """Options of ``dpmpp_3m``: those of ``dpmpp_2m`` and the weight of the second difference.

    ``variant``: ``reference`` (default) weighs D2 ≈ h²·D''/2 by φ₃, as the published method
    (DPM-Solver's code, diffusers and k-diffusion do): second order (the D'' term of the local
    error is off by a_t·φ₃·h²·D''/2 = O(h³)); ``taylor`` weighs it by the Taylor coefficient 2·φ₃,
    third order: the suite's own variant, not a published one.
    """

    variant: str = "reference"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in ("reference", "taylor"):
            raise ValueError(f"variant is 'reference' or 'taylor', got {self.variant!r}")


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
        λ = +∞, h = ∞) is first order, x_N = a_N·D_{N−1} exactly (the official codes' final
        ``denoise_to_zero``; diffusers' ``final_sigmas_type="zero"``): the higher-order terms
        have no finite limit there. Before it, ``lower_order_final`` caps the order.
        """
        if grid.sigma[i + 1] == 0.0:
            return 1
        order = min(self.solver_order, i + 1)
        return capped_order(order, i, grid.steps, self.options.lower_order_final, FEW_STEPS)

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
        * order 2 (Alg. 2, DPM-Solver++(2M)): D_i is replaced by D_i + D1_0/2 (``solver_type=
          "taylor"``: x = (std_t/std_s)·x + a_t·(φ₁·D_i + φ₂·D1_0));
        * order 3: x = (std_t/std_s)·x + a_t·(φ₁·D_i + φ₂·D1 − w·φ₃·D2) with
          D1 = D1_0 + r_0·D2 ≈ h·D', D2 = (D1_0 − D1_1)/(r_0 + r_1) ≈ h²·D''/2, and w = 1 (the
          published method, ``variant="reference"``) or 2 (the Taylor weight, ``"taylor"``).

        The D's are coefficient vectors over (D_i, D_{i−1}, D_{i−2}).
        """
        h = lam[i + 1] - lam[i]
        c_x = grid.sigma[i + 1] / grid.sigma[i]  # = (a_t/a_s)·e^{−h}
        r0 = (lam[i] - lam[i - 1]) / h if order >= 2 else None
        r1 = (lam[i - 1] - lam[i - 2]) / h if order >= 3 else None
        second = "midpoint" if self.options.solver_type == "dpmsolver" else "taylor"
        w3 = 2.0 if getattr(self.options, "variant", "reference") == "taylor" else 1.0
        return c_x, [grid.alpha[i + 1] * w for w in data_weights(h, r0, r1, second, w3)]


class DPMSolverPP2M(_MultistepDPMSolverPP):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), data prediction, NFE = N.

    x_{i+1} = (std_{i+1}/std_i)·x_i − a_{i+1}·(e^{−h_i} − 1)·((1 + 1/(2r_i))·D_i − D_{i−1}/(2r_i)),
    h_i = λ_{i+1} − λ_i, r_i = h_{i−1}/h_i, D_i = D(x_i, t_i). The first step is DPM-Solver++(1)
    (DDIM); so is the step into the data end (λ = +∞), where it gives x_N = D_{N−1} exactly, and
    with ``lower_order_final`` (default ``official``) and N ≤ 10 also the step before it.

    By default this is the official code's method: DPM-Solver's repository (LuChengTHU/dpm-solver),
    ``DPM_Solver(algorithm_type="dpmsolver++").sample(method="multistep", order=2,
    lower_order_final=True, solver_type="dpmsolver", steps=N − 1, denoise_to_zero=True)`` on the
    same σ_0 … σ_{N−1}. The default schedule is ``logsnr``, that code's uniform-λ ('logSNR') step
    selection. ``lower_order_final=diffusers`` (= ``off`` for 2M) is k-diffusion's
    ``sample_dpmpp_2m`` and diffusers' ``DPMSolverMultistepScheduler``.
    """

    name = "dpmpp_2m"
    aliases = ("dpmpp2m",)
    Options = DPMSolverPPOptions
    solver_order = 2


class DPMSolverPP3M(_MultistepDPMSolverPP):
    """DPM-Solver++(3M) (Lu et al. 2022, "DPM-Solver++", Alg. 2's multistep at 3rd order), NFE = N.

    The third-order update of :meth:`coefficients` from the three latest outputs, after a first-
    and a second-order warm-up step; the step into the data end is first order, and with
    ``lower_order_final=official`` and N ≤ 10 the one before it first order and the one before
    that at most second. By default this is the published method, DPM-Solver's repository
    (LuChengTHU/dpm-solver), ``DPM_Solver(algorithm_type="dpmsolver++").sample(method=
    "multistep", order=3, lower_order_final=True, steps=N − 1, denoise_to_zero=True)``: its
    second difference is weighed by φ₃ (``variant="reference"``), which makes it second order.
    ``variant="taylor"`` is the suite's own third-order method (weight 2·φ₃). k-diffusion's
    ``sample_dpmpp_3m_sde`` at eta = 0 is ``lower_order_final=off solver_type=taylor``.
    """

    name = "dpmpp_3m"
    aliases = ("dpmpp3m",)
    Options = DPMSolverPP3MOptions
    solver_order = 3


SAMPLERS = (DPMSolverPP2M, DPMSolverPP3M)
