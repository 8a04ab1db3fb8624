"""What a sweep will cost before it runs: nominal NFE per cell and a time estimate.

The estimate times one batch of model evaluations at the run's batch size (after one warm-up
call) and multiplies by every cell's nominal evaluations; the samplers' own arithmetic and the
metrics are not included, and adaptive samplers (no nominal NFE) are counted separately. For a
class-conditional model the unit is a network pass: a guided evaluation is two (one forward of
2B), counted as such wherever the scale is not 0 or 1 (an upper bound under a guidance interval).
"""

from __future__ import annotations

import math
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from bench.core.noise import prior_noise
from bench.errors import Unsupported
from bench.results.textui import table
from bench.run.components import Components
from bench.run.grid import Cell
from bench.run.setup import DTYPES, Environment, synchronize

PROBE_CALLS = 3


@dataclass
class Plan:
    """Per-cell nominal NFE (``None``: adaptive or unsupported) and the totals."""

    nfe: dict[str, int | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    seconds_per_call: float | None = None
    calls: int = 0  # batched network passes
    evaluations: int = 0  # NFE × samples
    passes: int = 0  # network passes × samples (= evaluations without guidance)
    passes_bound: bool = False  # a guidance interval: passes is an upper bound

    @property
    def seconds(self) -> float | None:
        return None if self.seconds_per_call is None else self.calls * self.seconds_per_call

    @property
    def adaptive(self) -> int:
        return sum(v is None for k, v in self.nfe.items() if k not in self.reasons)


def plan(cells: list[Cell], parts: Components, env: Environment) -> Plan:
    """The nominal work of ``cells`` and the measured cost of one batched evaluation."""
    out = Plan()
    for cell in cells:
        try:
            built = parts.build(cell)
            nfe = built.sampler.nfe_nominal(built.grid.steps)
        except Unsupported as exc:
            out.nfe[cell.id], out.reasons[cell.id] = None, exc.reason
            continue
        out.nfe[cell.id] = nfe
        if nfe is not None:
            passes = nfe * passes_per_evaluation(cell)
            out.calls += passes * math.ceil(cell.samples / cell.batch_size)
            out.evaluations += nfe * cell.samples
            out.passes += passes * cell.samples
            out.passes_bound |= cell.guidance_interval not in (None, "none")
    if cells:
        out.seconds_per_call = time_one_call(cells[0], parts, env)
    return out


def passes_per_evaluation(cell: Cell) -> int:
    """Network passes of one evaluation at most: 2 where guidance combines two outputs."""
    return 1 if cell.guidance is None or cell.guidance in (0.0, 1.0) else 2


def time_one_call(cell: Cell, parts: Components, env: Environment) -> float:
    """Seconds of one batched network pass at the cell's batch size (median of a few)."""
    sde = parts.sde(cell.sde, cell.steps or 1)
    fn = env.model_fn(sde) if not env.model.classes else one_pass(env, sde, cell.batch_size)
    z = prior_noise(cell.seed, 0, cell.batch_size, env.model.data_shape)
    x = sde.prior_sampling(z.to(env.device, DTYPES[cell.dtype]))
    t = 0.5 * (sde.T + sde.eps)
    times = []
    with torch.no_grad():
        for i in range(PROBE_CALLS + 1):
            synchronize(env.device)
            start = time.perf_counter()
            fn(x, t)
            synchronize(env.device)
            if i:  # the first call warms up
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def one_pass(env: Environment, sde: Any, size: int) -> Callable[[Tensor, float], Tensor]:
    """A conditional model's single pass (its conditional output, labels 0, 1, …)."""
    fn = env.conditional_fn(sde)
    labels = (torch.arange(size) % env.model.classes).to(env.device)
    return lambda x, t: fn(x, t, labels)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def summary(p: Plan) -> str:
    """One line: total evaluations and the estimated sampling time."""
    parts = [f"{p.evaluations:,} score evaluations (NFE × samples, nominal)"]
    if p.passes != p.evaluations:
        bound = "at most " if p.passes_bound else ""
        parts[0] += f", {bound}{p.passes:,} network passes (2 per guided evaluation)"
    if p.seconds is not None:
        parts.append(f"estimated sampling time ~{duration(p.seconds)} (from one timed batch")
        parts[-1] += "; metrics and the samplers' own arithmetic not included)"
    if p.adaptive:
        parts.append(f"plus {p.adaptive} adaptive cell(s) whose NFE is not known in advance")
    return textwrap.fill("; ".join(parts), width=100, break_on_hyphens=False)


def render(p: Plan, cells: list[Cell]) -> str:
    """The dry-run listing: one line per cell, then the totals."""
    rows = [
        {
            "sde": c.sde,
            "sampler": c.label,
            "schedule": c.schedule,
            "steps": c.steps,
            "snr": c.snr,
            **({"guidance": c.guidance} if c.guidance is not None else {}),
            "seed": c.seed,
            "samples": c.samples,
            "nfe_nominal": p.nfe.get(c.id) if c.id not in p.reasons else "unsupported",
            "note": p.reasons.get(c.id, ""),
        }
        for c in cells
    ]
    return f"{table(rows, list(rows[0]))}\n{len(cells)} cells; {summary(p)}" if rows else "no cells"
