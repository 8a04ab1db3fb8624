"""Reports from results rows: pivot tables (sampler × steps) and paired differences.

``bench report`` builds a :class:`Report` from a run folder and renders it as a terminal table,
Markdown (for a CI job summary), CSV or parquet; ``bench run`` ends with the condensed form
(:mod:`bench.results.short_report`). Floors are in :mod:`bench.results.floors`, numbers and
tables as text in :mod:`bench.results.text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd

from bench.results.floors import (
    DATA_FLOOR_METRICS,
    FLOOR_MARK,
    FLOOR_RULE,
    Floor,
    draws_text,
    floor_of,
    floor_row,
    floor_summary_columns,
    inside_floor,
)
from bench.results.frame import (
    CONFIG_COLUMNS,  # noqa: F401  (re-exported: older callers import it from here)
    LABEL,
    Directions,
    floor_columns,
    is_numeric,
    key_value,
    metric_columns,
    to_frame,
    varying,
)
from bench.results.notes import not_ok_lines, table_notes, unplotted, unplotted_note
from bench.results.stats import context_columns, paired_differences, resolve_sampler, summarize
from bench.results.text import estimate, fmt, heading, markdown_table, signed, text_table

TIME_COLUMNS = ("nfe", "wall_clock_s")


def time_columns(frame: pd.DataFrame) -> list[str]:
    """``nfe``, then ``nfe_nominal`` where some sampler spends other than it claims (or its
    NFE is not known in advance), then ``wall_clock_s``: differences are shown, not hidden."""
    cols = [c for c in TIME_COLUMNS if c in frame]
    if "nfe_nominal" in frame and "nfe" in frame:
        ok = frame[frame["status"] == "ok"]
        nominal = pd.to_numeric(ok["nfe_nominal"], errors="coerce").astype(float)
        counted = pd.to_numeric(ok["nfe"], errors="coerce").astype(float)
        if not nominal.equals(counted):  # as floats: an int column equals its float twin
            cols.insert(1, "nfe_nominal")
    return cols


BLOCK_BASE = ("model", "sde")
SKIP_IN_BLOCK = ("steps", "seed", "metrics", "eps", "sde_options")


# -- the report -----------------------------------------------------------------------------------
@dataclass
class Report:
    """Everything ``bench report`` shows, computed once from the rows.

    Attributes:
        frame: the rows (one per cell).
        summary: one row per group of seeds with means and CI half-widths
            (see :func:`bench.results.stats.summarize`).
        metrics: the metric columns tabulated.
        directions: the direction of each column.
        confidence: level of every interval.
        baseline: the baseline sampler of the paired differences, if any.
        paired: the paired differences (empty without a baseline).
        title: a heading (e.g. the run folder).
        pair_by: what paired cells share besides the context: ``steps`` or ``nfe``.
    """

    frame: pd.DataFrame
    summary: pd.DataFrame
    metrics: list[str]
    directions: Directions
    confidence: float = 0.95
    baseline: str | None = None
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    title: str = "sde-bench report"
    pair_by: str = "steps"

    @property
    def max_seeds(self) -> int:
        return int(self.summary["seeds"].max()) if len(self.summary) else 0


def build_report(
    rows: Iterable[dict[str, Any]] | pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    baseline: str | None = None,
    confidence: float = 0.95,
    directions: Directions | None = None,
    title: str = "sde-bench report",
    pair_by: str = "steps",
) -> Report:
    """Summarise rows over seeds and, with a baseline sampler, pair every other sampler with it.

    Args:
        rows: results rows, or a frame from :func:`bench.results.frame.to_frame`.
        metrics: metric columns to tabulate (default: every non-informational metric column).
        baseline: a sampler label (or a unique prefix of one) for paired differences.
        confidence: level of the t-intervals.
        directions: column directions (default: the fallback table only).
        title: heading of the rendered report.
        pair_by: pair cells at equal ``steps`` (default) or at equal counted ``nfe`` (a Heun
            cell of N steps, 2N − 1 NFE, beside a one-evaluation solver at 2N − 1 steps).
    """
    frame = rows if isinstance(rows, pd.DataFrame) else to_frame(rows)
    directions = directions or Directions()
    chosen = list(metrics) if metrics else metric_columns(frame, include_info=False)
    _check_columns(frame, chosen)
    columns = chosen + [c for c in floor_summary_columns(frame, chosen) if c not in chosen]
    columns += [c for c in time_columns(frame) if c not in columns]
    summary = summarize(frame, columns, confidence, describe=provenance_columns(frame, chosen))
    report = Report(frame, summary, chosen, directions, confidence, title=title, pair_by=pair_by)
    if baseline:
        report.baseline = resolve_sampler(frame, baseline)
        report.paired = paired_differences(
            frame, report.baseline, chosen, confidence, directions, pair_by=pair_by
        )
    return report


def _check_columns(frame: pd.DataFrame, wanted: Sequence[str]) -> None:
    from bench.errors import BenchError

    missing = [c for c in wanted if c not in frame]
    if missing:
        known = metric_columns(frame) + [c for c in TIME_COLUMNS if c in frame]
        raise BenchError(
            f"no column {', '.join(map(repr, missing))} in these results; "
            f"metric columns: {', '.join(known) or '(none)'}"
        )


# -- what each metric column was measured with ---------------------------------------------------
PROVENANCE = ("extractor", "n", "ref", "ref_n")
"""Columns ``<metric>_<suffix>`` that say how a metric was measured: its feature extractor, its
number of samples, its reference set (a name, e.g. ``digits:train``) and that set's size."""


