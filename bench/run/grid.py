"""The sweep grid: cells (one configuration each), their stable ids, and seed parsing."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Protocol

from bench.core.pc import PCSampler
from bench.errors import BenchError


@dataclass(frozen=True)
class Cell:
    """One grid point. Its id is a hash of everything that defines the result of the cell.

    ``sampler`` is ``pc`` for the paper's predictor–corrector family, whose predictor, corrector,
    probability flow, SNR, corrector steps and noise removal (``denoise``) are fields of their
    own; for every other sampler they are ``None``. ``schedule`` is ``NAME`` or ``NAME:ARG``.
    A class-conditional model's cells carry the guidance scale, the label policy and the
    guidance interval (``"LO,HI"`` in σ, or ``"none"``); an unconditional model's cells have
    ``None`` there, and those fields are left out of the id, which is the id such a cell had
    before conditional models existed.
    """

    model: str
    sde: str
    sampler: str
    schedule: str
    predictor: str | None
    corrector: str | None
    probability_flow: bool | None
    steps: int | None
    snr: float | None
    corrector_steps: int | None
    seed: int
    samples: int
    batch_size: int
    denoise: bool | None
    dtype: str
    metrics: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    guidance: float | None = None
    labels: str | None = None
    guidance_interval: str | None = None

    def config(self) -> dict[str, Any]:
        """The defining configuration, JSON-ready (component options resolved)."""
        cfg = asdict(self)
        cfg["metrics"] = list(self.metrics)
        if self.guidance is None:  # an unconditional cell keeps its id
            for key in CONDITIONAL_FIELDS:
                del cfg[key]
        return cfg

    @property
    def id(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def is_pc(self) -> bool:
        return self.predictor is not None

    @property
    def label(self) -> str:
        """``predictor[(pf)]+corrector`` for PC cells, else ``sampler``; ``[schedule]`` added
        off the sampler's usual grid is left to reports (they know the whole run)."""
        if not self.is_pc:
            return self.sampler
        pf = "(pf)" if self.probability_flow else ""
        return f"{self.predictor}{pf}+{self.corrector}"


CONDITIONAL_FIELDS = ("guidance", "labels", "guidance_interval")
"""Cell fields that only a class-conditional model's cells have."""


@dataclass(frozen=True)
class GridSpec:
    """The lists the user asked for; the grid is their product.

    ``samplers`` lists whole samplers, ``pc`` among them when the predictor–corrector family is
    swept (over ``predictors`` × ``correctors`` × ``probability_flow`` × ``snrs`` ×
    ``corrector_steps``). ``schedules`` is ``None`` to give each sampler its default schedule.
    """

    model: str
    sdes: tuple[str, ...]
    samplers: tuple[str, ...]
    schedules: tuple[str, ...] | None
    predictors: tuple[str, ...]
    correctors: tuple[str, ...]
    steps: tuple[int, ...]
    snrs: tuple[float, ...]
    corrector_steps: tuple[int, ...]
    probability_flow: tuple[bool, ...]
    seeds: tuple[int, ...]
    samples: int
    batch_size: int
    denoise: bool
    dtype: str
    metrics: tuple[str, ...]
    guidance: tuple[float, ...] = ()
    """Guidance scales of a class-conditional model (empty: an unconditional model)."""
    labels: str = "balanced"
    guidance_interval: str | None = None


class GridParts(Protocol):
    """What expanding a grid needs to know about its components (:class:`Components`)."""

    def default_schedule(self, sampler: str) -> str: ...

    def fixed_steps(self, schedule: str) -> int | None: ...

    def uses_steps(self, sampler: str) -> bool: ...

    def resolved_options(self, cell: dict[str, Any]) -> dict[str, Any]: ...


def expand(spec: GridSpec, parts: GridParts) -> list[Cell]:
    """Every cell of the grid, deduplicated where a dimension does not apply.

    ``snr`` and ``corrector_steps`` mean nothing without a corrector, ``probability_flow``
    nothing without a predictor, and none of the PC fields anything for other samplers, so such
    cells collapse to one with ``None``/``False``. A schedule that fixes its own number of steps
    (``file:``), and a sampler to which steps mean nothing (``ode``), collapse ``--steps``.
    """
    cells: dict[str, Cell] = {}
    for kwargs in _with_guidance(spec, _points(spec, parts)):
        steps = parts.fixed_steps(kwargs["schedule"]) or kwargs["steps"]
        if not parts.uses_steps(kwargs["sampler"]):
            steps = None
        kwargs.update(
            model=spec.model,
            steps=steps,
            samples=spec.samples,
            batch_size=min(spec.batch_size, spec.samples),
            dtype=spec.dtype,
            metrics=spec.metrics,
        )
        cell = Cell(**kwargs, options=parts.resolved_options(kwargs))
        cells.setdefault(cell.id, cell)
    return list(cells.values())


def _points(spec: GridSpec, parts: GridParts) -> Iterable[dict[str, Any]]:
    """The grid's points before deduplication: sampler fields, schedule, SDE, steps, seed."""
    for sampler in spec.samplers:
        schedules = spec.schedules or (parts.default_schedule(sampler),)
        common = itertools.product(spec.sdes, schedules, spec.steps, spec.seeds)
        for sde, schedule, steps, seed in common:
            point = dict(sde=sde, sampler=sampler, schedule=schedule, steps=steps, seed=seed)
            if sampler != PCSampler.name:
                yield {**point, **NOT_PC}
                continue
            for fields in _pc_fields(spec):
                yield {**point, **fields}


def _with_guidance(spec: GridSpec, points: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Each point at every guidance scale (a conditional model), or as it is (no scales)."""
    for point in points:
        if not spec.guidance:
            yield point
        for scale in spec.guidance:
            yield {
                **point,
                "guidance": scale,
                "labels": spec.labels,
                "guidance_interval": spec.guidance_interval,
            }


NOT_PC = dict(
    predictor=None,
    corrector=None,
    probability_flow=None,
    snr=None,
    corrector_steps=None,
    denoise=None,
)


def _pc_fields(spec: GridSpec) -> Iterable[dict[str, Any]]:
    product = itertools.product(
        spec.predictors, spec.correctors, spec.probability_flow, spec.snrs, spec.corrector_steps
    )
    for predictor, corrector, pf, snr, csteps in product:
        no_corrector = corrector == "none"
        yield dict(
            predictor=predictor,
            corrector=corrector,
            probability_flow=pf and predictor != "none",
            snr=None if no_corrector else snr,
            corrector_steps=None if no_corrector else csteps,
            denoise=spec.denoise,
        )


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds as ``0-3`` or ``1,2,5-10`` (EDM's syntax); duplicates removed, order kept."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if lo < 0 or hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                value = int(part)
                if value < 0:
                    raise ValueError
                seeds.append(value)
        except ValueError:
            raise BenchError(
                f"cannot parse seeds {text!r}: use non-negative integers and ranges, e.g. 0-3 or 1,2,5-10"
            ) from None
    return tuple(dict.fromkeys(seeds))


def batches(n: int, batch_size: int) -> Iterable[tuple[int, int]]:
    """(start, size) of each batch."""
    for start in range(0, n, batch_size):
        yield start, min(batch_size, n - start)
