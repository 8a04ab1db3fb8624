"""Running cells: build the components, sample batch by batch, count NFE, time, measure."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

import bench
from bench.core import options as opts
from bench.core.components import Corrector, Metric, Predictor, ScoreModel
from bench.core.pc import CountingScore, pc_sample
from bench.core.sde import SDE
from bench.errors import BenchError, Unsupported
from bench.plugin.registry import Registry
from bench.run import interrupts
from bench.run.grid import Cell, batches, derive_seed

KIND_OF = {
    "sde": "sdes",
    "predictor": "predictors",
    "corrector": "correctors",
    "metric": "metrics",
    "model": "score-models",
    "dataset": "datasets",
}


# -- component options (-o KIND.NAME.KEY=VALUE or NAME.KEY=VALUE) -------------------------------
@dataclass
class OptionSet:
    """User overrides per component, typed against each component's ``Options`` dataclass."""

    values: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, items: tuple[str, ...] | list[str], registry: Registry) -> OptionSet:
        out = cls()
        for item in items:
            key, sep, text = item.partition("=")
            parts = key.strip().split(".")
            if not sep or len(parts) not in (2, 3):
                raise BenchError(f"option {item!r} is not KIND.NAME.KEY=VALUE or NAME.KEY=VALUE")
            kind, name = (parts[0], parts[1]) if len(parts) == 3 else (None, parts[0])
            entry = _find_component(registry, kind, name)
            owner = f"{entry.kind[:-1]} {entry.name!r}"
            options_cls = getattr(entry.obj, "Options", opts.NoOptions)
            value = opts.coerce(options_cls, parts[-1], text.strip(), owner)
            out.values.setdefault((entry.kind, entry.name), {})[parts[-1]] = value
            out.build(entry.kind, entry.name, entry.obj)  # validate now, even if unused
        return out

    def build(self, kind: str, name: str, component: type) -> Any:
        options_cls = getattr(component, "Options", opts.NoOptions)
        return opts.build(options_cls, self.values.get((kind, name), {}), f"{kind[:-1]} {name!r}")


def _find_component(registry: Registry, kind: str | None, name: str):
    if kind is not None:
        if kind not in KIND_OF:
            raise BenchError(f"unknown option kind {kind!r}; use one of {', '.join(KIND_OF)}")
        return registry.get(KIND_OF[kind], name)
    found = [
        registry.get(k, name)
        for k in ("sdes", "predictors", "correctors", "metrics")
        if name in registry.lookup[k]
    ]
    if len(found) != 1:
        what = "ambiguous" if found else "unknown"
        raise BenchError(
            f"{what} component {name!r} in an option: write KIND.{name}.KEY=VALUE "
            f"with KIND one of {', '.join(KIND_OF)}"
        )
    return found[0]


