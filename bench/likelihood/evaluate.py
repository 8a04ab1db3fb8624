"""Negative log-likelihood of data under a score model's probability-flow ODE, with its CI.

:func:`evaluate` integrates the augmented ODE of :mod:`bench.likelihood.ode` over batches of
data points (each batch one solve, as the reference code flattens a batch into one vector),
``repeats`` times with fresh dequantisation noise and fresh probes, and returns every estimate;
:meth:`Likelihood.summary` reduces them to the mean with a Student-t interval over data points.

Log-density at the end of the integration is log p_T(x(T)) + Δlogp (Song et al. 2021, Eq. 39),
with p_T the SDE's prior (``prior="sde"``, the reference's choice) or, for the exact oracles,
the exact marginal p_T (``prior="exact"``): then the result is exactly log p_eps(x0) up to the
solver's and the trace estimator's errors.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from bench.core.model import ScoreModel
from bench.core.noise import derive_seed
from bench.core.sde import SDE
from bench.core.views import ModelFn, ModelView
from bench.errors import BenchError
from bench.likelihood import data as data_mod
from bench.likelihood.ode import PROBES, SOLVERS, draw_probes, integrate_batch

PRIORS = ("sde", "exact")


@dataclass(frozen=True)
class Settings:
    """How the likelihood is estimated.

    Attributes:
        probes: Hutchinson probes per data point (each one more VJP per evaluation).
        hutchinson: ``rademacher``, ``gaussian`` or ``exact`` (the full trace: D VJPs).
        rtol, atol: the adaptive solver's tolerances (paper: 1e-5, App. D.2).
        eps: the start time of the integration (the reference: 1e-5 for every SDE).
        method: ``RK45`` (Dormand–Prince, the reference), ``RK23`` or ``DOP853``.
        batch_size: data points per solve (they share the solver's steps).
        repeats: solves per point with fresh dequantisation noise and probes (the reference
            averages 5 over the test set).
        dequantize: uniform dequantisation of 8-bit levels (``None``: for dataset images, not
            for exact draws from a continuous p_0).
        bits: the image bit depth of the dequantisation and of the bpd offset.
        prior: ``sde`` (the SDE's prior, as the reference) or ``exact`` (exact models' p_T).
        seed: fixes the probes and the dequantisation noise.
    """

    probes: int = 1
    hutchinson: str = "rademacher"
    rtol: float = 1e-5
    atol: float = 1e-5
    eps: float = 1e-5
    method: str = "RK45"
    batch_size: int = 1000
    repeats: int = 1
    dequantize: bool | None = None
    bits: int = 8
    prior: str = "sde"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.hutchinson in PROBES, f"hutchinson must be one of {', '.join(PROBES)}"),
            (self.method in SOLVERS, f"method must be one of {', '.join(SOLVERS)}"),
            (self.prior in PRIORS, f"prior must be one of {', '.join(PRIORS)}"),
            (self.probes >= 1 and self.repeats >= 1, "probes and repeats must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.rtol > 0 and self.atol > 0, "rtol and atol must be > 0"),
            (0 < self.eps < 1, "eps must lie in (0, 1)"),
            (1 <= self.bits <= 16, "bits must lie in 1..16"),
        ]
        for ok, message in checks:
            if not ok:
                raise BenchError(f"likelihood settings: {message}")


@dataclass
class Likelihood:
    """Every estimate of one (model, SDE, data) evaluation.

    Attributes:
        logp: data-space log-density per point, repeat and probe, (n, R, P), nats.
        bpd: the same in bits per dimension (with the dequantisation offset for images).
        dim: D, values per data point.
        forwards, vjps, steps, seconds: per solve (one solve = one batch of one repeat).
        sizes: points per solve.
    """

    sde: str
    data: str
    settings: Settings
    dequantized: bool
    dim: int
    logp: Tensor
    bpd: Tensor
    forwards: list[int] = field(default_factory=list)
    vjps: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    exact: Tensor | None = None
    """Closed-form log p_eps of each point (data space; exact mixtures without dequantisation)."""

    def summary(self, confidence: float = 0.95) -> dict[str, Any]:
        """Means with ``confidence`` intervals, NFE and time, as one flat JSON-ready dict.

        ``nll``/``bpd`` are the means over points of each point's mean over repeats and probes;
        ``*_ci`` the half-width of the Student-t interval over points (data, dequantisation and
        probe noise together: what another test set would vary by); ``*_probe_se`` the standard
        error from the probes and dequantisation alone at these points (NaN with one estimate per
        point). ``nfe`` is the forward evaluations per point's trajectory (= the solver's function
        evaluations, mean over solves; ``nfe_min``/``nfe_max``), ``vjp`` the vector–Jacobian
        products per point (probes × nfe, or D × nfe for the exact trace).
        """
        n = self.logp.shape[0]
        nll = -self.logp.reshape(n, -1)
        bpd = self.bpd.reshape(n, -1)
        solves = len(self.forwards)
        return {
            "sde": self.sde,
            "data": self.data,
            "points": n,
            "dim": self.dim,
            "dequantized": self.dequantized,
            "nll": float(nll.mean()),
            "nll_ci": halfwidth(nll.mean(1), confidence),
            "nll_probe_se": probe_se(nll),
            "bpd": float(bpd.mean()),
            "bpd_ci": halfwidth(bpd.mean(1), confidence),
            "bpd_probe_se": probe_se(bpd),
            "confidence": confidence,
            "nfe": sum(self.forwards) / solves,
            "nfe_min": min(self.forwards),
            "nfe_max": max(self.forwards),
            "vjp": sum(self.vjps) / solves,
            "solver_steps": sum(self.steps) / solves,
            "solves": solves,
            "seconds": sum(self.seconds),
            "s_per_point": sum(self.seconds) / (n * self.settings.repeats),
            **self._exact_columns(confidence),
            **{f"setting_{k}": v for k, v in dataclasses.asdict(self.settings).items()},
        }

    def _exact_columns(self, confidence: float) -> dict[str, float]:
        """``nll_exact`` (closed form at the same points) and the estimate's error against it,
        ``nll_error`` ± ``nll_error_ci`` (paired over points: the estimator's own noise)."""
        if self.exact is None:
            return {}
        error = -self.logp.reshape(self.logp.shape[0], -1).mean(1) + self.exact
        return {
            "nll_exact": float(-self.exact.mean()),
            "nll_error": float(error.mean()),
            "nll_error_ci": halfwidth(error, confidence),
            "nll_error_max": float(error.abs().max()),
        }


def halfwidth(values: Tensor, confidence: float = 0.95) -> float:
    """Half-width of the Student-t interval for the mean of ``values`` (NaN for one value)."""
    from scipy import stats

    n = values.numel()
    if n < 2:
        return math.nan
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    return t * float(values.std()) / math.sqrt(n)


def probe_se(estimates: Tensor) -> float:
    """Standard error of the mean over points from the within-point spread alone, (n, k)."""
    n, k = estimates.shape
    if k < 2:
        return math.nan
    return math.sqrt(float(estimates.var(dim=1).sum()) / k) / n


def differentiable_fn(
    model: ScoreModel, sde: SDE, device: torch.device, dtype: torch.dtype
) -> ModelFn:
    """The model's native function with autograd through x.

    The suite samples under ``no_grad`` and some models decorate their function with
    ``torch.no_grad()``; its undecorated original (``__wrapped__``) is used then. One
    uncounted evaluation of one point checks this.
    """
    fn = model.native_fn(sde)
    x = torch.zeros(1, *model.data_shape, device=device, dtype=dtype, requires_grad=True)
    for candidate in (fn, getattr(fn, "__wrapped__", None)):
        if candidate is None:
            continue
        with torch.enable_grad():
            if candidate(x, 0.5).requires_grad:
                return candidate
    raise BenchError(
        f"the score of model {model.spec!r} is not differentiable in x (it runs under "
        "torch.no_grad); the likelihood needs its Jacobian"
    )


def evaluate(
    model: ScoreModel,
    sde: SDE,
    points: Tensor,
    settings: Settings,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    data: str = "",
    progress: bool = False,
) -> Likelihood:
    """Estimate log p_eps of each data point (data space) through the probability-flow ODE.

    Args:
        model: the score model (``check_sde`` is the caller's).
        sde: the forward SDE whose probability-flow ODE is integrated.
        points: data-space points (n, ...): images in [0, 1] or an exact model's draws.
        settings: see :class:`Settings`.
        device, dtype: where and in which precision the score runs.
        data: a description of the points, for the summary.
        progress: a bar on stderr (advancing with the solver's time).
    """
    dmap = data_mod.DataMap.of(model)
    dequant = settings.dequantize if settings.dequantize is not None else not model.exact
    n, dim = points.shape[0], math.prod(points.shape[1:])
    view = ModelView(differentiable_fn(model, sde, device, dtype), model.native, sde)
    prior = _prior(model, sde, settings.prior)
    levels = data_mod.quantize(points, settings.bits) if dequant else None
    P = 1 if settings.hutchinson == "exact" else settings.probes
    logp = torch.empty(n, settings.repeats, P, dtype=torch.float64)
    out = Likelihood(sde.name, data, settings, dequant, dim, logp, logp)
    batches = [(s, min(settings.batch_size, n - s)) for s in range(0, n, settings.batch_size)]
    with _Bar(len(batches) * settings.repeats, f"likelihood {sde.name}", progress) as bar:
        for r in range(settings.repeats):
            generator = torch.Generator().manual_seed(derive_seed(settings.seed, 2, r))
            probes = draw_probes(settings.hutchinson, settings.probes, points.shape, generator)
            x = points if levels is None else data_mod.dequantize(levels, generator, settings.bits)
            y = dmap.to_model(x)
            for start, size in batches:
                part = None if probes is None else probes[:, start : start + size]
                traj = integrate_batch(
                    view,
                    sde,
                    y[start : start + size],
                    part,
                    eps=settings.eps,
                    rtol=settings.rtol,
                    atol=settings.atol,
                    method=settings.method,
                    device=device,
                    dtype=dtype,
                    on_time=bar.at,
                )
                bar.next_solve()
                model_logp = prior(traj.z)[:, None] + traj.delta_logp
                logp[start : start + size, r] = dmap.logp_to_data(model_logp, dim)
                _record(out, traj, size)
    out.bpd = data_mod.bits_per_dim(logp, dim, settings.bits if dequant else None)
    if not dequant and hasattr(model, "mixture"):
        exact = data_mod.mixture_logp(model, sde, dmap.to_model(points), settings.eps)
        out.exact = dmap.logp_to_data(exact, dim)
    return out


def _record(out: Likelihood, traj: Any, size: int) -> None:
    out.forwards.append(traj.forwards)
    out.vjps.append(traj.vjps)
    out.steps.append(traj.steps)
    out.seconds.append(traj.seconds)
    out.sizes.append(size)


def _prior(model: ScoreModel, sde: SDE, kind: str) -> Callable[[Tensor], Tensor]:
    """log p_T(z) per sample: the SDE's prior, or an exact model's marginal at T."""
    if kind == "sde":
        return sde.prior_logp
    if not model.exact or not hasattr(model, "mixture"):
        raise BenchError(f"--prior exact needs an exact Gaussian-mixture model, not {model.spec!r}")
    return lambda z: data_mod.mixture_logp(model, sde, z, sde.T)


class _Bar:
    """A progress bar over solves that advances with each solve's time t ∈ [eps, T]."""

    def __init__(self, solves: int, desc: str, enabled: bool) -> None:
        self.bar: Any = None
        self.done = 0.0
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=float(solves),
                desc=desc,
                unit="solve",
                file=sys.stderr,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.0f} solves "
                "[{elapsed}<{remaining}]",
            )

    def __enter__(self) -> _Bar:
        return self

    def at(self, t: float) -> None:
        if self.bar is not None:
            self.bar.n = self.done + min(max(t, 0.0), 1.0)
            self.bar.refresh()

    def next_solve(self) -> None:
        self.done += 1
        self.at(0.0)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
