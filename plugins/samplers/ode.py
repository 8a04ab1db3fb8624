"""The paper's black-box probability-flow ODE sampler: scipy's RK45 on the whole batch."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView


class ProbabilityFlowODE(Sampler):
    """Probability-flow ODE sampler (Song et al. 2021, §4.3, Eq. 13 and App. D.1): RK45.

    The official code is the paper's (yang-song/score_sde, ``sampling.get_ode_sampler``).
    Integrates dx/dt = f(x, t) − ½g(t)²·s(x, t) (Eq. 13) from t_0 = T down to eps with
    ``scipy.integrate.solve_ivp(method="RK45", rtol, atol)`` (Dormand–Prince 5(4) with error
    control), the whole batch flattened into one float64 vector as in the reference code, so the
    step sizes, and the NFE, depend on the batch. Only the end point is requested
    (``t_eval=[eps]``); the reference keeps every accepted step. The model is evaluated on a copy
    of the state in the batch's dtype and device, and its drift goes back to the host in float64:
    every evaluation synchronises with the host (this sampler is a host loop by nature).

    With ``denoise`` (the reference's ``noise_removal``, on in all its configs) one more
    evaluation denoises the end point with Tweedie's formula, x̂₀ = (x + std²·s(x, eps))/a(eps),
    which is the reference's final reverse-diffusion step at eps up to the discrete table it
    reads there (see docs/solvers/ipndm_ode.md). The NFE is counted: every RK45 function
    evaluation, rejected steps included, plus the denoising one. The reference reports scipy's
    ``nfev``, one less than this count when denoising.

    Steps and schedule do not apply: only the grid's first and last visited times are used
    (T and eps on every built-in schedule; a one-step grid, which has no eps, ends at the SDE's
    eps), so cells with any ``steps`` give the same samples. ``noise`` is unused.
    """

    name = "ode"
    default_schedule = "uniform"
    adaptive = True
    uses_steps = False
    host_loop = True  # scipy integrates on the host: one device read per evaluation
    batch_dependence = "RK45 step sizes shared by the batch (one system, as the reference)"

    @dataclasses.dataclass
    class Options:
        """Options of :class:`ProbabilityFlowODE`.

        Attributes:
            rtol: RK45's relative tolerance (the paper's 1e-5).
            atol: RK45's absolute tolerance (the paper's 1e-5).
            denoise: finish with one Tweedie denoising evaluation at eps.
        """

        rtol: float = 1e-5
        atol: float = 1e-5
        denoise: bool = True

        def __post_init__(self) -> None:
            for key in ("rtol", "atol"):
                value = getattr(self, key)
                if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
                    raise ValueError(f"{key} must be a positive number, got {value!r}")
                if not math.isfinite(value):
                    raise ValueError(f"{key} must be finite, got {value!r}")
            if not isinstance(self.denoise, bool):
                raise ValueError(f"denoise must be true or false, got {self.denoise!r}")

    def nfe_nominal(self, steps: int) -> None:
        """Unknown in advance: RK45 chooses its steps (``steps`` does not apply)."""
        return None

    @staticmethod
    def time_range(grid: TimeGrid, eps: float) -> tuple[float, float]:
        """(start, end) of the integration: the grid's t_0 and t_{N−1}, or ``eps`` if N = 1."""
        start, end = grid.t[0], grid.t[grid.steps - 1]
        return start, end if end < start else eps

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Integrate the probability flow from ``x_T`` at t_0 to eps, then denoise if asked."""
        from scipy.integrate import solve_ivp  # scipy only when this sampler runs

        shape, dtype, device = x_T.shape, x_T.dtype, x_T.device
        flow = model.sde.reverse(model.score, probability_flow=True)
        start, end = self.time_range(grid, model.sde.eps)

        def drift(t: float, y: np.ndarray) -> np.ndarray:
            # f(x, t) − ½g(t)²·s(x, t) on a device copy of scipy's state: one evaluation.
            x = torch.tensor(y, dtype=dtype, device=device).reshape(shape)
            out = flow.sde(x, float(t))[0].to("cpu", torch.float64).numpy().reshape(-1)
            calls.append(float(t))
            if len(calls) == 1 and not np.isfinite(out).all():
                raise _NonFiniteStart  # scipy would loop forever on a NaN first step size
            return out

        calls: list[float] = []  # the times RK45 evaluated the drift at (its nfev)
        y0 = x_T.detach().to("cpu", torch.float64).reshape(-1).numpy().copy()
        try:
            if not np.isfinite(y0).all():
                raise _NonFiniteStart
            solution = solve_ivp(
                drift,
                (start, end),
                y0,
                method="RK45",
                t_eval=[end],
                rtol=self.options.rtol,
                atol=self.options.atol,
            )
            ok, message = solution.status == 0, solution.message
        except _NonFiniteStart:
            ok, message = False, f"non-finite start or drift at t = {start:g}"
        if ok:
            x = torch.tensor(solution.y[:, -1], dtype=dtype, device=device).reshape(shape)
        else:  # RK45 gave up (a non-finite drift, a vanishing step): a diverged batch
            x = torch.full(shape, math.nan, dtype=dtype, device=device)
        state = {"i": 0, "t": start, "x": x, "nfev": len(calls), "message": message}
        if self.options.denoise:
            x = state["denoised"] = model.denoise(x, end)
        if callback is not None:
            callback(state)
        return x


class _NonFiniteStart(Exception):
    """The prior sample or the first drift is not finite: RK45 cannot choose a first step."""


SAMPLERS = (ProbabilityFlowODE,)
