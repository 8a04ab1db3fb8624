"""``bench run`` end to end: validate the request, expand the grid, run the cells, report."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bench
from bench import grid as grid_mod
from bench.errors import BenchError, Unsupported
from bench.grid import Cell, GridSpec
from bench.interfaces import ScoreModel
from bench.registry import Registry
from bench.runner import (
    DTYPES,
    CellContext,
    Components,
    OptionSet,
    machine_info,
    resolve_device,
    resolve_threads,
    run_cell,
)
from bench.store import RunStore


def load_model(registry: Registry, spec: str, device: torch.device, dtype: torch.dtype) -> ScoreModel:
    """A score model from ``NAME[:ARG]``."""
    name, _, arg = spec.partition(":")
    entry = registry.get("score-models", name)
    return entry.obj.load(arg or None, device=device, dtype=dtype)


def canonical(registry: Registry, kind: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Registry names for user names and aliases (unknown names: a clear error)."""
    return tuple(dict.fromkeys(registry.get(kind, n).name for n in names))


@dataclass
class Sweep:
    session: Any
    spec: GridSpec
    model: ScoreModel
    options: OptionSet
    device: torch.device
    threads: int
    store: RunStore
    save_samples: bool
    progress: bool
    invocation: dict[str, Any]

    @classmethod
    def from_cli(cls, session: Any, kw: dict[str, Any]) -> Sweep:
        registry = session.registry
        sdes = canonical(registry, "sdes", kw["sdes"])
        predictors = canonical(registry, "predictors", kw["predictors"])
        correctors = canonical(registry, "correctors", kw["correctors"])
        seeds = grid_mod.parse_seeds(kw["seeds"])
        device = resolve_device(kw["device"])
        options = OptionSet.parse(list(kw["options"]), registry)
        model = load_model(registry, kw["model"], device, DTYPES[kw["dtype"]])
        for sde in sdes:
            defaults = {**model.sde_defaults.get(sde, {})}
            if kw["eps"] is not None:
                defaults["eps"] = kw["eps"]
            for key, value in defaults.items():
                options.values.setdefault(("sdes", sde), {}).setdefault(key, value)
        requested = kw["metrics"] or model.default_metrics
        metrics = () if requested == ("none",) else canonical(registry, "metrics", requested)
        pf = {"off": (False,), "on": (True,), "both": (False, True)}[kw["probability_flow"]]
        spec = GridSpec(
            model=kw["model"], sdes=sdes, predictors=predictors, correctors=correctors,
            steps=kw["steps"], snrs=kw["snrs"], corrector_steps=kw["corrector_steps"],
            probability_flow=pf, seeds=seeds, samples=kw["samples"], batch_size=kw["batch_size"],
            denoise=kw["denoise"], dtype=kw["dtype"], metrics=metrics,
        )
        out = kw["out"] or f"results/{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        progress = sys.stderr.isatty() if kw["progress"] is None else kw["progress"]
        return cls(session, spec, model, options, device,
                   resolve_threads(kw["threads"], model, device), RunStore(out),
                   kw["save_samples"], progress,
                   {"argv": sys.argv, "options": {k: v for k, v in kw.items()}})

    def context(self) -> CellContext:
        saver = self._save_samples if self.save_samples else None
        return CellContext(self.session.registry, self.model, self.device, self.options,
                           self.threads, saver)

    def cells(self, ctx: CellContext) -> list[Cell]:
        return grid_mod.expand(self.spec, Components(ctx).resolved_options)

    def prepare_metrics(self) -> None:
        """Let each metric check its prerequisites once, before any work starts."""
        registry = self.session.registry
        for name in self.spec.metrics:
            metric = registry.get("metrics", name).obj
            try:
                metric.supports(self.model)
            except Unsupported:
                continue  # recorded per cell
            metric.prepare(self.model, self.options.build("metrics", name, metric), self.device)

    def run(self) -> list[dict[str, Any]]:
        torch.set_num_threads(self.threads)
        ctx = self.context()
        cells = self.cells(ctx)
        self.prepare_metrics()
        self.store.prepare()
        self.store.write_meta(self.metadata(len(cells)))
        report = self.session.report
        say(f"sde-bench {bench.__version__} · torch {torch.__version__} · {self.device} · "
            f"threads {self.threads} · model {self.model.spec}")
        say(report.header())
        say(f"{len(cells)} cells → {self.store.path}")
        rows = []
        for cell in self._progress(cells):
            row = run_cell(cell, ctx)
            self.store.append(row)
            rows.append(row)
        from bench.report import short_report

        click_echo(short_report(self.store.rows()))
        say(f"results: {self.store.csv_path}")
        return rows

    def _progress(self, cells: list[Cell]):
        if not self.progress:
            return cells
        from tqdm.auto import tqdm

        return tqdm(cells, desc="cells", unit="cell", file=sys.stderr)

    def metadata(self, n_cells: int) -> dict[str, Any]:
        report = self.session.report
        return {
            "sde_bench": bench.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "invocation": self.invocation,
            "grid": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.spec).items()},
            "cells": n_cells,
            "model": self.model.describe(),
            "device": str(self.device),
            "threads": self.threads,
            "machine": machine_info(self.device),
            "plugins": [p.as_dict() for p in report.plugins],
            "plugins_header": report.header(),
        }

    def _save_samples(self, cell: Cell, samples: torch.Tensor) -> None:
        folder = self.store.path / "samples"
        folder.mkdir(exist_ok=True)
        np.savez_compressed(folder / f"{cell.id}.npz", samples=samples.numpy(),
                            config=np.array(str(cell.config())))


def say(message: str) -> None:
    print(message, file=sys.stderr)


def click_echo(text: str) -> None:
    import click

    click.echo(text)