def metric_owner(frame: pd.DataFrame, column: str) -> str | None:
    """The requested metric (a name in the ``metrics`` column) that returns ``column``; without
    a ``metrics`` column, ``column`` itself when the frame has provenance columns for it."""
    names = {
        n for m in frame.get("metrics", pd.Series(dtype=object)).dropna() for n in str(m).split(",")
    }
    owners = [n for n in names if n and (column == n or column.startswith(n + "_"))]
    if not owners and any(f"{column}_{suffix}" in frame for suffix in PROVENANCE):
        return column
    return max(owners, key=len, default=None)


def provenance_columns(frame: pd.DataFrame, metrics: Iterable[str]) -> list[str]:
    """The provenance columns (:data:`PROVENANCE`) of the metrics' owners present in ``frame``;
    a numeric ``<metric>_ref`` is a reference *value* (e.g. ``logp_ref``), not a set, and is left
    out."""
    out: list[str] = []
    for metric in metrics:
        owner = metric_owner(frame, metric)
        for suffix in PROVENANCE if owner else ():
            col = f"{owner}_{suffix}"
            numeric_ref = suffix == "ref" and col in frame and is_numeric(frame[col])
            if col in frame and col not in out and not numeric_ref:
                out.append(col)
    return out


def provenance(rows: pd.DataFrame, metric: str) -> str:
    """How ``metric`` was measured in ``rows`` (their ok cells), e.g.
    ``digits-classifier@4fe071e4, n=64 vs digits:train n=1437``, or ``n=300`` for an oracle
    metric; ``n=64–360 (varies)`` when the cells differ (such values only compare at equal n).
    Empty when the rows carry no provenance column."""
    owner = metric_owner(rows, metric)
    if owner is None:
        return ""
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    extractor = _distinct(ok, f"{owner}_extractor")
    n = _span(ok, f"{owner}_n")
    head = ", ".join(p for p in (extractor, f"n={n}" if n else "") if p)
    ref_col = f"{owner}_ref"
    ref = _distinct(ok, ref_col) if ref_col in ok and not is_numeric(ok[ref_col]) else ""
    ref_n = _span(ok, f"{owner}_ref_n")
    tail = f"vs {ref or 'reference'}" + (f" n={ref_n}" if ref_n else "") if ref or ref_n else ""
    return " ".join(p for p in (head, tail) if p)