# -- devices, dtypes, threads --------------------------------------------------------------------
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bf16": torch.float32,
    "fp16": torch.float32,
}
"""The sampler state's dtype for each ``--dtype``: bf16/fp16 keep the state in float32 ..."""
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""... and run the score network under ``torch.autocast`` in that precision."""


def with_autocast(
    score_fn: Callable[[Tensor, float], Tensor], device: torch.device, dtype_name: str
) -> Callable[[Tensor, float], Tensor]:
    """The score function under autocast for ``--dtype bf16|fp16``, its output back in float32."""
    amp = AUTOCAST.get(dtype_name)
    if amp is None:
        return score_fn

    def score(x: Tensor, t: float) -> Tensor:
        with torch.autocast(device.type, dtype=amp):
            out = score_fn(x, t)
        return out.to(x.dtype)

    return score


def guard_cpu_autocast(dtype_name: str, device: torch.device) -> str | None:
    """Make CPU autocast safe; returns a warning if oneDNN had to be disabled.

    Some virtual machines advertise AMX but do not enable it: oneDNN's bf16 kernels then die
    with SIGILL, taking the whole sweep with them. A throwaway subprocess probes once; if it
    crashes, oneDNN is turned off for this process (slower, correct).
    """
    amp = AUTOCAST.get(dtype_name)
    if amp is None or device.type != "cpu" or _low_precision_matmul_works(str(amp)):
        return None
    torch.backends.mkldnn.enabled = False
    return (
        f"warning: {dtype_name} matrix products crash this CPU's oneDNN kernels (AMX not "
        f"enabled?); oneDNN is disabled for this run"
    )


@functools.lru_cache(maxsize=None)
def _low_precision_matmul_works(dtype: str) -> bool:
    import subprocess

    code = f"import torch; a = torch.ones(64, 64, dtype={dtype}); torch.mm(a, a)"
    try:
        return (
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, timeout=120
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def tf32_enabled(device: torch.device) -> bool:
    """Whether float32 matmuls/convolutions may use TF32 on this device (False on CPU)."""
    if device.type != "cuda":
        return False
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def resolve_device(text: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:k``; an unavailable device is a clear error."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise BenchError(f"invalid device {text!r}: use auto, cpu, cuda or cuda:K") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchError(f"device {text!r} requested but CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise BenchError(
                f"device {text!r} does not exist: this machine has {count} CUDA device(s)"
            )
    elif device.type != "cpu":
        raise BenchError(f"unsupported device {text!r}: use auto, cpu, cuda or cuda:K")
    return device


def resolve_threads(text: str, model: ScoreModel, device: torch.device) -> int:
    """CPU intra-op threads: ``auto`` is 1 for small oracle workloads, else torch's default.

    Small tensors on a busy machine suffer badly from thread oversubscription, so exact-score
    models (which declare ``preferred_threads = 1``) run single-threaded unless told otherwise.
    """
    if text != "auto":
        return int(text)
    if device.type == "cpu" and model.preferred_threads:
        return model.preferred_threads
    return torch.get_num_threads()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "sde_bench": bench.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# -- noise: the same seed gives every cell the same starting points ------------------------------
def prior_noise(seed: int, start: int, size: int, shape: tuple[int, ...]) -> Tensor:
    """Standard-normal z for samples start..start+size of a seed (float32, CPU).

    Each sample has its own generator, so its prior noise depends only on (seed, sample index) —
    not on the batch size or on which sampler consumes it.
    """
    out = torch.empty(size, *shape)
    generator = torch.Generator()
    for j in range(size):
        generator.manual_seed(derive_seed(seed, 0, start + j))
        out[j] = torch.randn(shape, generator=generator)
    return out


def step_noise(seed: int, batch: int, device: torch.device) -> Callable[[Tensor], Tensor]:
    """The per-step noise of one batch: a device generator seeded by (seed, batch index)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, 1, batch))

    def noise(x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    return noise


# -- the runner ------------------------------------------------------------------------------------
@dataclass
class CellContext:
    """Everything a cell needs besides its own config."""

    registry: Registry
    model: ScoreModel
    device: torch.device
    options: OptionSet
    threads: int
    save_samples: Callable[[Cell, Tensor], None] | None = None
    compile: str | None = None
    on_batch: Callable[[int], None] | None = None  # progress: called with each batch's size


@dataclass
class Sampled:
    """What sampling a cell produced (before metrics)."""

    score_calls: int = 0
    n_batches: int = 0
    n_samples: int = 0
    wall_clock_s: float = 0.0
    diverged_step: int | None = None
    diverged_t: float | None = None
    peak_memory_mb: float | None = None
    peak_rss_mb: float | None = None


class Components:
    """Builds the SDE, predictor, corrector and metric objects of a cell from the registry."""

    def __init__(self, ctx: CellContext) -> None:
        self.ctx = ctx

    def entry(self, kind: str, name: str):
        return self.ctx.registry.get(kind, name)

    def sde(self, name: str, steps: int) -> SDE:
        entry = self.entry("sdes", name)
        return entry.obj(steps, self.ctx.options.build("sdes", entry.name, entry.obj))

    def resolved_options(self, cell: dict[str, Any]) -> dict[str, Any]:
        """The full option values of a cell's components (defaults included), for its id."""

        def of(kind: str, name: str) -> dict[str, Any]:
            entry = self.entry(kind, name)
            return dataclasses.asdict(self.ctx.options.build(kind, entry.name, entry.obj))

        sde = self.sde(cell["sde"], cell["steps"])
        return {
            "sde": {**of("sdes", cell["sde"]), "eps": sde.eps},
            "predictor": of("predictors", cell["predictor"]),
            "corrector": of("correctors", cell["corrector"]),
            "metrics": {m: of("metrics", m) for m in cell["metrics"]},
        }

    def check(
        self, cell: Cell, sde: SDE
    ) -> tuple[type[Predictor], type[Corrector], list[type[Metric]]]:
        """The component classes; raises :class:`Unsupported` for pairings that cannot run."""
        predictor = self.entry("predictors", cell.predictor).obj
        corrector = self.entry("correctors", cell.corrector).obj
        check_pairing(self.ctx.model, sde, predictor, corrector, cell.probability_flow)
        metrics = [self.entry("metrics", m).obj for m in cell.metrics]
        for metric in metrics:
            metric.supports(self.ctx.model)
        return predictor, corrector, metrics


def check_pairing(
    model: ScoreModel,
    sde: SDE,
    predictor: type[Predictor],
    corrector: type[Corrector],
    probability_flow: bool = False,
) -> None:
    """Raise :class:`Unsupported` (with the reason) if the model, SDE, predictor and corrector
    cannot run together; the model's reason first, as the most fundamental."""
    model.check_sde(sde)
    predictor.supports(sde, probability_flow)
    corrector.supports(sde)


def run_cell(cell: Cell, ctx: CellContext) -> dict[str, Any]:
    """Run one cell. Every outcome is a row: ok, unsupported, diverged or error.

    An exception raised by plugin code becomes ``status="error"`` naming the plugin; the sweep
    goes on. ``KeyboardInterrupt`` is not caught: the sweep stops cleanly one level up.
    """
    parts = Components(ctx)
    row = base_row(cell, ctx, parts)
    try:
        return {**row, **_run_cell(cell, ctx, parts)}
    except Unsupported as exc:
        return {**row, "status": "unsupported", "reason": exc.reason}
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the sweep
        if interrupts.received():  # Ctrl-C that the plugin turned into another exception
            raise KeyboardInterrupt from exc
        plugin, where = blame(exc, ctx.registry)
        return {
            **row,
            "status": "error",
            "error_plugin": plugin,
            "reason": "; ".join(
                [
                    f"in {plugin} ({where}): {type(exc).__name__}: {exc}",
                    *getattr(exc, "__notes__", []),
                ]
            ),
        }


def _run_cell(cell: Cell, ctx: CellContext, parts: Components) -> dict[str, Any]:
    sde = parts.sde(cell.sde, cell.steps)
    predictor_cls, corrector_cls, metric_classes = parts.check(cell, sde)
    batch_size, notes = cell.batch_size, []
    while True:
        metrics = [
            m(
                ctx.model,
                cell.samples,
                device=ctx.device,
                options=ctx.options.build("metrics", m.name, m),
            )
            for m in metric_classes
        ]
        try:
            sampled = sample_cell(cell, ctx, sde, predictor_cls, corrector_cls, metrics, batch_size)
            break
        except (torch.OutOfMemoryError, MemoryError) as exc:
            if batch_size == 1:
                if notes:
                    exc.add_note("; ".join(notes) + "; gave up at batch size 1")
                raise
            notes.append(f"out of memory at batch size {batch_size}")
            batch_size = max(1, batch_size // 2)
            _free_memory(ctx.device)
    out: dict[str, Any] = {
        **timing_columns(sampled),
        "batch_size_used": batch_size,
        "peak_memory_mb": sampled.peak_memory_mb,
        "peak_rss_mb": sampled.peak_rss_mb,
    }
    if notes:
        out["reason"] = "; ".join(notes) + f"; retried with batch size {batch_size}"
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
    for metric in metrics:
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
    sde: SDE,
    predictor_cls: type[Predictor],
    corrector_cls: type[Corrector],
    metrics: list[Metric],
    batch_size: int | None = None,
) -> Sampled:
    """Sample all batches of a cell, timing sampling alone and feeding the metrics."""
    model, device = ctx.model, ctx.device
    dtype = DTYPES[cell.dtype]
    score = CountingScore(with_autocast(model.score_fn(sde), device, cell.dtype))
    out = Sampled()
    kept: list[Tensor] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()
    for b, (start, size) in enumerate(batches(cell.samples, batch_size or cell.batch_size)):
        x_T = sde.prior_sampling(
            prior_noise(cell.seed, start, size, model.data_shape).to(device, dtype)
        )
        build = _sampler_factory(cell, ctx, sde, score, predictor_cls, corrector_cls)
        predictor, corrector = build(step_noise(cell.seed, b, device))
        synchronize(device)
        t0 = time.perf_counter()
        x = pc_sample(sde, predictor, corrector, x_T, denoise=cell.denoise)
        synchronize(device)
        out.wall_clock_s += time.perf_counter() - t0
        out.n_batches += 1
        out.n_samples += size
        if not bool(torch.isfinite(x).all()):
            out.diverged_step, out.diverged_t = first_nonfinite_step(sde, build, cell, b, x_T)
            break
        data = model.to_data(x)
        for metric in metrics:
            metric.update(data)
        if ctx.save_samples is not None:
            kept.append(data.cpu())
        if ctx.on_batch is not None:
            ctx.on_batch(size)
    out.score_calls = score.calls
    if device.type == "cuda":
        out.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    out.peak_rss_mb = peak_rss_mb()
    if ctx.save_samples is not None and kept:
        ctx.save_samples(cell, torch.cat(kept))
    return out


def _sampler_factory(cell, ctx, sde, score, predictor_cls, corrector_cls):
    """A function noise → (predictor, corrector) for one batch."""
    p_opts = ctx.options.build("predictors", predictor_cls.name, predictor_cls)
    c_opts = ctx.options.build("correctors", corrector_cls.name, corrector_cls)

    def build(noise):
        predictor = predictor_cls(sde, score, cell.probability_flow, noise, p_opts)
        corrector = corrector_cls(
            sde, score, cell.snr or 0.0, cell.corrector_steps or 0, noise, c_opts
        )
        return predictor, corrector

    return build


def first_nonfinite_step(sde, build, cell, batch, x_T) -> tuple[int, float]:
    """Replay a diverged batch with the same noise, checking every step (diagnosis only)."""
    found: list[tuple[int, float]] = []

    def check(state: dict[str, Any]) -> None:
        if not found and not bool(torch.isfinite(state["x"]).all()):
            found.append((state["i"], state["t"]))

    predictor, corrector = build(step_noise(cell.seed, batch, x_T.device))
    pc_sample(sde, predictor, corrector, x_T, denoise=cell.denoise, callback=check)
    return found[0] if found else (sde.N - 1, sde.eps)


def timing_columns(sampled: Sampled) -> dict[str, Any]:
    wall = sampled.wall_clock_s
    calls = sampled.score_calls
    return {
        "nfe": calls / sampled.n_batches if sampled.n_batches else 0,
        "score_calls": calls,
        "wall_clock_s": wall,
        "samples_per_s": sampled.n_samples / wall if wall > 0 else math.nan,
        "s_per_nfe": wall / calls if calls else math.nan,
    }


def base_row(cell: Cell, ctx: CellContext, parts: Components) -> dict[str, Any]:
    """Config, environment and provenance columns every row carries."""
    cfg = cell.config()
    options = cfg.pop("options")
    row: dict[str, Any] = {"cell_id": cell.id, "status": None, "reason": "", **cfg}
    row["metrics"] = ",".join(cell.metrics)
    row["eps"] = options["sde"]["eps"]
    row["sde_options"] = _compact(options["sde"])
    row["predictor_options"] = _compact(options["predictor"])
    row["corrector_options"] = _compact(options["corrector"])
    row["metric_options"] = "; ".join(
        f"{m}: {_compact(v)}" for m, v in options["metrics"].items() if v
    )
    row["device"] = str(ctx.device)
    row["state_dtype"] = str(DTYPES[cell.dtype]).removeprefix("torch.")
    row["autocast"] = (
        str(AUTOCAST[cell.dtype]).removeprefix("torch.") if cell.dtype in AUTOCAST else None
    )
    row["tf32"] = tf32_enabled(ctx.device)
    row["compile"] = ctx.compile
    row["threads"] = ctx.threads  # CPU intra-op threads (also used beside a GPU)
    row["torch"] = torch.__version__
    row["sde_bench"] = bench.__version__
    row.update(provenance(cell, ctx, parts))
    row["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return row


def provenance(cell: Cell, ctx: CellContext, parts: Components) -> dict[str, str]:
    """The plugin behind each component of a cell (name, distribution and version, or a
    local file's hash): the ``*_provider`` columns. A resumed run reruns cells whose
    provenance changed, e.g. after an edit of a ``-p`` file."""
    out = {
        f"{KIND_OF_COLUMN[kind]}_provider": str(parts.entry(kind, name).provider)
        for kind, name in (
            ("sdes", cell.sde),
            ("predictors", cell.predictor),
            ("correctors", cell.corrector),
            ("score-models", ctx.model.name),
        )
    }
    out["metric_providers"] = "; ".join(
        f"{m}={parts.entry('metrics', m).provider}" for m in cell.metrics
    )
    return out


KIND_OF_COLUMN = {
    "sdes": "sde",
    "predictors": "predictor",
    "correctors": "corrector",
    "score-models": "model",
}


def _compact(values: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))
