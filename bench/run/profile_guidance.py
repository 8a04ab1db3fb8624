"""``bench profile`` on a class-conditional model: one guided evaluation as one forward of 2B
(what the suite does, as diffusers does) against two forwards of B (conditional, then
unconditional) and the same combination ε(∅) + s·(ε(c) − ε(∅))."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.core.guidance import NULL_LABEL, ConditionalFn, Guidance, GuidedFn
from bench.run.profile import Measurement, Setup, timed


def guided_batch(
    setup: Setup, fn: ConditionalFn, labels: Tensor, scale: float, calls: int, repeats: int
) -> list[Measurement]:
    """``guided_2b`` and ``two_passes``: seconds per guided evaluation (median of ``repeats``
    blocks of ``calls`` evaluations, the two interleaved) at a scale that guides (2 if
    ``scale`` is 0 or 1)."""
    s = scale if scale not in (0.0, 1.0) else 2.0
    guided = GuidedFn(fn, Guidance(s), setup.sde)
    guided.labels = labels
    null = torch.full_like(labels, NULL_LABEL)
    grid = setup.grid.t[:-1]
    ts = [grid[i * len(grid) // calls] for i in range(calls)]
    x = setup.x_T

    def one_forward() -> None:
        with torch.no_grad():
            for t in ts:
                guided(x, t)

    def two_forwards() -> None:
        with torch.no_grad():
            for t in ts:
                cond, uncond = fn(x, t, labels), fn(x, t, null)
                uncond + (cond - uncond) * s

    times: dict[str, list[float]] = {"guided_2b": [], "two_passes": []}
    for _ in range(repeats):  # interleaved, so slow drifts of the machine hit both alike
        times["guided_2b"] += timed(one_forward, setup.device, 1)
        times["two_passes"] += timed(two_forwards, setup.device, 1)
    return [Measurement(name, [v / calls for v in t], 1) for name, t in times.items()]
