"""``bench profile``: what the sampling loop costs beside the score function.

For one model, SDE, sampler and batch size it times, in one process and on the same inputs:

* ``bare_forward`` — one batched score evaluation (median over calls, after warm-up);
* ``sde_bench`` — the suite's own :func:`bench.core.pc.pc_sample` with NFE counting;
* ``minimal`` — a hand-written loop doing the same arithmetic with precomputed scalars
  (the floor for any eager implementation);
* ``reference`` — the loop structure of the paper's reference code: per-step time vectors on the
  device, discrete tables indexed by device tensors, per-sample step-size vectors.

Each full-loop variant runs ``repeats`` times; we report the median and the interquartile range.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from bench.core.components import ScoreModel
from bench.core.pc import CountingScore, pc_sample
from bench.core.sde import SDE
from bench.run.cells import step_noise, synchronize

Loop = Callable[[Tensor], Tensor]


@dataclass
class Measurement:
    variant: str
    times: list[float]
    calls: int  # score evaluations per run (per call for bare_forward)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        """The least-disturbed run (timeit's estimator on a noisy machine)."""
        return min(self.times)

    @property
    def iqr(self) -> float:
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4)
        return q[2] - q[0]


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    """Wall times of ``fn`` (device-synchronised), after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        out.append(time.perf_counter() - start)
    return out


# -- the variants ----------------------------------------------------------------------------------
@dataclass
class Setup:
    sde: SDE
    score: Callable[[Tensor, float], Tensor]
    predictor: str
    corrector: str
    snr: float
    corrector_steps: int
    x_T: Tensor
    device: torch.device
    seed: int = 0

    def noise(self) -> Callable[[Tensor], Tensor]:
        return step_noise(self.seed, 0, self.device)


def bare_forward(setup: Setup, calls: int, repeats: int) -> Measurement:
    """One batched score call: median over ``repeats`` blocks of ``calls`` calls."""
    grid = setup.sde.timesteps()
    ts = [grid[i * len(grid) // calls] for i in range(calls)]
    x = setup.x_T

    def block() -> None:
        for t in ts:
            setup.score(x, t)

    times = [t / calls for t in timed(block, setup.device, repeats)]
    return Measurement("bare_forward", times, 1)


def suite_loop(setup: Setup, registry: Any) -> tuple[Loop, Callable[[], int]]:
    """The suite's own PC loop, NFE counted."""
    counter = CountingScore(setup.score)
    predictor_cls = registry.get("predictors", setup.predictor).obj
    corrector_cls = registry.get("correctors", setup.corrector).obj

    def run(x_T: Tensor) -> Tensor:
        noise = setup.noise()
        predictor = predictor_cls(setup.sde, counter, False, noise)
        corrector = corrector_cls(setup.sde, counter, setup.snr, setup.corrector_steps, noise)
        return pc_sample(setup.sde, predictor, corrector, x_T)

    return run, lambda: counter.calls


def _linear_drift(sde: SDE, t: float, device: torch.device) -> tuple[float, float]:
    """(c_i, G_i) of the forward discretisation f_i = c_i·x, for SDEs with linear drift."""
    one = torch.ones(1, 1, dtype=torch.float64, device=device)
    f, G = sde.discretize(one, t)
    return float(f), float(G)


def minimal_loop(setup: Setup) -> Loop:
    """The same arithmetic as the paper's samplers, written out with precomputed scalars."""
    sde, score, snr, n = setup.sde, setup.score, setup.snr, setup.corrector_steps
    steps = []
    for t in sde.timesteps():
        if setup.predictor == "euler_maruyama":
            c = float(sde.sde(torch.ones(1, 1, dtype=torch.float64), t)[0])
            g = sde.sde(torch.ones(1, 1, dtype=torch.float64), t)[1]
            pred = (1 - c / sde.N, g * g / sde.N, g / math.sqrt(sde.N))
        elif setup.predictor == "reverse_diffusion":
            c, G = _linear_drift(sde, t, torch.device("cpu"))
            pred = (1 - c, G * G, G)
        elif setup.predictor == "ancestral_sampling":
            pred = tuple(sde.ancestral_coefficients(t))
        else:
            pred = None
        alpha = sde.langevin_alpha(t) if setup.corrector != "none" else 1.0
        std = sde.marginal_coef(t)[1]
        steps.append((t, pred, alpha, 2 * alpha * (snr * std) ** 2))
    batch = setup.x_T.shape[0]

    def run(x: Tensor) -> Tensor:
        randn = setup.noise()
        x_mean = x
        for t, pred, alpha, ald_step in steps:
            for _ in range(n if setup.corrector != "none" else 0):
                s = score(x, t)
                z = randn(x)
                if setup.corrector == "langevin":
                    ratio = (
                        z.reshape(batch, -1).norm(dim=-1).mean()
                        / s.reshape(batch, -1).norm(dim=-1).mean()
                    )
                    eps = (2 * alpha * snr * snr) * ratio.square()
                    x_mean = torch.addcmul(x, eps, s)
                    x = torch.addcmul(x_mean, (2 * eps).sqrt(), z)
                else:
                    x_mean = torch.add(x, s, alpha=ald_step)
                    x = torch.add(x_mean, z, alpha=math.sqrt(2 * ald_step))
            if pred is None:
                x_mean = x  # the `none` predictor returns (x, x), as in the reference
            else:
                a, b, c = pred
                s = score(x, t)
                x_mean = torch.add(x if a == 1.0 else a * x, s, alpha=b)
                x = torch.add(x_mean, randn(x), alpha=c)
        return x_mean

    return run


