"""Name → component registry, collected per plugin so every entry knows who provided it."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError
from bench.plugin.kinds import BY_KEY, KEYS


class DuplicateName(BenchError):
    """Two plugins claim one component name: always an error, naming both providers."""


NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Provider:
    """Where a component came from: the plugin, its source kind, distribution and version."""

    plugin: str
    source: str
    dist: str | None = None
    version: str | None = None
    sha256: str | None = None

    def __str__(self) -> str:
        if self.source == "file":
            return f"{self.plugin}@{(self.sha256 or '')[:8]}"
        if self.dist:
            return f"{self.plugin} ({self.dist} {self.version})"
        return f"{self.plugin} ({self.source})"


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    name: str
    obj: Any
    provider: Provider
    aliases: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        doc = (getattr(self.obj, "__doc__", None) or "").strip()
        return doc.splitlines()[0].strip() if doc else ""


@dataclass
class Registry:
    """All components by kind; names and aliases share one namespace per kind."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KEYS})
    lookup: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in KEYS})

    def validate(self, kind: str, obj: Any, name: str | None, aliases: tuple[str, ...]) -> Entry:
        """Check one registration and return its (provider-less) entry; raise on bad input."""
        singular = BY_KEY[kind].singular
        base = BY_KEY[kind].base_class()
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise TypeError(f"{singular} {obj!r} must be a subclass of {base.__name__}")
        given = name or getattr(obj, "name", None)
        aliases = tuple(aliases) or tuple(getattr(obj, "aliases", ()))
        for n in (given, *aliases):
            if not isinstance(n, str) or not NAME_RE.match(n):
                raise ValueError(f"invalid {singular} name {n!r}: use [a-z][a-z0-9_-]*")
        assert isinstance(given, str)
        return Entry(kind, given, obj, Provider("?", "?"), aliases)

    def conflicts(self, entry: Entry) -> list[str]:
        """Messages for each name of ``entry`` already taken, naming both providers."""
        out = []
        for n in (entry.name, *entry.aliases):
            owner = self.lookup[entry.kind].get(n)
            if owner is not None:
                other = self.entries[entry.kind][owner].provider
                out.append(
                    f"duplicate {BY_KEY[entry.kind].singular} name {n!r}: provided by {other} "
                    f"and by {entry.provider}"
                )
        return out

    def add(self, entry: Entry) -> None:
        problems = self.conflicts(entry)
        if problems:
            raise DuplicateName("; ".join(problems))
        self.entries[entry.kind][entry.name] = entry
        for n in (entry.name, *entry.aliases):
            self.lookup[entry.kind][n] = entry.name

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``name`` or one of its aliases; a clear error with a suggestion if absent."""
        canonical = self.lookup[kind].get(name)
        if canonical is None:
            raise BenchError(unknown_name_message(kind, name, sorted(self.lookup[kind])))
        return self.entries[kind][canonical]


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {BY_KEY[kind].singular} {name!r}.{hint} Valid names: {', '.join(valid) or '(none)'}"
