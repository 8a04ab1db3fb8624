"""The probability-flow ODE with its log-density: the instantaneous change of variables.

For the probability-flow ODE dx/dt = f̃(x, t) = f(x, t) − ½g(t)²∇ₓlog p_t(x) (Song et al. 2021,
Eq. 13), the log-density of the data obeys (App. D.2, Eq. 39)

    log p_0(x(0)) = log p_T(x(T)) + ∫₀ᵀ ∇·f̃(x(t), t) dt,

integrated forward from the data x(0) to the prior. The divergence is estimated with the
Skilling–Hutchinson trace estimator (Eq. 40), ∇·f̃ = E_ε[εᵀ(∂f̃/∂x)ε] with E[εεᵀ] = I: one
vector–Jacobian product εᵀ(∂f̃/∂x) per probe, from one forward evaluation of the score. Each
probe ε is drawn once per solve and kept fixed over the whole trajectory (as the reference code
does: the integrand stays smooth, so the adaptive solver converges, and the estimate of the
integral is still unbiased). With ``exact`` probes the trace is summed over the D basis vectors
(D products per evaluation): the exact divergence, for small D.

The augmented state [x (B·D values), Δlogp (B·P values)] of a whole batch is one float64
vector, integrated by one adaptive Runge–Kutta solver (Dormand–Prince RK45 by default, as the
reference), so the batch shares its steps. The score runs in the model's dtype under
``torch.enable_grad`` — the suite samples under ``no_grad``; this module turns grad on itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from bench.core.sde import SDE
from bench.core.views import ModelView
from bench.errors import BenchError

PROBES = ("rademacher", "gaussian", "exact")
"""Trace estimators: Hutchinson's with Rademacher ±1 or standard-normal probes, or the exact
trace (D vector–Jacobian products per evaluation)."""

SOLVERS = ("RK45", "RK23", "DOP853")
"""scipy's explicit adaptive Runge–Kutta methods."""


@dataclass
class Trajectory:
    """One batch integrated from the data (t = eps) to the prior (t = T).

    Attributes:
        z: x(T), shaped like the batch, float64 on the CPU.
        delta_logp: ∫ ∇·f̃ dt per sample and probe, (B, P) (P = 1 for the exact trace).
        forwards: score evaluations of the batch (the view's counted calls; each is one NFE
            per sample). Equal to the solver's function evaluations.
        vjps: vector–Jacobian products of the batch (P per evaluation; D for the exact trace).
        steps: accepted solver steps.
        seconds: wall-clock of the solve.
    """

    z: Tensor
    delta_logp: Tensor
    forwards: int
    vjps: int
    steps: int
    seconds: float


def draw_probes(
    kind: str, count: int, shape: tuple[int, ...], generator: torch.Generator
) -> Tensor | None:
    """``count`` probes ε shaped like the batch, (P, B, ...) in float64; ``None`` for exact.

    Rademacher probes are ±1 with probability ½ each, Gaussian probes standard normal; both have
    E[εεᵀ] = I (Hutchinson 1989; Skilling 1989).
    """
    if kind == "exact":
        return None
    if kind == "rademacher":
        bits = torch.randint(0, 2, (count, *shape), generator=generator)
        return bits.to(torch.float64) * 2 - 1
    if kind == "gaussian":
        return torch.randn((count, *shape), generator=generator, dtype=torch.float64)
    raise BenchError(f"unknown probe kind {kind!r}; use one of {', '.join(PROBES)}")


def divergence(drift: Tensor, x: Tensor, probes: Tensor | None) -> tuple[Tensor, int]:
    """∇·f̃ per sample: (B, P) Hutchinson estimates, or (B, 1) exact; and the VJPs spent.

    Args:
        drift: f̃(x) computed from ``x`` with autograd on.
        x: the input (requires grad), (B, ...).
        probes: (P, B, ...) probes in x's dtype, or ``None`` for the exact trace.
    """
    B = x.shape[0]
    if probes is not None:
        out = []
        for p in range(probes.shape[0]):
            (vjp,) = torch.autograd.grad(
                drift, x, grad_outputs=probes[p], retain_graph=p < probes.shape[0] - 1
            )
            out.append((vjp * probes[p]).reshape(B, -1).sum(dim=1))
        return torch.stack(out, dim=1), probes.shape[0]
    D = x[0].numel()
    total = torch.zeros(B, dtype=x.dtype, device=x.device)
    for i in range(D):
        basis = torch.zeros_like(x).reshape(B, D)
        basis[:, i] = 1
        (vjp,) = torch.autograd.grad(
            drift, x, grad_outputs=basis.reshape(x.shape), retain_graph=i < D - 1
        )
        total += vjp.reshape(B, D)[:, i]
    return total[:, None], D


