"""``bench profile``: what the sampling loop costs beside the score function.

For one model, SDE, sampler and batch size it times, in one process and on the same inputs:

* ``bare_forward`` — one batched score evaluation (median over calls, after warm-up);
* ``sde_bench`` — the suite's own sampler loop (any sampler) with NFE counting;
* ``minimal`` — for the paper's PC samplers on the uniform grid, a hand-written loop doing the
  same arithmetic with precomputed scalars (the floor for any eager implementation);
* ``reference`` — likewise, the loop structure of the paper's reference code: per-step time
  vectors on the device, discrete tables indexed by device tensors, per-sample step sizes.

Each full-loop variant runs ``repeats`` times; we report the median and the interquartile range.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from bench.core.model import ScoreModel
from bench.core.noise import SampleNoise, prior_noise
from bench.core.pc import PCSampler
from bench.core.sampler import Sampler
from bench.core.schedule import TimeGrid
from bench.core.sde import SDE
from bench.core.views import ModelFn, ModelView
from bench.run.profile_loops import hand_written_loops
from bench.run.setup import synchronize

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
    """One profiled configuration: the SDE on its time grid, the sampler, the model's native
    function and the starting batch."""

    sde: SDE
    grid: TimeGrid
    sampler: Sampler
    fn: ModelFn
    native: str
    x_T: Tensor
    device: torch.device
    seed: int = 0
    scheduler_config: dict[str, Any] | None = None

    def noise(self) -> Callable[[Tensor], Tensor]:
        return SampleNoise(self.seed, 0, self.x_T.shape[0])

    @property
    def score(self) -> ModelFn:
        """The score view of the model, uncounted (for the hand-written loops)."""
        return ModelView(self.fn, self.native, self.sde).score

    @property
    def pc(self) -> PCSampler | None:
        """The PC sampler on the paper's grid (where the hand-written loops apply), else None."""
        return self.sampler if isinstance(self.sampler, PCSampler) and self.grid.paper else None


def bare_forward(setup: Setup, calls: int, repeats: int) -> Measurement:
    """One batched model call: median over ``repeats`` blocks of ``calls`` calls."""
    grid = setup.grid.t[:-1]
    ts = [grid[i * len(grid) // calls] for i in range(calls)]
    x = setup.x_T

    def block() -> None:
        with torch.no_grad():
            for t in ts:
                setup.fn(x, t)

    times = [t / calls for t in timed(block, setup.device, repeats)]
    return Measurement("bare_forward", times, 1)


def suite_loop(setup: Setup) -> tuple[Loop, Callable[[], int]]:
    """The suite's own sampler loop, NFE counted."""
    view = ModelView(setup.fn, setup.native, setup.sde, setup.scheduler_config)

    def run(x_T: Tensor) -> Tensor:
        with torch.no_grad():
            return setup.sampler.sample(x_T, setup.grid, view, setup.noise())

    return run, lambda: view.calls


# -- orchestration ---------------------------------------------------------------------------------
def profile(setup: Setup, repeats: int, calls: int = 100) -> list[Measurement]:
    """Measure the variants; the loops run ``repeats`` times each, interleaved."""
    out = [bare_forward(setup, calls, repeats)]
    suite, counted = suite_loop(setup)
    loops: dict[str, Loop] = {"sde_bench": suite, **hand_written_loops(setup)}
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


def agreement(setup: Setup, other: Setup) -> float:
    """‖a − b‖/‖b‖ of the samples of two setups (e.g. compiled vs eager) on the same noise."""
    a = suite_loop(setup)[0](setup.x_T)
    b = suite_loop(other)[0](other.x_T)
    return float((a - b).double().norm() / b.double().norm())


def count_syncs(setup: Setup, short: Setup) -> float | None:
    """Host–device synchronisations per step of the suite's loop (CUDA only; None on CPU);
    ``short`` is the same setup on a grid of a few steps."""
    if setup.device.type != "cuda":
        return None
    steps = short.grid.steps
    run, _ = suite_loop(short)
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
    """The first ``batch`` prior samples of ``seed`` (as a sweep's first batch starts)."""
    return sde.prior_sampling(prior_noise(seed, 0, batch, model.data_shape).to(device, dtype))