def _distinct(rows: pd.DataFrame, col: str) -> str:
    if col not in rows:
        return ""
    return " | ".join(str(v) for v in dict.fromkeys(rows[col].dropna()) if str(v))


def _span(rows: pd.DataFrame, col: str) -> str:
    if col not in rows:
        return ""
    values = pd.to_numeric(rows[col], errors="coerce").dropna()
    if values.empty:
        return ""
    lo, hi = float(values.min()), float(values.max())
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)} (varies)"


def rows_of(frame: pd.DataFrame, block: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """The rows of ``frame`` that share ``block``'s values of ``columns`` (constant in a block)."""
    mask = pd.Series(True, index=frame.index)
    for col in columns:
        if col in frame and col in block and len(block):
            mask &= frame[col].map(key_value) == key_value(block[col].iloc[0])
    return frame[mask]


# -- blocks and pivots ----------------------------------------------------------------------------
def block_columns(summary: pd.DataFrame) -> list[str]:
    """Model and SDE, plus any other context column that varies (samples, dtype, ...). A column
    set for some rows only (``denoise``, which whole samplers do not take) splits nothing unless
    its set values differ."""
    context = [c for c in context_columns(summary) if c not in SKIP_IN_BLOCK + BLOCK_BASE]
    extra = [c for c in context if summary[c].nunique(dropna=True) > 1]
    return [c for c in BLOCK_BASE if c in summary] + extra


def varying_within(frame: pd.DataFrame, columns: Iterable[str], by: str) -> list[str]:
    """Columns that take several values inside one value of ``by`` (e.g. not ``eps``, which
    only follows the SDE)."""
    if by not in frame:
        return varying(frame, columns)
    return [
        c
        for c in columns
        if c in frame
        and c != by
        and (frame.groupby(by, dropna=False)[c].nunique(dropna=False) > 1).any()
    ]


def blocks(summary: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(title, rows) per block, in the order the blocks first appear."""
    cols = block_columns(summary)
    if not cols:
        yield "", summary
        return
    for values, rows in summary.groupby(cols, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        parts = [str(v) if c in BLOCK_BASE else f"{c}={v}" for c, v in zip(cols, values)]
        yield " · ".join(parts), rows


def pivot(block: pd.DataFrame, metric: str, directions: Directions) -> pd.DataFrame:
    """Samplers × steps for one metric: ``mean ± ci`` with NFE and wall-clock beside it.

    Columns are ``N=<steps> <metric><arrow>``, ``N=<steps> nfe`` and ``N=<steps> s`` for every
    number of steps; a cell that did not run shows its status instead of a value.
    """
    steps = sorted(block["steps"].dropna().unique()) if "steps" in block else [None]
    samplers = list(dict.fromkeys(block[LABEL]))
    floor = floor_of(block, metric)
    table = pd.DataFrame({"sampler": samplers + ([floor_row(floor)] if floor else [])})
    for n in steps:
        rows = block[block["steps"] == n] if n is not None else block
        by_sampler = rows.set_index(LABEL)
        head = f"N={fmt(n)} " if n is not None else ""
        cells = [
            _cells(by_sampler.loc[s] if s in by_sampler.index else None, metric, directions)
            for s in samplers
        ]
        if floor:
            cells.append((floor.text(), "-", "-"))
        table[f"{head}{metric}{directions.arrow(metric)}"] = [c[0] for c in cells]
        table[f"{head}nfe"] = [c[1] for c in cells]
        table[f"{head}s"] = [c[2] for c in cells]
    return table


def _cells(
    row: pd.Series | None, metric: str, directions: Directions | None = None
) -> tuple[str, str, str]:
    """The (metric, NFE, seconds) texts of one summary row."""
    if row is None:
        return "", "", ""
    if isinstance(row, pd.DataFrame):  # duplicate labels: keep the first
        row = row.iloc[0]
    status = str(row["status"])
    if row["n_ok"] == 0:
        return status, "-", "-"
    value = estimate(row[metric], row[f"{metric}_ci"])
    if directions is not None and inside_floor(row, metric, directions):
        value += f" {FLOOR_MARK}"
    if status != "ok":
        value += f" ({status})"
    nfe = fmt(row.get("nfe", math.nan))
    wall = fmt(row.get("wall_clock_s", math.nan), 3)
    return value, nfe, wall


def paired_pivot(paired: pd.DataFrame, metric: str, floor: Floor | None = None) -> pd.DataFrame:
    """Samplers × steps of ``diff ± ci verdict`` for one metric of one block; with the
    metric's ``floor``, a difference inside it (:meth:`Floor.pair_band`) is marked."""
    rows = paired[paired["metric"] == metric]
    if rows.empty:
        return pd.DataFrame()

    def cell(d: float, c: float, v: str, pairs: int) -> str:
        if v == "same":
            return v
        text = f"{signed(d, c)} {v}"
        if floor is not None and abs(d) <= floor.pair_band(pairs):
            text += f" {FLOOR_MARK}"
        return text

    pairs = rows["pairs"] if "pairs" in rows else pd.Series(1, index=rows.index)
    by = "nfe" if "baseline_steps" in rows else "steps"
    text = rows.assign(
        cell=[
            cell(d, c, v, p)
            for d, c, v, p in zip(rows["diff"], rows["diff_ci"], rows["verdict"], pairs)
        ]
    )
    if by not in text:
        return text[[LABEL, "cell"]].rename(columns={LABEL: "sampler"})
    if by == "nfe":  # each side's steps, since they differ: "N=19 vs 10"
        text["cell"] = [
            f"{c} (N={fmt(n)} vs {fmt(b)})"
            for c, n, b in zip(text["cell"], text["steps"], text["baseline_steps"])
        ]
    table = text.pivot_table(index=LABEL, columns=by, values="cell", aggfunc="first", sort=False)
    table = table[sorted(table.columns)]
    table.columns = [f"{'NFE' if by == 'nfe' else 'N'}={fmt(c)}" for c in table.columns]
    return table.reset_index().rename(columns={LABEL: "sampler"})


# -- rendering ------------------------------------------------------------------------------------
def render(report: Report, markdown: bool = False) -> str:
    """The whole report as terminal text or Markdown."""
    table = markdown_table if markdown else text_table
    out = [heading(report.title, 1, markdown), _preamble(report)]
    for title, block in blocks(report.summary):
        out.append(heading(title or "all cells", 2, markdown))
        cells = rows_of(report.frame, block, block_columns(report.summary))
        for metric in report.metrics:
            out.append(heading(_metric_title(report, metric, cells), 3, markdown))
            out.append(table(pivot(block, metric, report.directions)))
    if report.baseline:
        out += _render_paired(report, markdown)
    bullet = "- " if markdown else "  "
    remarks = report_notes(report)
    if remarks:
        out.append(heading("notes", 2, markdown))
        out.append("\n".join(bullet + n for n in remarks))
    notes = not_ok_lines(report.frame)
    if notes:
        out.append(heading("cells not ok", 2, markdown))
        out.append("\n".join(bullet + n for n in notes))
    return "\n\n".join(out) + "\n"


def report_notes(report: Report) -> list[str]:
    """The notes under the tables (:func:`bench.results.notes.table_notes`), and the metrics
    the plots leave out because they cannot separate the cells."""
    ranked = [m for m in report.metrics if report.directions(m) != "info"]
    notes = table_notes(report.frame, report.summary, ranked, report.directions)
    return notes + unplotted_note(unplotted(report.summary, report.metrics, report.directions))


def _render_paired(report: Report, markdown: bool) -> list[str]:
    table = markdown_table if markdown else text_table
    at = " at equal NFE" if report.pair_by == "nfe" else ""
    out = [
        heading(f"paired differences vs {report.baseline}{at}", 2, markdown),
        (
            "cells at the same counted NFE (columns NFE=…; each cell gives the sampler's and the "
            "baseline's steps), "
            if at
            else ""
        )
        + "metric(sampler) − metric(baseline) on the same seeds (shared prior noise), mean ± "
        f"{report.confidence:.0%} CI over seed pairs; better/worse when the interval "
        "excludes 0, ~ when it does not (or with a single seed), same when identical; "
        f"{FLOOR_MARK} when the difference is within the floor (two exact sets differ as much).",
    ]
    if report.paired.empty:
        what = "NFE, seeds and config" if at else "seeds and config"
        return out + [f"(no pairs: the baseline shares no {what} with other samplers)"]
    cols = [c for c in block_columns(report.summary) if c in report.paired]
    for title, block in _paired_blocks(report):
        out.append(heading(title or "all cells", 3, markdown))
        cells = rows_of(report.frame, block, cols)
        for metric in report.metrics:
            pivoted = paired_pivot(block, metric, floor_of(cells, metric))
            if not pivoted.empty:
                how = provenance(cells, metric)
                name = f"{metric}{report.directions.arrow(metric)}" + (f" ({how})" if how else "")
                out += [name, table(pivoted)]
    return out


def _paired_blocks(report: Report) -> Iterator[tuple[str, pd.DataFrame]]:
    cols = [c for c in block_columns(report.summary) if c in report.paired]
    if not cols:
        yield "", report.paired
        return
    for values, rows in report.paired.groupby(cols, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        yield " · ".join(str(v) for v in values), rows


def _metric_title(report: Report, metric: str, cells: pd.DataFrame | None = None) -> str:
    """``fid (lower is better): digits-classifier@4fe071e4, n=64 vs digits:train n=1437``."""
    way = {"lower": "lower is better", "higher": "higher is better", "info": "informational"}
    rows = report.frame if cells is None else cells
    how = provenance(rows, metric)
    floor = floor_of(rows, metric)
    if floor is not None:
        how += ("; " if how else "") + f"floor {floor.text()}" + draws_text(floor)
    elif metric_owner(rows, metric) in DATA_FLOOR_METRICS:
        how += ("; " if how else "") + "no floor in these rows (see `bench fid-floor`)"
    return f"{metric} ({way[report.directions(metric)]})" + (f": {how}" if how else "")


def _preamble(report: Report) -> str:
    frame = report.frame
    counts = frame["status"].value_counts()
    status = ", ".join(f"{n} {s}" for s, n in counts.items())
    seeds = sorted(frame["seed"].dropna().unique()) if "seed" in frame else []
    seeds_text = ",".join(fmt(s) for s in seeds) or "-"
    if report.max_seeds > 1:
        stat = (
            f"mean ± {report.confidence:.0%} CI (Student t) over seeds; "
            "nfe and s (wall-clock seconds of sampling) are means"
        )
    else:
        stat = "one seed per cell: no intervals; s is wall-clock seconds of sampling"
    floors = FLOOR_RULE if any(floor_of(frame, m) for m in report.metrics) else ""
    parts = [f"{len(frame)} cells ({status}) · seeds {seeds_text} · {stat}.", floors]
    return " ".join(p for p in [*parts, reference_note(frame)] if p)


def reference_note(frame: pd.DataFrame) -> str:
    """Constant informational ``*_ref`` columns that are not floors (``logp_ref`` of older
    rows, with no spread) as one sentence."""
    floors = {c for m in metric_columns(frame) for c in floor_columns(frame, m) or ()}
    info = [c for c in metric_columns(frame) if c.endswith("_ref") and c not in floors]
    ok = frame[frame["status"] == "ok"]
    values = [f"{c}={fmt(ok[c].iloc[0])}" for c in info if c in ok and ok[c].nunique() == 1]
    return f"Exact-sample reference values: {', '.join(values)}." if values else ""