def reference_loop(setup: Setup) -> Loop:
    """The reference code's loop structure (score_sde ``sampling.py``), same arithmetic.

    Per step: a length-B time vector on the device, the discrete index as a device tensor,
    table lookups by that tensor, per-sample coefficients broadcast with a view. The score
    function is the same as the other variants' (it takes the float t of this suite's API).
    """
    sde, score, device = setup.sde, setup.score, setup.device
    N, T = sde.N, sde.T
    timesteps = torch.linspace(T, sde.eps, N, device=device)
    float_t = sde.timesteps()
    uses_tables = setup.predictor == "reverse_diffusion" or setup.corrector != "none"
    tables = _reference_tables(sde, device, setup.x_T.dtype) if uses_tables else {}
    batch = setup.x_T.shape[0]
    view = (-1,) + (1,) * (setup.x_T.dim() - 1)

    def corrector(
        x: Tensor, t: float, vec_t: Tensor, timestep: Tensor, randn
    ) -> tuple[Tensor, Tensor]:
        x_mean = x
        for _ in range(setup.corrector_steps):
            grad = score(x, t)
            noise = randn(x)
            alpha = tables["alpha"][timestep] if "alpha" in tables else torch.ones_like(vec_t)
            if setup.corrector == "langevin":
                grad_norm = torch.norm(grad.reshape(batch, -1), dim=-1).mean()
                noise_norm = torch.norm(noise.reshape(batch, -1), dim=-1).mean()
                step_size = (setup.snr * noise_norm / grad_norm) ** 2 * 2 * alpha
            else:
                std = torch.full_like(vec_t, sde.marginal_coef(t)[1])
                step_size = (setup.snr * std) ** 2 * 2 * alpha
            x_mean = x + step_size.view(view) * grad
            x = x_mean + torch.sqrt(step_size * 2).view(view) * noise
        return x, x_mean

    def predictor(
        x: Tensor, t: float, vec_t: Tensor, timestep: Tensor, randn
    ) -> tuple[Tensor, Tensor]:
        if setup.predictor == "euler_maruyama":
            dt = -1.0 / N
            drift, diffusion = _reference_sde(sde, x, vec_t)
            drift = drift - (diffusion**2).view(view) * score(x, t)
            x_mean = x + drift * dt
            return x_mean + diffusion.view(view) * math.sqrt(-dt) * randn(x), x_mean
        f, G = _reference_discretize(sde, tables, x, vec_t, timestep)
        x_mean = x - (f - (G**2).view(view) * score(x, t))
        return x_mean + G.view(view) * randn(x), x_mean

    def run(x: Tensor) -> Tensor:
        randn = setup.noise()
        x_mean = x
        for i in range(N):
            vec_t = torch.ones(batch, device=device) * timesteps[i]
            timestep = (vec_t * (N - 1) / T).long()
            if setup.corrector != "none":
                x, x_mean = corrector(x, float_t[i], vec_t, timestep, randn)
            if setup.predictor != "none":
                x, x_mean = predictor(x, float_t[i], vec_t, timestep, randn)
            else:
                x_mean = x
        return x_mean

    return run


REFERENCE_PREDICTORS = ("euler_maruyama", "reverse_diffusion", "none")
MINIMAL_PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none")
REFERENCE_CORRECTORS = ("langevin", "ald", "none")


