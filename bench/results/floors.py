"""Metric floors: what exact samples (oracles) or real data (FID/KID) score at a cell's n, and
the rule that marks a value or a difference between samplers as inside it."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from bench.results.frame import FLOOR_DRAWS, Directions, floor_columns
from bench.results.text import fmt

FLOOR_Z = 2.0
"""Width of the floor band in standard deviations (about 95 % of exact draws fall inside)."""

FLOOR_MARK = "≈floor"
"""Appended to a value (or a difference between samplers) that lies inside its floor."""

SHORT_FLOOR_MARK = "≈"
"""The same mark in ``bench run``'s condensed table."""


@dataclass(frozen=True)
class Floor:
    """What exact samples score on a metric at the cell's n: the mean and standard deviation
    of the metric over ``draws`` independent exact sets (``inf`` when the rows do not say).

    The rule (also in ``docs/reports.md``), with z = :data:`FLOOR_Z`:

    * a mean over s seeds is *inside the floor* when it is within
      ``band(s) = z·sd·√(1/s + 1/draws)`` of the floor, or beyond it on the good side: for a
      lower-is-better metric, value ≤ floor + band; higher-is-better, value ≥ floor − band.
      An exact sampler's mean over s seeds lands there about 95 % of the time, so such a value
      cannot be told from exact sampling. Informational columns (``logp``) are not marked;
    * a difference between two samplers over p seed pairs is *inside the floor* when
      |difference| ≤ ``pair_band(p) = z·sd·√(2/p)``: two independent exact sets differ by as
      much, so the metric cannot rank the two samplers at this n.
    """

    mean: float
    sd: float
    draws: float = math.inf
    source: str = "exact samples"
    """What scores the floor: ``exact samples`` (oracles) or ``real data`` (FID/KID)."""

    def band(self, seeds: int) -> float:
        """Half-width of the floor band for a mean over ``seeds`` seeds."""
        return FLOOR_Z * self.sd * math.sqrt(1 / max(int(seeds), 1) + 1 / self.draws)

    def pair_band(self, pairs: int) -> float:
        """Largest difference between two samplers' means over ``pairs`` seeds that lies
        inside the floor."""
        return FLOOR_Z * self.sd * math.sqrt(2 / max(int(pairs), 1))

    def holds(self, value: float, direction: str, seeds: int) -> bool:
        """True when ``value`` (a mean over ``seeds`` seeds) is inside the floor."""
        if value is None or math.isnan(value):
            return False
        band = self.band(seeds)
        if direction == "lower":
            return value <= self.mean + band
        if direction == "higher":
            return value >= self.mean - band
        return False  # informational: no better side, nothing to rank

    def text(self) -> str:
        """``0.157 (sd 0.032)``."""
        return f"{fmt(self.mean)} (sd {self.sd:.2g})"


def floor_of(rows: pd.DataFrame, metric: str) -> Floor | None:
    """The floor of ``metric`` in ``rows`` (the ok cells, or summary rows, of one model and n:
    their values are averaged); None when the rows carry none."""
    if "status" in rows and "n_ok" not in rows:
        rows = rows[rows["status"] == "ok"]
    cols = floor_columns(rows, metric)
    if cols is None:
        return None
    mean = pd.to_numeric(rows[cols[0]], errors="coerce").dropna()
    sd = pd.to_numeric(rows[cols[1]], errors="coerce").dropna()
    if mean.empty or sd.empty:
        return None
    draws = math.inf
    if FLOOR_DRAWS in rows:
        counts = pd.to_numeric(rows[FLOOR_DRAWS], errors="coerce").dropna()
        draws = float(counts.min()) if len(counts) else math.inf
    return Floor(float(mean.mean()), float(sd.mean()), draws, floor_source(cols[0]))


