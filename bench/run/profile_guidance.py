"""``bench profile`` on a class-conditional model: one guided evaluation of the suite
(:class:`bench.core.guidance.GuidedFn`) as one forward of 2B (``guided_2b``, diffusers' way) and
as two forwards of B (``guided_split``), against a hand-written pair of forwards of B
(conditional, then unconditional) and the same combination ε(∅) + s·(ε(c) − ε(∅))
(``two_passes``)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from bench.core.guidance import NULL_LABEL, ConditionalFn, Guidance, GuidedFn
from bench.run.profile import Measurement, Setup, timed


def guided_batch(
    setup: Setup, fn: ConditionalFn, labels: Tensor, scale: float, calls: int, repeats: int
) -> list[Measurement]:
    """``guided_2b``, ``guided_split`` and ``two_passes``: seconds per guided evaluation (median
    of ``repeats`` blocks of ``calls`` evaluations, the three interleaved) at a scale that guides
    (2 if ``scale`` is 0 or 1)."""
    s = scale if scale not in (0.0, 1.0) else 2.0
    joint, split = (GuidedFn(fn, Guidance(s), setup.sde, j) for j in (True, False))
    joint.labels = split.labels = labels
    null = torch.full_like(labels, NULL_LABEL)
    grid = setup.grid.t[:-1]
    ts = [grid[i * len(grid) // calls] for i in range(calls)]
    x = setup.x_T

    def suite(guided: GuidedFn) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for t in ts:
                    guided(x, t)

        return run

    def two_forwards() -> None:
        with torch.no_grad():
            for t in ts:
                cond, uncond = fn(x, t, labels), fn(x, t, null)
                uncond + (cond - uncond) * s

    variants = {"guided_2b": suite(joint), "guided_split": suite(split), "two_passes": two_forwards}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved, so slow drifts of the machine hit all alike
        for name, run in variants.items():
            times[name] += timed(run, setup.device, 1)
    return [Measurement(name, [v / calls for v in t], 1) for name, t in times.items()]