def _reference_tables(sde: SDE, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    N = sde.N
    out: dict[str, Tensor] = {}
    if sde.name == "ve":
        out["sigmas"] = torch.tensor(
            [sde.discrete_sigma(k) for k in range(N)], dtype=dtype, device=device
        )
    else:
        betas = torch.tensor([sde.discrete_beta(k) for k in range(N)], dtype=dtype, device=device)
        out["betas"], out["alpha"] = betas, 1 - betas
    return out


def _reference_sde(sde: SDE, x: Tensor, vec_t: Tensor) -> tuple[Tensor, Tensor]:
    """Drift and per-sample diffusion with the time as a device vector (reference ``sde()``)."""
    view = (-1,) + (1,) * (x.dim() - 1)
    if sde.name == "ve":
        sigma = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** vec_t
        return torch.zeros_like(x), sigma * math.sqrt(
            2 * (math.log(sde.sigma_max) - math.log(sde.sigma_min))
        )
    beta_t = sde.beta_min + vec_t * (sde.beta_max - sde.beta_min)
    drift = -0.5 * beta_t.view(view) * x
    if sde.name == "vp":
        return drift, torch.sqrt(beta_t)
    discount = 1.0 - torch.exp(-2 * sde.beta_min * vec_t - (sde.beta_max - sde.beta_min) * vec_t**2)
    return drift, torch.sqrt(beta_t * discount)


def _reference_discretize(sde, tables, x, vec_t, timestep):
    """Forward discretisation as the reference writes it, with device-side tables."""
    view = (-1,) + (1,) * (x.dim() - 1)
    if sde.name == "ve":
        sigma = tables["sigmas"][timestep]
        adjacent = torch.where(
            timestep == 0, torch.zeros_like(vec_t), tables["sigmas"][(timestep - 1).clamp(min=0)]
        )
        return torch.zeros_like(x), torch.sqrt(sigma**2 - adjacent**2)
    if sde.name == "vp":
        beta = tables["betas"][timestep]
        return torch.sqrt(1 - beta).view(view) * x - x, torch.sqrt(beta)
    drift, diffusion = _reference_sde(sde, x, vec_t)  # sub-VP: Euler–Maruyama discretisation
    return drift / sde.N, diffusion / math.sqrt(sde.N)


# -- orchestration ---------------------------------------------------------------------------------
def profile(setup: Setup, registry: Any, repeats: int, calls: int = 100) -> list[Measurement]:
    """Measure the four variants; the loops run ``repeats`` times each, interleaved."""
    out = [bare_forward(setup, calls, repeats)]
    suite, counted = suite_loop(setup, registry)
    loops: dict[str, Loop] = {"sde_bench": suite}
    if setup.predictor in MINIMAL_PREDICTORS and setup.corrector in REFERENCE_CORRECTORS:
        loops["minimal"] = minimal_loop(setup)
    if (
        setup.predictor in REFERENCE_PREDICTORS
        and setup.corrector in REFERENCE_CORRECTORS
        and setup.sde.name in ("ve", "vp", "subvp")
    ):
        loops["reference"] = reference_loop(setup)
    before = counted()
    suite(setup.x_T)
    nfe = counted() - before
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):  # interleaved, so slow drifts of the machine hit all variants alike
        for name, loop in loops.items():
            times[name] += timed(lambda loop=loop: loop(setup.x_T), setup.device, 1)
    out += [Measurement(name, t, nfe) for name, t in times.items()]
    return out


COMPILE_TOLERANCE = {"float64": 1e-9, "float32": 1e-3, "bf16": 5e-2, "fp16": 5e-2}  # per --dtype
"""Largest ‖compiled − eager‖/‖eager‖ of whole-run samples accepted as "within float tolerance".

Compiled kernels fuse and reorder floating-point operations, so the samples differ by rounding
that the sampler then carries through every step; these bounds are far above that (5.5e-7 for
digits-vp, 50 Euler–Maruyama steps in float32) and far below a wrong graph.
"""


def agreement(setup: Setup, other: Setup, registry: Any) -> float:
    """‖a − b‖/‖b‖ of the samples of two setups (e.g. compiled vs eager) on the same noise."""
    a = suite_loop(setup, registry)[0](setup.x_T)
    b = suite_loop(other, registry)[0](other.x_T)
    return float((a - b).double().norm() / b.double().norm())


def count_syncs(setup: Setup, registry: Any, steps: int = 5) -> float | None:
    """Host–device synchronisations per step of the suite's loop (CUDA only; None on CPU)."""
    if setup.device.type != "cuda":
        return None
    short = type(setup.sde)(steps, setup.sde.options)
    run, _ = suite_loop(Setup(**{**setup.__dict__, "sde": short}), registry)
    run(setup.x_T)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(setup.x_T)
            torch.cuda.synchronize(setup.device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def rows(measurements: list[Measurement], base: dict[str, Any]) -> list[dict[str, Any]]:
    """Results rows, one per variant, with ratios against the minimal loop and bare forward."""
    by = {m.variant: m for m in measurements}
    forward = by["bare_forward"]
    floor = by.get("minimal")
    out = []
    for m in measurements:
        loop = m.variant != "bare_forward"
        out.append(
            {
                **base,
                "variant": m.variant,
                "wall_s": m.median,
                "wall_s_iqr": m.iqr,
                "wall_s_min": m.best,
                "repeats": len(m.times),
                "nfe": m.calls if loop else None,
                "s_per_nfe": m.median / m.calls,
                "ratio_vs_bare_forward": (m.median / m.calls) / forward.median,
                "ratio_vs_bare_forward_min": (m.best / m.calls) / forward.best,
                "ratio_vs_minimal": m.median / floor.median if loop and floor else None,
                "ratio_vs_minimal_min": m.best / floor.best if loop and floor else None,
            }
        )
    return out


def default_x(
    model: ScoreModel, sde: SDE, batch: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> Tensor:
    from bench.run.cells import prior_noise

    return sde.prior_sampling(prior_noise(seed, 0, batch, model.data_shape).to(device, dtype))