def row_floor(row: Mapping[str, Any] | pd.Series, metric: str) -> Floor | None:
    """The floor of ``metric`` carried by one summary row (see :func:`floor_of`)."""
    for mean in (f"{metric}_ref", f"{metric}_floor"):
        m, sd = _real(row.get(mean)), _real(row.get(f"{mean}_std"))
        if m is not None and sd is not None:
            draws = _real(row.get(FLOOR_DRAWS))
            return Floor(m, sd, draws if draws else math.inf, floor_source(mean))
    return None


def floor_source(column: str) -> str:
    """``exact samples`` for an oracle's ``<metric>_ref``, ``real data`` for ``<metric>_floor``."""
    return "real data" if column.endswith("_floor") else "exact samples"


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return None if math.isnan(value) else float(value)


def floor_summary_columns(frame: pd.DataFrame, metrics: Iterable[str]) -> list[str]:
    """The floor columns of ``metrics`` (and ``floor_draws``) present in ``frame``: averaged by
    :func:`bench.results.stats.summarize` beside the metrics, so every summary row has its own."""
    out: list[str] = []
    for metric in metrics:
        cols = floor_columns(frame, metric)
        out += [c for c in cols or () if c not in out]
    if out and FLOOR_DRAWS in frame:
        out.append(FLOOR_DRAWS)
    return out


def inside_floor(row: Mapping[str, Any], metric: str, directions: Directions) -> bool:
    """True when a summary row's mean of ``metric`` lies inside its own floor."""
    floor = row_floor(row, metric)
    value = _real(row.get(metric))
    if floor is None or value is None:
        return False
    return floor.holds(value, directions(metric), int(row.get("n_ok") or 1))


FLOOR_RULE = (
    f"{FLOOR_MARK} marks a value within the floor: what exact samples (or, for FID/KID, real "
    "data) score at this n "
    f"(mean and sd over independent exact draws; within {FLOOR_Z:g} sd·√(1/seeds + 1/draws) of "
    f"it, or better), or a difference between samplers within {FLOOR_Z:g} sd·√(2/pairs): "
    "the metric cannot tell such a sampler from exact sampling, nor two such samplers apart."
)


def floor_row(floor: Floor) -> str:
    """The label of a pivot's last row, the floor's mean (sd) at the block's n."""
    return f"{floor.source} (floor)"


DATA_FLOOR_METRICS = ("fid", "kid")
"""Metrics whose floor is the data's own score at n (``bench fid-floor``): their rows would
carry it as ``<metric>_floor`` and ``<metric>_floor_std``; a report says when they do not."""


def draws_text(floor: Floor) -> str:
    """`` over K exact draws`` (empty when the rows do not say how many)."""
    return f" over {int(floor.draws)} exact draws" if math.isfinite(floor.draws) else ""


def floor_lines(frame: pd.DataFrame, metrics: Sequence[str], directions: Directions) -> list[str]:
    """One line per model and n giving every metric's floor, e.g. ``floor (exact samples,
    mean ± sd over 16 draws): swd↓ 0.157 ± 0.032, ...``."""
    keys = [c for c in ("model", "samples") if c in frame]
    ok = frame[frame["status"] == "ok"]
    groups = ok.groupby(keys, sort=False, dropna=False) if keys else [((), ok)]
    parts = []
    for values, rows in groups:
        found = [(m, floor_of(rows, m)) for m in metrics]
        found = [(m, f) for m, f in found if f is not None]
        if not found:
            continue
        values = values if isinstance(values, tuple) else (values,)
        where = ", ".join(f"{c}={fmt(v)}" if c != "model" else str(v) for c, v in zip(keys, values))
        draws = {f.draws for _, f in found}
        over = f"over {int(min(draws))} draws" if all(map(math.isfinite, draws)) else "over draws"
        text = ", ".join(f"{m}{directions.arrow(m)} {fmt(f.mean)} ± {f.sd:.2g}" for m, f in found)
        source = " / ".join(dict.fromkeys(f.source for _, f in found))
        parts.append(f"floor at {where} ({source}, mean ± sd {over}): {text}")
    if len(parts) > 1 and len({p.split(" (", 1)[1] for p in parts}) == 1:
        parts = parts[:1]
    return parts
