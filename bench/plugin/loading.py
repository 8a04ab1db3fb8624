"""Plugin loading: built-ins and third-party entry points, ``-p`` modules and ``--plugins-dir`` files.

One function, :func:`load`, builds a fresh :class:`pluggy.PluginManager` in phases and collects the
registry per plugin, so every component carries its provenance and a plugin that fails (at import
or while registering) is isolated: reported on one line and skipped, unless ``strict``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import os
import re
import sys
import traceback
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from bench import PROJECT
from bench.errors import BenchError
from bench.plugin import hookspecs
from bench.plugin.hookspecs import HOOKS
from bench.plugin.kinds import KINDS
from bench.plugin.registry import DuplicateName, Entry, Provider, Registry

DIST = "sde-bench"
LOCAL_PACKAGE = "bench_local_plugins"


@dataclass
class PluginRecord:
    """One plugin as ``bench plugins`` shows it."""

    name: str
    source: str  # builtin | entrypoint | module | file
    dist: str | None = None
    version: str | None = None
    sha256: str | None = None
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"
    error: str | None = None

    @property
    def provider(self) -> Provider:
        return Provider(self.name, self.source, self.dist, self.version, self.sha256)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadReport:
    """What :func:`load` did: the manager, every plugin with its status, and the registry."""

    pm: pluggy.PluginManager
    plugins: list[PluginRecord]
    registry: Registry

    @property
    def failures(self) -> list[PluginRecord]:
        return [p for p in self.plugins if p.status != "ok"]

    def header(self) -> str:
        """A pytest-style one-liner: ``plugins: sde-bench-0.1.0 (builtin), file:x.py@1a2b3c4d``."""
        seen: list[str] = []
        for p in self.plugins:
            if p.status != "ok":
                continue
            if p.source == "file":
                label = f"{p.name}@{(p.sha256 or '')[:8]}"
            elif p.dist:
                label = f"{p.dist}-{p.version}" + (" (builtin)" if p.source == "builtin" else "")
            else:
                label = p.name
            if label not in seen:
                seen.append(label)
        return "plugins: " + ", ".join(seen)


def load(
    *,
    modules: Iterable[str] = (),
    dirs: Iterable[str | os.PathLike[str]] = (),
    strict: bool = False,
    allow: Iterable[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> LoadReport:
    """Build a plugin manager with every plugin loaded and collect the registry.

    Args:
        modules: ``-p`` values: an importable module name or a path to a ``.py`` file. A failure
            is fatal (the user asked for it by name).
        dirs: ``--plugins-dir`` folders; every ``*.py`` not starting with ``_`` is loaded, in
            sorted order. A failure is fatal.
        strict: make a failing third-party entry-point plugin fatal instead of skipped.
        allow: distribution names whose entry points may load (``None``: all; empty: none).
            Built-ins always load.
        warn: where one-line warnings go (default: stderr).
    """
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    loader = _Loader(pm, strict, warn)
    loader.entry_points(None if allow is None else set(allow))
    for spec in modules:
        loader.explicit(spec)
    for d in dirs:
        loader.directory(Path(d))
    pm.check_pending()
    registry = loader.collect()
    return LoadReport(pm, loader.records, registry)


def env_list(name: str, sep: str = ",") -> list[str] | None:
    """A separated list from the environment; ``None`` if unset, ``[]`` if set but empty."""
    value = os.environ.get(name)
    if value is None:
        return None
    return [v.strip() for v in value.split(sep) if v.strip()]


class _Loader:
    def __init__(self, pm: pluggy.PluginManager, strict: bool, warn: Callable[[str], None]):
        self.pm = pm
        self.strict = strict
        self.warn = warn
        self.records: list[PluginRecord] = []
        self.objects: dict[str, object] = {}
        self.files: set[Path] = set()

    # -- phase 1: entry points (built-ins and third party) ---------------------------------------
    def entry_points(self, allow: set[str] | None) -> None:
        eps = sorted(
            md.entry_points(group=PROJECT), key=lambda ep: (_dist_name(ep) != DIST, ep.name)
        )
        if not any(_dist_name(ep) == DIST for ep in eps):
            raise BenchError(
                "sde-bench is not installed (no built-in entry points found): "
                "run `pip install -e .` in the sde-bench checkout"
            )
        names: dict[str, str] = {}
        for ep in eps:
            dist = _dist_name(ep)
            builtin = dist == DIST
            if not builtin and allow is not None and dist not in allow:
                continue
            name = ep.name
            if name in names:
                self.warn(
                    f"warning: entry point {name!r} is provided by both {names[name]} and {dist}; "
                    f"loading the second as '{dist}:{name}'"
                )
                name = f"{dist}:{name}"
            names[name] = dist or "?"
            record = PluginRecord(
                name, "builtin" if builtin else "entrypoint", dist, _dist_version(ep)
            )
            self._register(record, ep.load, fatal=builtin or self.strict)

    # -- phase 2: -p MODULE_OR_FILE ---------------------------------------------------------------
    def explicit(self, spec: str) -> None:
        path = Path(spec)
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise BenchError(f'Error importing plugin "{spec}": no such file')
            self.file(path)
            return
        record = PluginRecord(spec, "module")
        self._register(record, lambda: importlib.import_module(spec), fatal=True)

    # -- phase 3: --plugins-dir DIR ---------------------------------------------------------------
    def directory(self, folder: Path) -> None:
        if not folder.is_dir():
            raise BenchError(f"plugins directory {str(folder)!r} does not exist")
        for path in sorted(folder.glob("*.py")):
            if not path.name.startswith("_"):
                self.file(path)

    def file(self, path: Path) -> None:
        path = path.resolve()
        if path in self.files:
            return
        self.files.add(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        record = PluginRecord(f"file:{path.name}", "file", sha256=digest)
        self._register(record, lambda: _import_file(path), fatal=True)

    # -- registration with isolation ----------------------------------------------------------------
    def _register(self, record: PluginRecord, importer: Callable[[], object], fatal: bool) -> None:
        self.records.append(record)
        try:
            obj = importer()
            self.pm.register(obj, name=record.name)
            self.objects[record.name] = obj
            record.hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])
            unknown = [h for h in record.hooks if h not in HOOKS]
            if unknown:
                raise BenchError(f"unknown hook(s) {', '.join(unknown)} (misspelt?)")
        except Exception as exc:  # noqa: BLE001 - any plugin error is isolated or reported
            self._fail(record, exc, fatal)

    def _fail(self, record: PluginRecord, exc: BaseException, fatal: bool) -> None:
        obj = self.objects.pop(record.name, None)
        if obj is not None and self.pm.is_registered(obj):
            self.pm.unregister(obj)
        elif self.pm.has_plugin(record.name):
            self.pm.unregister(name=record.name)
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, BenchError) else str(exc)
        record.status = "failed"
        record.error = message
        if fatal:
            if os.environ.get("BENCH_DEBUG") and not isinstance(exc, BenchError):
                traceback.print_exception(exc, file=sys.stderr)
            raise BenchError(f'plugin "{record.name}" failed to load: {message}') from None
        self.warn(
            f"warning: skipped plugin {record.name!r} ({record.dist or record.source}): {message}"
        )

    # -- collecting the registry, per plugin -------------------------------------------------------
    def collect(self) -> Registry:
        registry = Registry()
        for record in self.records:
            if record.status != "ok":
                continue
            entries: list[Entry] = []
            try:
                entries = self._entries_of(record)
                for entry in entries:
                    registry.add(entry)
            except Exception as exc:  # noqa: BLE001
                for entry in entries:
                    _remove(registry, entry)
                fatal = (
                    record.source != "entrypoint" or self.strict or isinstance(exc, DuplicateName)
                )
                self._fail(record, exc, fatal=fatal)
        return registry

    def _entries_of(self, record: PluginRecord) -> list[Entry]:
        """Call each registration hook of one plugin through pluggy's own caller, restricted to
        that plugin; return what it registered (uncommitted, so a failure leaves no trace)."""
        buffered: list[Entry] = []
        probe = Registry()
        others = [p for p in self.pm.get_plugins() if self.pm.get_name(p) != record.name]
        for kind in KINDS:
            if kind.hook not in record.hooks:
                continue

            def register(
                obj: Any, /, *, name: str | None = None, aliases: Iterable[str] = (), _k=kind.key
            ) -> None:
                entry = probe.validate(_k, obj, name, tuple(aliases))
                buffered.append(Entry(_k, entry.name, obj, record.provider, entry.aliases))

            caller = self.pm.subset_hook_caller(kind.hook, remove_plugins=others)
            caller(register=register)
        return buffered


def _remove(registry: Registry, entry: Entry) -> None:
    current = registry.entries[entry.kind].get(entry.name)
    if current is not None and current.provider == entry.provider:
        del registry.entries[entry.kind][entry.name]
        for n in (entry.name, *entry.aliases):
            registry.lookup[entry.kind].pop(n, None)


def _import_file(path: Path) -> types.ModuleType:
    """Import a local ``.py`` plugin as ``bench_local_plugins.<stem>`` (dataclasses and pickling work)."""
    if LOCAL_PACKAGE not in sys.modules:
        package = types.ModuleType(LOCAL_PACKAGE)
        package.__path__ = []
        sys.modules[LOCAL_PACKAGE] = package
    module_name = f"{LOCAL_PACKAGE}.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _dist_name(ep: md.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    return re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()


def _dist_version(ep: md.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else None
