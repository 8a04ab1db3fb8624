"""The settings of ``bench compare``: tolerances (``--max-regression``), renames, and the
``[tool.sde-bench.compare]`` table of ``pyproject.toml``."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.errors import BenchError

DEFAULT_EXTRA_GATED = ("nfe",)
"""Gated besides the metrics by default: the number of score evaluations is deterministic, and a
sampler that starts calling the network more often is a cost regression."""


# -- tolerances -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """How much worse a metric may get: ``relative`` × |old| + ``absolute``.

    Written ``5%`` (relative), ``0.01`` (absolute) or ``5%+0.01`` (both: the absolute part is a
    floor for values near zero).
    """

    relative: float = 0.0
    absolute: float = 0.0

    @classmethod
    def parse(cls, text: str | float) -> Tolerance:
        """``"5%"`` → 5 % of |old|, ``"0.01"`` or ``0.01`` → 0.01, ``"5%+0.01"`` → both."""
        relative = absolute = 0.0
        for part in str(text).replace(" ", "").split("+"):
            try:
                value = float(part.rstrip("%"))
            except ValueError:
                raise BenchError(
                    f"invalid tolerance {text!r}: use 0.01 (absolute), 5% (relative "
                    "to the baseline value) or 5%+0.01"
                ) from None
            if value < 0 or math.isnan(value):
                raise BenchError(f"invalid tolerance {text!r}: it must be non-negative")
            if part.endswith("%"):
                relative += value / 100
            else:
                absolute += value
        return cls(relative, absolute)

    def allowed(self, old: float) -> float:
        """The largest worsening tolerated for a baseline value ``old``."""
        return self.relative * abs(old) + self.absolute

    def __str__(self) -> str:
        parts = ([f"{self.relative * 100:g}%"] if self.relative else []) + (
            [f"{self.absolute:g}"] if self.absolute or not self.relative else []
        )
        return "+".join(parts)


@dataclass
class Settings:
    """What to gate and how much worsening to tolerate.

    Attributes:
        metrics: the gated columns (``None``: every non-informational metric column common to
            both runs, plus ``nfe``).
        tolerances: per-column tolerances.
        default: the tolerance of gated columns without their own.
        confidence: level of the noise intervals.
        allow_missing: do not fail when groups of the baseline are missing from the current run.
        renames: ``{column: {new_value: old_value}}`` applied to the current run before
            matching (e.g. compare a renamed predictor plugin against the built-in it replaces).
    """

    metrics: list[str] | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    default: Tolerance = field(default_factory=lambda: Tolerance())
    confidence: float = 0.95
    allow_missing: bool = False
    renames: dict[str, dict[str, str]] = field(default_factory=dict)

    def tolerance(self, metric: str) -> Tolerance:
        return self.tolerances.get(metric, self.default)


def parse_max_regression(items: Sequence[str]) -> tuple[Tolerance | None, dict[str, Tolerance]]:
    """``--max-regression`` values: ``5%`` (the default) or ``METRIC=TOL`` (one metric)."""
    default: Tolerance | None = None
    per_metric: dict[str, Tolerance] = {}
    for item in items:
        name, sep, tol = item.rpartition("=")
        if sep and name.strip():
            per_metric[name.strip()] = Tolerance.parse(tol)
        else:
            default = Tolerance.parse(tol)
    return default, per_metric


def parse_renames(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``--rename COLUMN.NEW=OLD`` values, e.g. ``predictor.my_rd=reverse_diffusion``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        match = re.fullmatch(r"\s*([a-z_]+)\.([^=]+)=(.+)", item)
        if not match:
            raise BenchError(
                f"invalid rename {item!r}: use COLUMN.NEW=OLD, "
                "e.g. predictor.my_rd=reverse_diffusion"
            )
        column, new, old = (g.strip() for g in match.groups())
        out.setdefault(column, {})[new] = old
    return out


# -- pyproject.toml -------------------------------------------------------------------------------
def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` in ``start`` (default: the working directory) or above."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / "pyproject.toml"
    return None


def read_pyproject(path: Path | None) -> dict[str, Any]:
    """The ``[tool.sde-bench.compare]`` table of a pyproject file (empty if absent)."""
    if path is None:
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from None
    table = data.get("tool", {}).get("sde-bench", {}).get("compare", {})
    if not isinstance(table, dict):
        raise BenchError(f"{path}: [tool.sde-bench.compare] must be a table")
    return table


def settings_from(
    config: Mapping[str, Any],
    *,
    metrics: Sequence[str] = (),
    max_regression: Sequence[str] = (),
    confidence: float | None = None,
    allow_missing: bool = False,
    renames: Sequence[str] = (),
) -> Settings:
    """Settings from a pyproject table, overridden by command-line values.

    Precedence for a metric's tolerance: a ``--max-regression METRIC=TOL``; a bare
    ``--max-regression TOL``; the metric's entry under ``max-regression`` in pyproject; that
    table's ``default``; 0.
    """
    unknown = set(config) - {"metrics", "max-regression", "confidence", "allow-missing"}
    if unknown:
        raise BenchError(
            f"unknown key(s) in [tool.sde-bench.compare]: {', '.join(sorted(unknown))}"
        )
    file_default, file_tols = _file_tolerances(config.get("max-regression", {}))
    cli_default, cli_tols = parse_max_regression(max_regression)
    tolerances = {**file_tols, **cli_tols}
    if cli_default is not None:
        tolerances = cli_tols
    gated = list(metrics) or config.get("metrics") or None
    return Settings(
        metrics=list(gated) if gated else None,
        tolerances=tolerances,
        default=cli_default or file_default or Tolerance(),
        confidence=confidence or float(config.get("confidence", 0.95)),
        allow_missing=allow_missing or bool(config.get("allow-missing", False)),
        renames=parse_renames(renames),
    )


def _file_tolerances(value: Any) -> tuple[Tolerance | None, dict[str, Tolerance]]:
    if isinstance(value, (str, int, float)):
        return Tolerance.parse(value), {}
    if not isinstance(value, dict):
        raise BenchError("[tool.sde-bench.compare] max-regression must be a string or a table")
    tols = {k: Tolerance.parse(v) for k, v in value.items()}
    return tols.pop("default", None), tols