class AugmentedODE:
    """The right-hand side d[x, Δlogp]/dt = [f̃(x, t), ∇·f̃(x, t)] on a flat float64 state.

    Args:
        view: the model under the SDE (one counted evaluation per call of :meth:`__call__`).
        sde: the forward SDE (its drift, diffusion and probability-flow ODE).
        shape: the batch's shape (B, ...).
        probes: (P, B, ...) probes, or ``None`` for the exact trace.
        device, dtype: where and in which precision the score runs.
    """

    def __init__(
        self,
        view: ModelView,
        sde: SDE,
        shape: tuple[int, ...],
        probes: Tensor | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.flow = sde.reverse(view.score, probability_flow=True)  # drift f − ½g²s (Eq. 13)
        self.shape = shape
        self.size = math.prod(shape)
        self.probes = None if probes is None else probes.to(device, dtype)
        self.device, self.dtype = device, dtype
        self.vjps = 0
        self.calls = 0

    def __call__(self, t: float, y: np.ndarray) -> np.ndarray:
        self.calls += 1
        x = torch.from_numpy(y[: self.size]).reshape(self.shape)
        x = x.to(self.device, self.dtype).requires_grad_(True)
        with torch.enable_grad():
            drift, _ = self.flow.sde(x, float(t))
            if not drift.requires_grad:
                raise BenchError(
                    "the model's score does not depend on x under autograd (does it run under "
                    "torch.no_grad?); the likelihood needs its Jacobian"
                )
            div, vjps = divergence(drift, x, self.probes)
        self.vjps += vjps
        dx = drift.detach().to("cpu", torch.float64).numpy().ravel()
        return np.concatenate([dx, div.detach().to("cpu", torch.float64).numpy().ravel()])


def integrate_batch(
    view: ModelView,
    sde: SDE,
    x0: Tensor,
    probes: Tensor | None,
    *,
    eps: float,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "RK45",
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    on_time: Callable[[float], None] | None = None,
) -> Trajectory:
    """Integrate the augmented probability-flow ODE of one batch from t = eps to T.

    Args:
        view: the model under ``sde`` (it counts the forward evaluations).
        sde: the forward SDE.
        x0: the batch in the model's space (B, ...).
        probes: from :func:`draw_probes`, or ``None`` for the exact trace.
        eps: the start time (the value is log p_eps(x0): the reference uses 1e-5, §5.3).
        rtol, atol: the solver's tolerances (the paper: 1e-5 both, App. D.2).
        method: one of :data:`SOLVERS`.
        device, dtype: where and in which precision the score runs (default: x0's).
        on_time: called with the solver's time after every accepted step (progress).
    """
    from scipy import integrate  # 0.5-0.9 s to import: only when a likelihood is computed

    if method not in SOLVERS:
        raise BenchError(f"unknown ODE solver {method!r}; use one of {', '.join(SOLVERS)}")
    if not 0 < eps < sde.T:
        raise BenchError(f"eps must lie in (0, T) = (0, {sde.T:g}), got {eps}")
    device = device or x0.device
    dtype = dtype or x0.dtype
    shape = tuple(x0.shape)
    rhs = AugmentedODE(view, sde, shape, probes, device, dtype)
    P = 1 if probes is None else probes.shape[0]
    y0 = np.concatenate(
        [x0.detach().to("cpu", torch.float64).numpy().ravel(), np.zeros(shape[0] * P)]
    )
    calls = view.calls
    start = time.perf_counter()
    solver = getattr(integrate, method)(rhs, eps, y0, sde.T, rtol=rtol, atol=atol)
    steps = 0
    while solver.status == "running":
        message = solver.step()
        if solver.status == "failed":
            raise BenchError(f"the ODE solver failed at t = {solver.t:.6g}: {message}")
        steps += 1
        if on_time is not None:
            on_time(solver.t)
    y = torch.from_numpy(np.array(solver.y))
    if not bool(torch.isfinite(y).all()):
        raise BenchError("the probability-flow ODE produced non-finite values")
    return Trajectory(
        z=y[: rhs.size].reshape(shape),
        delta_logp=y[rhs.size :].reshape(shape[0], P),
        forwards=view.calls - calls,
        vjps=rhs.vjps,
        steps=steps,
        seconds=time.perf_counter() - start,
    )
