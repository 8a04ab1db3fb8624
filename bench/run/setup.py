"""The set-up shared by ``bench run`` and ``bench profile``: device, dtype, threads, TF32,
compile, eps, the model and the component options (``-o``).

:meth:`Environment.create` turns the command-line values into one object both commands use, so
the two cannot drift apart.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

import bench
from bench.core import options as opts
from bench.core.guidance import resolve_batching
from bench.core.metric import MetricContext
from bench.core.model import ScoreModel
from bench.errors import BenchError
from bench.plugin.kinds import BY_OPTION
from bench.plugin.registry import Entry, Registry
from bench.run.distributed import Ranks, local_device

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bf16": torch.float32,
    "fp16": torch.float32,
}
"""The sampler state's dtype for each ``--dtype``: bf16/fp16 keep the state in float32 ..."""
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""... and run the score network under ``torch.autocast`` in that precision."""


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
            entry = find_component(registry, kind, name, parts[-1])
            owner = f"{registry_singular(entry)} {entry.name!r}"
            options_cls = getattr(entry.obj, "Options", opts.NoOptions)
            values = out.values.setdefault((entry.kind, entry.name), {})
            if issubclass(options_cls, opts.FreeOptions):
                values.setdefault("values", {})[parts[-1]] = opts.literal(text.strip())
            else:
                values[parts[-1]] = opts.coerce(options_cls, parts[-1], text.strip(), owner)
            out.build(entry.kind, entry.name, entry.obj)  # validate now, even if unused
        return out

    def build(self, kind: str, name: str, component: type) -> Any:
        options_cls = getattr(component, "Options", opts.NoOptions)
        owner = f"{BY_OPTION_KEY[kind]} {name!r}"
        return opts.build(options_cls, self.values.get((kind, name), {}), owner)


BY_OPTION_KEY = {kind.key: kind.singular for kind in BY_OPTION.values()}


def registry_singular(entry: Entry) -> str:
    return BY_OPTION_KEY[entry.kind]


SHORT_FORM_KINDS = (
    "sdes",
    "schedules",
    "samplers",
    "predictors",
    "correctors",
    "score-models",
    "metrics",
)
"""Kinds whose components ``-o NAME.KEY=VALUE`` may name without a KIND."""


def find_component(registry: Registry, kind: str | None, name: str, key: str = "") -> Entry:
    """The component an option names, as ``KIND.NAME`` or a bare ``NAME`` that is unique (or
    unique among the components that declare an option ``key`` — ``edm.rho`` is the schedule's,
    ``diffusers.label`` the score model's — else among those with free-form options)."""
    if kind is not None:
        if kind not in BY_OPTION:
            raise BenchError(f"unknown option kind {kind!r}; use one of {', '.join(BY_OPTION)}")
        return registry.get(BY_OPTION[kind].key, name)
    found = [registry.get(k, name) for k in SHORT_FORM_KINDS if name in registry.lookup[k]]
    if len(found) > 1:  # the one that declares the key, else the one that takes any key
        declared = [e for e in found if key in opts.option_fields(e.obj.Options)]
        found = declared or [e for e in found if opts.accepts(e.obj.Options, key)] or found
    if len(found) != 1:
        what = "ambiguous" if found else "unknown"
        raise BenchError(
            f"{what} component {name!r} in an option: write KIND.{name}.KEY=VALUE "
            f"with KIND one of {', '.join(BY_OPTION)}"
        )
    return found[0]


# -- devices, dtypes, threads --------------------------------------------------------------------
def with_autocast(fn: Callable[..., Tensor], device: torch.device, dtype_name: str) -> Any:
    """The model function ``fn(x, t, *labels)`` under autocast for ``--dtype bf16|fp16``, its
    output back in float32."""
    amp = AUTOCAST.get(dtype_name)
    if amp is None:
        return fn

    def autocast_fn(x: Tensor, t: float, *args: Any) -> Tensor:
        with torch.autocast(device.type, dtype=amp):
            out = fn(x, t, *args)
        return out.to(x.dtype)

    return autocast_fn


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
    code = f"import torch; a = torch.ones(64, 64, dtype={dtype}); torch.mm(a, a)"
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


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


# -- the model and the names the user gave -------------------------------------------------------
def load_model(
    registry: Registry,
    spec: str,
    device: torch.device,
    dtype: torch.dtype,
    options: OptionSet | None = None,
) -> ScoreModel:
    """A score model from ``NAME[:ARG]``; a model with ``Options`` (e.g. a checkpoint's config)
    gets them from ``-o model.NAME.KEY=VALUE`` as ``load(..., options=...)``."""
    name, _, arg = spec.partition(":")
    entry = registry.get("score-models", name)
    extra = {}
    if getattr(entry.obj, "Options", opts.NoOptions) is not opts.NoOptions:
        extra["options"] = (options or OptionSet()).build("score-models", entry.name, entry.obj)
    return entry.obj.load(arg or None, device=device, dtype=dtype, **extra)


def default_sdes(model: ScoreModel) -> tuple[str, ...]:
    """The model's own SDE if it was trained for one, else every paper SDE."""
    return (model.trained_for,) if model.trained_for else ("ve", "vp", "subvp")


def canonical(registry: Registry, kind: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Registry names for user names and aliases (unknown names: a clear error)."""
    return tuple(dict.fromkeys(registry.get(kind, n).name for n in names))


def canonical_specs(registry: Registry, kind: str, specs: tuple[str, ...]) -> tuple[str, ...]:
    """Like :func:`canonical` for ``NAME[:ARG]`` specs (schedules such as ``file:PATH``)."""
    out = []
    for spec in specs:
        name, sep, arg = spec.partition(":")
        out.append(registry.get(kind, name).name + sep + arg)
    return tuple(dict.fromkeys(out))


@dataclass
class Environment:
    """Everything a run or a profile sets up once: device, dtype, threads, TF32, compile, the
    model, the component options (with eps and the model's SDE defaults applied) and the SDEs."""

    registry: Registry
    device: torch.device
    dtype: str
    threads: int
    model: ScoreModel
    options: OptionSet
    sdes: tuple[str, ...]
    compile_mode: str | None = None
    guidance_batch: str = "joint"
    """How a guided evaluation runs its two passes
    (:func:`bench.core.guidance.resolve_batching`)."""
    warnings: list[str] = field(default_factory=list)

    @property
    def state_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @classmethod
    def create(
        cls, registry: Registry, kw: dict[str, Any], ranks: Ranks | None = None
    ) -> Environment:
        """Set up from command-line values: ``device``, ``dtype``, ``model``, ``options``,
        ``threads``, and optionally ``sdes``, ``tf32``, ``compile_mode``, ``eps``,
        ``fid_weights``, ``guidance_batch``; under torchrun ``--device cuda`` is the rank's own
        GPU."""
        device = local_device(resolve_device(kw["device"]), ranks or Ranks())
        options = OptionSet.parse(list(kw.get("options") or ()), registry)
        if kw.get("fid_weights"):  # also from $BENCH_FID_WEIGHTS (the option's envvar)
            for metric in ("fid", "kid"):
                values = options.values.setdefault(("metrics", metric), {})
                values.setdefault("extractor", "inception-v3-compat")
                values.setdefault("weights", kw["fid_weights"])
        model = load_model(registry, kw["model"], device, DTYPES[kw["dtype"]], options)
        sdes = canonical(registry, "sdes", tuple(kw.get("sdes") or ()) or default_sdes(model))
        if kw.get("tf32") is not None:
            torch.backends.cuda.matmul.allow_tf32 = kw["tf32"]
            torch.backends.cudnn.allow_tf32 = kw["tf32"]
        if kw.get("compile_mode"):
            model.compile(kw["compile_mode"])
        env = cls(
            registry,
            device,
            kw["dtype"],
            resolve_threads(kw.get("threads", "auto"), model, device),
            model,
            options,
            sdes,
            kw.get("compile_mode"),
            resolve_batching(kw.get("guidance_batch") or "auto", device, model.exact),
        )
        warning = guard_cpu_autocast(kw["dtype"], device)
        if warning:
            env.warnings.append(warning)
        if kw.get("eps") is not None:
            opts.apply_sde_defaults(options.values, {s: {"eps": kw["eps"]} for s in sdes}, sdes)
        opts.apply_sde_defaults(options.values, model.sde_defaults, sdes)
        return env

    def metric_context(self, sde: Any = None) -> MetricContext:
        """What the run's metrics may use: the registry, the device, the cache folder and the
        cell's SDE."""
        from bench.fidelity.cache import cache_dir

        return MetricContext(self.registry, self.device, cache_dir(), sde)

    def model_fn(
        self, sde: Any, model: ScoreModel | None = None
    ) -> Callable[[Tensor, float], Tensor]:
        """The model's native function under ``sde``, under autocast for bf16/fp16."""
        return with_autocast((model or self.model).native_fn(sde), self.device, self.dtype)

    def conditional_fn(self, sde: Any) -> Callable[[Tensor, float, Tensor], Tensor]:
        """A conditional model's native ``fn(x, t, labels)`` under ``sde`` (autocast as above)."""
        return with_autocast(self.model.conditional_fn(sde), self.device, self.dtype)
