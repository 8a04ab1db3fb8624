"""Running cells: build the components, sample batch by batch, count NFE, time, measure."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import bench
from bench.core.metric import Metric
from bench.core.noise import SampleNoise, prior_noise
from bench.errors import Unsupported
from bench.plugin.kinds import KINDS
from bench.plugin.registry import Registry
from bench.run import interrupts
from bench.run.components import Built, CellContext, Components
from bench.run.conditioning import CellModel, conditioning_of
from bench.run.distributed import settle_outcomes
from bench.run.grid import Cell, batches
from bench.run.setup import AUTOCAST, DTYPES, synchronize, tf32_enabled


@dataclass
class Sampled:
    """What sampling a cell (or a rank's shard of it) produced, before metrics."""

    calls_per_batch: list[int] = field(default_factory=list)
    n_samples: int = 0
    wall_clock_s: float = 0.0
    diverged_step: int | None = None
    diverged_t: float | None = None
    peak_memory_mb: float | None = None
    peak_rss_mb: float | None = None
    kept: list[tuple[int, Tensor]] = field(default_factory=list)  # (start, data) to save
    passes_per_batch: list[int] = field(default_factory=list)  # network passes per sample

    @classmethod
    def combine(cls, parts: list[Sampled]) -> Sampled:
        """The ranks' shards as one cell: wall-clock of the slowest rank, every batch's calls,
        the first divergence, the largest memory peaks."""
        diverged = [p for p in parts if p.diverged_step is not None]
        return cls(
            [c for p in parts for c in p.calls_per_batch],
            sum(p.n_samples for p in parts),
            max(p.wall_clock_s for p in parts),
            diverged[0].diverged_step if diverged else None,
            diverged[0].diverged_t if diverged else None,
            _max([p.peak_memory_mb for p in parts]),
            _max([p.peak_rss_mb for p in parts]),
            sorted((k for p in parts for k in p.kept), key=lambda k: k[0]),
            [c for p in parts for c in p.passes_per_batch],
        )


def _max(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


@dataclass
class Attempt:
    """One rank's work on a cell: its components, metrics and shard, or why it failed."""

    status: str = "ok"  # ok | unsupported | error
    reason: str = ""
    plugin: str | None = None
    built: Built | None = None
    metrics: list[Metric] = field(default_factory=list)
    sampled: Sampled | None = None
    batch_size: int = 0
    notes: list[str] = field(default_factory=list)

    def shared(self) -> dict[str, Any]:
        """What rank 0 needs from this rank: the outcome, the shard's sampling and metric states."""
        out: dict[str, Any] = {
            "status": self.status,
            "reason": self.reason,
            "plugin": self.plugin,
            "samples": self.sampled.n_samples if self.sampled is not None else 0,
        }
        if self.sampled is not None:
            out["sampled"] = self.sampled
            out["states"] = [m.state() for m in self.metrics]
            out["batch_size"] = self.batch_size
        return out

    def merge(self, shared: list[dict[str, Any]]) -> None:
        """Combine every rank's shard into this (rank 0's) attempt."""
        if self.sampled is None:
            return
        self.sampled = Sampled.combine([s["sampled"] for s in shared])
        self.batch_size = min(s["batch_size"] for s in shared)
        for i, metric in enumerate(self.metrics):
            metric.merge([s["states"][i] for s in shared])


def run_cell(cell: Cell, ctx: CellContext) -> dict[str, Any]:
    """Run one cell. Every outcome is a row: ok, unsupported, diverged or error.

    An exception raised by plugin code becomes ``status="error"`` naming the plugin; the sweep
    goes on. ``KeyboardInterrupt`` is not caught: the sweep stops cleanly one level up. Under
    torchrun every rank samples its shard and rank 0 alone returns the row (others: the status);
    a cell that fails on some ranks only ends the run (:func:`settle_outcomes`).
    """
    parts = Components(ctx.env)
    row = base_row(cell, ctx, parts)
    attempt = _attempt(cell, ctx, parts)
    if ctx.ranks.distributed:
        shared = ctx.ranks.gather(attempt.shared())
        outcome = settle_outcomes(shared, cell.id)
        if not ctx.ranks.main:
            return {"status": outcome["status"]}  # rank 0 writes the row
        if outcome["status"] != "ok":
            attempt = Attempt(outcome["status"], outcome["reason"], outcome["plugin"])
        attempt.merge(shared)
    if attempt.status == "unsupported":
        return {**row, "status": "unsupported", "reason": attempt.reason}
    if attempt.status == "error":
        return {**row, "status": "error", "error_plugin": attempt.plugin, "reason": attempt.reason}
    return {**row, **_finish(cell, ctx, attempt)}


def _attempt(cell: Cell, ctx: CellContext, parts: Components) -> Attempt:
    try:
        return _sample(cell, ctx, parts)
    except Unsupported as exc:
        return Attempt("unsupported", exc.reason)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the sweep
        if interrupts.received():  # Ctrl-C that the plugin turned into another exception
            raise KeyboardInterrupt from exc
        plugin, where = blame(exc, ctx.registry)
        notes = getattr(exc, "__notes__", [])
        reason = "; ".join([f"in {plugin} ({where}): {type(exc).__name__}: {exc}", *notes])
        return Attempt("error", reason, plugin)


def _sample(cell: Cell, ctx: CellContext, parts: Components) -> Attempt:
    """This rank's shard of the cell, retried at half the batch size on out-of-memory."""
    built = parts.build(cell)
    batch_size, notes = cell.batch_size, []
    while True:
        context = conditioning_of(cell, ctx.env.metric_context(built.sde), ctx.model)
        metrics = [
            m(
                ctx.model,
                cell.samples,
                device=ctx.device,
                options=parts.options("metrics", m.name),
                context=context,
            )
            for m in built.metrics
        ]
        try:
            sampled = sample_cell(cell, ctx, built, metrics, batch_size)
            return Attempt(
                built=built, metrics=metrics, sampled=sampled, batch_size=batch_size, notes=notes
            )
        except (torch.OutOfMemoryError, MemoryError) as exc:
            if batch_size == 1:
                if notes:
                    exc.add_note("; ".join(notes) + "; gave up at batch size 1")
                raise
            notes.append(f"out of memory at batch size {batch_size}")
            batch_size = max(1, batch_size // 2)
            _free_memory(ctx.device)


def _finish(cell: Cell, ctx: CellContext, attempt: Attempt) -> dict[str, Any]:
    """The row's measured columns from a (merged) attempt: timing, NFE, status, metrics."""
    built, sampled, notes = attempt.built, attempt.sampled, attempt.notes
    assert built is not None and sampled is not None
    if ctx.save_samples is not None and sampled.kept:
        ctx.save_samples(cell, torch.cat([data for _, data in sampled.kept]))
    out: dict[str, Any] = {
        **timing_columns(sampled),
        "nfe_nominal": built.sampler.nfe_nominal(built.grid.steps),
        "batch_dependence": built.sampler.batch_dependent() or "",
        **built.sampler.row_columns(),
        "batch_size_used": attempt.batch_size,
        "peak_memory_mb": sampled.peak_memory_mb,
        "peak_rss_mb": sampled.peak_rss_mb,
    }
    if notes:
        out["reason"] = "; ".join(notes) + f"; retried with batch size {attempt.batch_size}"
    if sampled.diverged_step is not None:
        reason = (
            f"non-finite samples from step {sampled.diverged_step} (t={sampled.diverged_t:.6g})"
        )
        return {
            **out,
            "status": "diverged",
            "diverged_step": sampled.diverged_step,
            "reason": "; ".join([*notes, reason]),
        }
    start = time.perf_counter()
    for metric in attempt.metrics:
        out.update(metric.compute())
        out[f"{metric.name}_n"] = cell.samples
    out["metrics_s"] = time.perf_counter() - start
    return {**out, "status": "ok"}


def reset_peak_rss() -> None:
    """Reset the process's resident-memory high-water mark (Linux ``clear_refs``; else no-op)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    """The process's peak resident memory since :func:`reset_peak_rss` (``VmHWM``), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def blame(exc: BaseException, registry: Registry) -> tuple[str, str]:
    """The plugin whose code raised ``exc`` (innermost frame in a plugin module) and where."""
    import traceback

    owners = {
        entry.obj.__module__: str(entry.provider)
        for kind in registry.entries.values()
        for entry in kind.values()
    }
    frames = traceback.extract_tb(exc.__traceback__)
    modules = _frame_modules(exc.__traceback__)
    for frame, module in zip(reversed(frames), reversed(modules), strict=True):
        if module in owners:
            return owners[module], f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
    last = frames[-1] if frames else None
    where = f"{Path(last.filename).name}:{last.lineno} in {last.name}" if last else "?"
    return "sde-bench core", where


def _frame_modules(tb: Any) -> list[str]:
    out = []
    while tb is not None:
        out.append(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return out


def sample_cell(
    cell: Cell,
    ctx: CellContext,
    built: Built,
    metrics: list[Metric],
    batch_size: int | None = None,
) -> Sampled:
    """Sample all batches of a cell, timing sampling alone and feeding the metrics."""
    model, device = ctx.model, ctx.device
    cell_model = CellModel(cell, ctx.env, built.sde)
    view = cell_model.view(built.sde)
    out = Sampled()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    every = list(batches(cell.samples, batch_size or cell.batch_size))
    for start, size in ctx.ranks.shard(every):
        x_T = prior(cell, built, start, size, model.data_shape, device)
        noise = SampleNoise(cell.seed, start, size)
        cell_model.start_batch(start, size)
        calls, passes = view.calls, cell_model.passes(view)
        synchronize(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            x = built.sampler.sample(x_T, built.grid, view, noise)
        synchronize(device)
        out.wall_clock_s += time.perf_counter() - t0
        out.calls_per_batch.append(view.calls - calls)
        out.passes_per_batch.append(cell_model.passes(view) - passes)
        out.n_samples += size
        if not bool(torch.isfinite(x).all()):
            out.diverged_step, out.diverged_t = first_nonfinite_step(cell, ctx, built, start, x_T)
            break
        data = model.to_data(x)
        for metric in metrics:
            metric.update_at(data, start)
        if ctx.save_samples is not None:
            out.kept.append((start, data.cpu()))
        if ctx.on_batch is not None:
            ctx.on_batch(size)
    if device.type == "cuda":
        out.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    out.peak_rss_mb = peak_rss_mb()
    return out


def prior(
    cell: Cell, built: Built, start: int, size: int, shape: tuple[int, ...], device: torch.device
) -> Tensor:
    """x_T of samples start..start+size: the SDE's prior from each sample's own seeded noise."""
    z = prior_noise(cell.seed, start, size, shape).to(device, DTYPES[cell.dtype])
    return built.sde.prior_sampling(z)


def first_nonfinite_step(
    cell: Cell, ctx: CellContext, built: Built, start: int, x_T: Tensor
) -> tuple[int, float]:
    """Replay a diverged batch with the same noise, checking every step (diagnosis only)."""
    found: list[tuple[int, float]] = []

    def check(state: dict[str, Any]) -> None:
        if not found and not bool(torch.isfinite(state["x"]).all()):
            found.append((state["i"], state["t"]))

    cell_model = CellModel(cell, ctx.env, built.sde)
    cell_model.start_batch(start, x_T.shape[0])
    view = cell_model.view(built.sde)
    with torch.no_grad():
        built.sampler.sample(
            x_T, built.grid, view, SampleNoise(cell.seed, start, x_T.shape[0]), callback=check
        )
    return found[0] if found else (built.grid.steps - 1, built.grid.t[-2])


def timing_columns(sampled: Sampled) -> dict[str, Any]:
    """NFE per trajectory (counted: mean, min and max over batches), network passes per sample
    (2 per guided evaluation), calls and timings."""
    wall = sampled.wall_clock_s
    per_batch = sampled.calls_per_batch
    calls, passes = sum(per_batch), sum(sampled.passes_per_batch)
    return {
        "nfe": calls / len(per_batch) if per_batch else 0,
        "passes": passes / len(per_batch) if per_batch else 0,
        "nfe_min": min(per_batch, default=0),
        "nfe_max": max(per_batch, default=0),
        "score_calls": calls,
        "wall_clock_s": wall,
        "samples_per_s": sampled.n_samples / wall if wall > 0 else math.nan,
        "s_per_nfe": wall / calls if calls else math.nan,
        "s_per_pass": wall / passes if passes else math.nan,
    }


def base_row(cell: Cell, ctx: CellContext, parts: Components) -> dict[str, Any]:
    """Config, environment and provenance columns every row carries."""
    cfg = cell.config()
    options = cfg.pop("options")
    row: dict[str, Any] = {"cell_id": cell.id, "status": None, "reason": "", **cfg}
    row["metrics"] = ",".join(cell.metrics)
    row["eps"] = options["sde"]["eps"]
    for column in ("sde", "sampler", "schedule", "predictor", "corrector"):
        row[f"{column}_options"] = _compact(options[column])
    row["metric_options"] = "; ".join(
        f"{m}: {_compact(v)}" for m, v in options["metrics"].items() if v
    )
    env = ctx.env
    row["device"] = str(env.device)
    row["state_dtype"] = str(DTYPES[cell.dtype]).removeprefix("torch.")
    row["autocast"] = (
        str(AUTOCAST[cell.dtype]).removeprefix("torch.") if cell.dtype in AUTOCAST else None
    )
    row["tf32"] = tf32_enabled(env.device)
    row["compile"] = env.compile_mode
    row["threads"] = env.threads  # CPU intra-op threads (also used beside a GPU)
    if cell.guidance is not None:  # a conditional cell: how its guided evaluations batch
        row["guidance_batch"] = env.guidance_batch
    row["torch"] = torch.__version__
    row["sde_bench"] = bench.__version__
    row.update(provenance(cell, ctx, parts))
    row.update(ctx.extra)
    row["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return row


def component_names(cell: Cell, ctx: CellContext) -> dict[str, str | None]:
    """The registered name of each component a cell names, by kind key."""
    return {
        "sdes": cell.sde,
        "schedules": cell.schedule.partition(":")[0],
        "samplers": cell.sampler.partition(":")[0],
        "predictors": cell.predictor,
        "correctors": cell.corrector,
        "score-models": ctx.model.name,
    }


def provenance(cell: Cell, ctx: CellContext, parts: Components) -> dict[str, str | None]:
    """The plugin behind each component of a cell (name, distribution and version, or a
    local file's hash): the ``*_provider`` columns. A resumed run reruns cells whose
    provenance changed, e.g. after an edit of a ``-p`` file."""
    names = component_names(cell, ctx)
    out: dict[str, str | None] = {
        f"{kind.column}_provider": None
        if names[kind.key] is None
        else str(parts.entry(kind.key, names[kind.key]).provider)
        for kind in KINDS
        if kind.key in names
    }
    out["metric_providers"] = "; ".join(
        f"{m}={parts.entry('metrics', m).provider}" for m in cell.metrics
    )
    return out


def _compact(values: dict[str, Any] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((values or {}).items()))
