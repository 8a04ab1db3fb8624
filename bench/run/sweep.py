"""``bench run`` end to end: validate the request, expand the grid, run the cells, report.

Durability: every finished cell is appended to the run's log (fsync'ed) before the next starts.
Running the same command again — or ``bench run --resume DIR`` — skips the cells already done
(matched by cell id) and reruns only the rest (and cells that ended in ``error``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import click
import numpy as np
import torch

import bench
from bench.core import brownian
from bench.core.pc import PCSampler
from bench.errors import BenchError, Unsupported
from bench.run import conditioning, estimate
from bench.run import grid as grid_mod
from bench.run.cells import provenance, run_cell
from bench.run.components import CellContext, Components
from bench.run.defaults import DEFAULTS
from bench.run.distributed import Ranks
from bench.run.grid import Cell, GridSpec
from bench.run.setup import Environment, canonical, canonical_specs, machine_info
from bench.run.store import RunStore

IDENTITY_KEYS = (
    "model",
    "samples",
    "batch_size",
    "dtype",
    "denoise",
    "metrics",
    "options",
    "eps",
    "brownian_layout",
)
"""Options that change the meaning of existing rows: a run folder refuses a change of these
(``brownian_layout``: only where its rows drew Brownian paths; a folder without the key is
layout 1)."""

RESUME_MAY_CHANGE = (
    "progress",
    "fail_fast",
    "device",
    "threads",
    "tf32",
    "compile_mode",
    "dry_run",
)
"""Options a resumed run may set anew: how the cells run, not what they compute."""

DONE = ("ok", "unsupported", "diverged")
"""Statuses that count as finished; ``error`` cells are retried when a run resumes."""


PC_OPTIONS = ("predictors", "correctors", "snrs", "corrector_steps", "probability_flow")
"""Options of the predictor–corrector family: giving one adds ``pc`` to ``--samplers``."""


def resolve_grid_options(kw: dict[str, Any], given: set[str], model: Any) -> dict[str, Any]:
    """Fill in what the user left out: the model's default grid, then the suite's defaults.

    ``--samplers`` defaults to ``pc``; naming any PC option (``--predictors`` …) while listing
    other samplers adds ``pc`` too, so PC cells and whole samplers share one grid.
    """
    kw = dict(kw)
    taken = {k: v for k, v in model.default_grid.items() if kw.get(k) is None}
    kw.setdefault("model_defaults", taken)  # a resumed run keeps what the first one recorded
    for key, value in {**DEFAULTS, **taken}.items():
        if kw.get(key) is None:
            kw[key] = value
    samplers = tuple(kw.get("samplers") or (PCSampler.name,))
    if given & set(PC_OPTIONS) and PCSampler.name not in samplers:
        samplers = (PCSampler.name, *samplers)
    kw["samplers"] = samplers
    return kw


def grid_spec(registry: Any, kw: dict[str, Any], env: Environment) -> GridSpec:
    """The grid the (resolved) command-line values ask for; unknown names are a clear error."""
    requested = kw["metrics"] or env.model.default_metrics
    metrics = () if tuple(requested) == ("none",) else canonical(registry, "metrics", requested)
    pf = {"off": (False,), "on": (True,), "both": (False, True)}[kw["probability_flow"]]
    schedules = kw.get("schedules")
    return GridSpec(
        model=kw["model"],
        sdes=env.sdes,
        samplers=canonical_specs(registry, "samplers", tuple(kw["samplers"])),
        schedules=canonical_specs(registry, "schedules", tuple(schedules)) if schedules else None,
        predictors=canonical(registry, "predictors", tuple(kw["predictors"])),
        correctors=canonical(registry, "correctors", tuple(kw["correctors"])),
        steps=tuple(kw["steps"]),
        snrs=tuple(kw["snrs"]),
        corrector_steps=tuple(kw["corrector_steps"]),
        probability_flow=pf,
        seeds=grid_mod.parse_seeds(str(kw["seeds"])),
        samples=kw["samples"],
        batch_size=kw["batch_size"],
        denoise=kw["denoise"],
        dtype=kw["dtype"],
        metrics=metrics,
        **conditioning.grid_fields(kw, env.model),
    )


def resume_options(kw: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """The stored options of the run in ``kw["resume"]``; other options may not be given too."""
    folder = kw["resume"]
    store = RunStore(folder)
    if not store.exists():
        raise BenchError(f"no run to resume in {folder!r} (no run.json)")
    clash = sorted(given - set(RESUME_MAY_CHANGE) - {"resume"})
    if clash:
        names = ", ".join("--" + c.replace("_", "-") for c in clash)
        raise BenchError(
            f"--resume takes the options stored in {folder}/run.json; drop {names} "
            f"(or rerun the full command with --out {folder})"
        )
    stored = store.read_meta()["invocation"]["options"]
    merged = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
    for key in RESUME_MAY_CHANGE:
        if key in given:
            merged[key] = kw[key]
    merged.update(out=folder, resume=None, new_run=False)
    return merged


class Progress:
    """Two bars on long runs: cells, and the samples of the cell in flight."""

    def __init__(self, cells: list[Cell], enabled: bool) -> None:
        self.cells, self.enabled = cells, enabled
        self.cell_bar = self.sample_bar = None
        self.index = 0

    def __enter__(self) -> Progress:
        if self.enabled and self.cells:
            from tqdm.auto import tqdm

            self.cell_bar = tqdm(total=len(self.cells), desc="cells", unit="cell", file=sys.stderr)
            self.sample_bar = tqdm(desc="samples", unit="sample", file=sys.stderr, leave=False)
            self._start_cell()
        return self

    def _start_cell(self) -> None:
        if self.sample_bar is not None and self.index < len(self.cells):
            cell = self.cells[self.index]
            self.sample_bar.reset(total=cell.samples)
            self.sample_bar.set_description(f"{cell.sde} {cell.label} N={cell.steps}")

    def samples(self, n: int) -> None:
        if self.sample_bar is not None:
            self.sample_bar.update(n)

    def cell_done(self) -> None:
        self.index += 1
        if self.cell_bar is not None:
            self.cell_bar.update(1)
            self._start_cell()

    def __exit__(self, *exc: Any) -> None:
        for bar in (self.sample_bar, self.cell_bar):
            if bar is not None:
                bar.close()


@dataclass
class Sweep:
    session: Any
    spec: GridSpec
    env: Environment
    store: RunStore
    save_samples: bool
    progress: bool
    fail_fast: bool
    new_run: bool
    dry_run: bool
    invocation: dict[str, Any]
    ranks: Ranks = field(default_factory=Ranks)

    @property
    def model(self) -> Any:
        return self.env.model

    @property
    def device(self) -> torch.device:
        return self.env.device

    @property
    def threads(self) -> int:
        return self.env.threads

    @property
    def options(self) -> Any:
        return self.env.options

    @classmethod
    def from_cli(cls, session: Any, kw: dict[str, Any], given: set[str] = frozenset()) -> Sweep:
        if kw.get("resume"):
            kw = resume_options(kw, set(given))
        registry = session.registry
        ranks = Ranks.from_env(device_type(kw["device"]))
        env = Environment.create(registry, kw, ranks)
        for warning in env.warnings:
            say(warning)
        kw = resolve_grid_options(kw, set(given), env.model)
        note = conditioning.unconditional_note(env.model, set(given))
        if note:
            say(note)
        spec = grid_spec(registry, kw, env)
        out = kw["out"] or f"results/{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        progress = sys.stderr.isatty() if kw["progress"] is None else kw["progress"]
        invocation = {
            "argv": sys.argv,
            "plugins": {"modules": session.modules, "dirs": session.dirs},
            "options": {k: v for k, v in kw.items() if k not in ("resume", "new_run", "dry_run")},
        }
        return cls(
            session,
            spec,
            env,
            RunStore(out),
            kw["save_samples"],
            progress,
            kw["fail_fast"],
            kw["new_run"],
            bool(kw.get("dry_run")),
            invocation,
            ranks,
        )

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        torch.set_num_threads(self.threads)
        if self.ranks.main:
            self.store.prepare()  # a results folder we cannot write fails before any work
            self.store.lock()  # one writer per run folder: rank 0
        try:
            return self._run()
        finally:
            if self.ranks.main:
                self.store.unlock()
            self.ranks.close()

    def cells(self) -> list[Cell]:
        """The grid's cells, with every schedule checked against every SDE and every sampler
        built once first (a bad ``file:`` schedule or sampler argument is refused before any
        work starts)."""
        parts = Components(self.env)
        cells = grid_mod.expand(self.spec, parts)
        for schedule in dict.fromkeys(c.schedule for c in cells):
            for sde in self.spec.sdes:
                parts.schedule(schedule).check(parts.sde(sde, 2))
        for first in {c.sampler: c for c in reversed(cells)}.values():
            parts.sampler(first)  # a sampler's ARG and options are checked before any work
        return cells

    def plan(self) -> None:
        """``--dry-run``: the cells, their nominal NFE and an estimate of the run time."""
        torch.set_num_threads(self.threads)
        cells = self.cells()
        plan = estimate.plan(cells, Components(self.env), self.env)
        click.echo(estimate.render(plan, cells))

    def _run(self) -> list[dict[str, Any]]:
        ctx = self.context()
        cells = self.cells()
        self.prepare_metrics()
        main = self.ranks.main
        if main:
            self.open_store(len(cells))
        ids = self.ranks.broadcast([c.id for c in self.cells_to_run(cells, ctx)] if main else None)
        todo = [c for c in cells if c.id in set(ids)]
        if main:
            self.header(len(cells), len(cells) - len(todo))
            if todo:
                say(estimate.summary(estimate.plan(todo, Components(self.env), self.env)))
        finished = 0
        try:
            with Progress(todo, self.progress and main) as bars:
                ctx.on_batch = bars.samples
                for cell in todo:
                    row = run_cell(cell, ctx)
                    if main:
                        self.store.append(row)
                    finished += 1
                    bars.cell_done()
                    if row["status"] == "error" and self.fail_fast:
                        raise BenchError(f"--fail-fast: cell {cell.id} failed: {row['reason']}")
        except KeyboardInterrupt:  # say what is kept; bench.cli.BenchGroup exits with 130
            say(
                f"\n{finished} of {len(todo)} cells finished in this session are saved in "
                f"{self.store.path}"
            )
            say(f"resume with: bench run --resume {self.store.path}")
            raise
        if not main:
            return []
        from bench.results.short_report import short_report

        click.echo(short_report(self.store.rows(), registry=self.session.registry))
        say(f"results: {self.store.csv_path}")
        return self.store.rows()

    def cells_to_run(self, cells: list[Cell], ctx: CellContext) -> list[Cell]:
        """Cells without a finished row, and finished cells whose plugin code has changed since.

        A finished row counts only if it was made by the same plugins (``*_provider``: name,
        distribution and version, or a local file's hash); otherwise the cell runs again and
        its new row replaces the old one.
        """
        finished = {r["cell_id"]: r for r in self.store.rows() if r.get("status") in DONE}
        parts = Components(self.env)
        stale = []
        for cell in cells:
            old = finished.get(cell.id)
            if old is not None:
                new = provenance(cell, ctx, parts)
                if any(old.get(k) != v for k, v in new.items()):
                    stale.append(cell)
                    finished.pop(cell.id)
        if stale:
            say(
                f"{len(stale)} finished cell(s) were made by other plugin code "
                f"(a changed -p file or another version): running them again"
            )
        return [c for c in cells if c.id not in finished]

    def context(self) -> CellContext:
        taken = self.invocation["options"].get("model_defaults") or {}
        extra = {"model_defaults": "; ".join(f"{k}={_text(v)}" for k, v in taken.items())}
        extra.update(self.ranks.describe(self.device))
        saver = self._save_samples if self.save_samples else None
        return CellContext(self.env, saver, extra=extra, ranks=self.ranks)

    def prepare_metrics(self) -> None:
        """Let each metric check its prerequisites once, before any work starts.

        Under torchrun each node's local rank 0 goes first (it computes and caches reference
        statistics), the other ranks then find them in the cache; a metric that cannot merge
        its state across ranks is refused.
        """
        registry = self.session.registry
        metrics = []
        for name in self.spec.metrics:
            metric = registry.get("metrics", name).obj
            try:
                metric.supports(self.model)
            except Unsupported:
                continue  # recorded per cell
            if self.ranks.distributed and not metric.mergeable():
                raise BenchError(
                    f"metric {name!r} cannot run under torchrun: it does not expose and merge "
                    f"its state (Metric.state and Metric.merge); run it in one process"
                )
            metrics.append((metric, self.options.build("metrics", name, metric)))
        for turn in (0, 1):
            if (self.ranks.local_rank > 0) == bool(turn):
                for metric, options in metrics:
                    metric.prepare(self.model, options, self.env.metric_context())
            self.ranks.barrier()

    def identity(self) -> dict[str, Any]:
        """What defines the meaning of this run's rows (see IDENTITY_KEYS)."""
        opts = {f"{kind}.{name}": values for (kind, name), values in self.options.values.items()}
        return json.loads(
            json.dumps(
                {
                    "model": self.spec.model,
                    "samples": self.spec.samples,
                    "batch_size": self.spec.batch_size,
                    "dtype": self.spec.dtype,
                    "denoise": self.spec.denoise,
                    "metrics": list(self.spec.metrics),
                    "options": dict(sorted(opts.items())),
                    "eps": self.invocation["options"].get("eps"),
                    "brownian_layout": brownian.LAYOUT,
                },
                default=str,
            )
        )

    def open_store(self, n_cells: int) -> None:
        """Start the run folder (made by :meth:`RunStore.prepare`), or continue an existing run
        if its meaning is unchanged."""
        if self.store.exists():
            old = {"brownian_layout": 1, **self.store.read_meta().get("identity", {})}
            new = self.identity()
            changed = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
            if "brownian_layout" in changed and not self._drew_brownian_paths():
                changed.remove("brownian_layout")  # its rows mean the same on either layout
            if changed and not self.new_run:
                detail = "; ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in changed)
                raise BenchError(
                    f"{self.store.path} holds a run whose rows mean something else ({detail}). "
                    f"Use another --out, or --new-run to archive the old results and start again"
                )
            if self.new_run:
                self.archive()
        self.store.write_meta(self.metadata(n_cells))

    def _drew_brownian_paths(self) -> bool:
        """Whether a row of the existing folder drew its noise from Brownian paths (its
        sampler options say ``noise=brownian``)."""
        path = self.store.rows_path
        return path.is_file() and "noise=brownian" in path.read_text(errors="replace")

    def archive(self) -> None:
        """Move the folder's current results aside (nothing is deleted)."""
        folder = self.store.path / f"previous-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        folder.mkdir()
        for path in (self.store.rows_path, self.store.csv_path, self.store.meta_path):
            if path.exists():
                shutil.move(str(path), folder / path.name)
        say(f"archived the previous results to {folder}")

    def header(self, n_cells: int, n_done: int) -> None:
        say(
            f"sde-bench {bench.__version__} · torch {torch.__version__} · {self.device} · "
            f"threads {self.threads} · model {self.model.spec}"
        )
        say(self.session.report.header())
        resumed = f" ({n_done} already done)" if n_done else ""
        say(f"{n_cells} cells{resumed} → {self.store.path}")

    def metadata(self, n_cells: int) -> dict[str, Any]:
        report = self.session.report
        return {
            "sde_bench": bench.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "invocation": self.invocation,
            "identity": self.identity(),
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
        np.savez_compressed(
            folder / f"{cell.id}.npz",
            samples=samples.numpy(),
            config=np.array(json.dumps(cell.config(), default=str)),
        )


def device_type(text: str) -> str:
    """``cuda`` or ``cpu``: which torch.distributed backend a ``--device`` value needs."""
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if text.startswith("cuda") else "cpu"


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def say(message: str) -> None:
    print(message, file=sys.stderr)
