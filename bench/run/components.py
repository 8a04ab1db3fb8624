"""Building a cell's components from the registry: SDE, schedule and time grid, sampler, metrics."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from bench.core.metric import Metric
from bench.core.pc import PCSampler
from bench.core.sampler import Sampler
from bench.core.schedule import Schedule, TimeGrid
from bench.core.sde import SDE
from bench.plugin.registry import Entry
from bench.run.conditioning import check_guidance
from bench.run.distributed import Ranks
from bench.run.grid import Cell
from bench.run.setup import Environment


@dataclass
class CellContext:
    """Everything a cell needs besides its own config."""

    env: Environment
    save_samples: Callable[[Cell, Tensor], None] | None = None
    on_batch: Callable[[int], None] | None = None  # progress: called with each batch's size
    extra: dict[str, Any] = field(default_factory=dict)
    """Columns every row of the run carries (e.g. ``model_defaults``, the world size)."""
    ranks: Ranks = field(default_factory=Ranks)
    """This process's rank under torchrun (a world of one otherwise)."""

    @property
    def registry(self) -> Any:
        return self.env.registry

    @property
    def model(self) -> Any:
        return self.env.model

    @property
    def device(self) -> torch.device:
        return self.env.device


@dataclass
class Built:
    """A cell's components, checked to run together."""

    sde: SDE
    schedule: Schedule
    grid: TimeGrid
    sampler: Sampler
    metrics: list[type[Metric]]


class Components:
    """Builds the components of cells from the registry and the run's options."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def entry(self, kind: str, name: str) -> Entry:
        return self.env.registry.get(kind, name)

    def options(self, kind: str, name: str) -> Any:
        entry = self.entry(kind, name)
        return self.env.options.build(kind, entry.name, entry.obj)

    def sde(self, name: str, steps: int) -> SDE:
        return self.entry("sdes", name).obj(steps, self.options("sdes", name))

    @functools.lru_cache(maxsize=None)  # noqa: B019 - one Components per run; a file is read once
    def schedule(self, spec: str) -> Schedule:
        """The schedule of ``NAME[:ARG]`` with its options."""
        name, _, arg = spec.partition(":")
        return self.entry("schedules", name).obj(self.options("schedules", name), arg or None)

    def default_schedule(self, sampler: str) -> str:
        return self.entry("samplers", sampler.partition(":")[0]).obj.default_schedule

    def fixed_steps(self, schedule: str) -> int | None:
        return self.schedule(schedule).fixed_steps()

    def uses_steps(self, sampler: str) -> bool:
        return self.entry("samplers", sampler.partition(":")[0]).obj.uses_steps

    def sampler(self, cell: Cell) -> Sampler:
        """The cell's sampler: a PC sampler from its predictor and corrector, or a whole one."""
        name, _, arg = cell.sampler.partition(":")
        cls = self.entry("samplers", name).obj
        if not cell.is_pc:
            return cls(self.options("samplers", name), arg or None)
        assert issubclass(cls, PCSampler)
        return cls(
            self.entry("predictors", cell.predictor).obj,
            self.entry("correctors", cell.corrector).obj,
            snr=cell.snr or 0.0,
            corrector_steps=cell.corrector_steps or 0,
            probability_flow=bool(cell.probability_flow),
            denoise=bool(cell.denoise),
            predictor_options=self.options("predictors", cell.predictor),
            corrector_options=self.options("correctors", cell.corrector),
        )

    def build(self, cell: Cell) -> Built:
        """Every component of ``cell``; raises :class:`bench.Unsupported` for a combination that
        cannot run (the model's reason first, as the most fundamental)."""
        steps = cell.steps or 1  # a sampler to which steps mean nothing gets a one-step grid
        sde = self.sde(cell.sde, steps)
        schedule = self.schedule(cell.schedule)
        sampler = self.sampler(cell)
        self.env.model.check_sde(sde)
        check_guidance(cell, self.env.model)
        grid = schedule.grid(sde, steps)
        sde.discrete = grid.paper  # before supports(): the paper's discrete rules need it
        sampler.supports(sde, schedule)
        metrics = [self.entry("metrics", m).obj for m in cell.metrics]
        for metric in metrics:
            metric.supports(self.env.model)
        return Built(sde, schedule, grid, sampler, metrics)

    def resolved_options(self, cell: dict[str, Any]) -> dict[str, Any]:
        """The full option values of a cell's components (defaults included), for its id."""

        def of(kind: str, name: str | None) -> dict[str, Any] | None:
            return None if name is None else dataclasses.asdict(self.options(kind, name))

        sde = self.sde(cell["sde"], cell["steps"] or 1)
        return {
            "sde": {**of("sdes", cell["sde"]), "eps": sde.eps},  # type: ignore[dict-item]
            "sampler": of("samplers", cell["sampler"].partition(":")[0]),
            "schedule": self.schedule(cell["schedule"]).describe(),
            "predictor": of("predictors", cell["predictor"]),
            "corrector": of("correctors", cell["corrector"]),
            "metrics": {m: of("metrics", m) for m in cell["metrics"]},
        }
