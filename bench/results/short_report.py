"""The table ``bench run`` prints at the end of a run: the condensed form of ``bench report``."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from bench.results.floors import (
    FLOOR_Z,
    SHORT_FLOOR_MARK,
    floor_lines,
    floor_summary_columns,
    inside_floor,
)
from bench.results.frame import (
    LABEL,
    SAMPLER_COLUMNS,
    Directions,
    group_columns,
    metric_columns,
    to_frame,
)
from bench.results.notes import table_notes
from bench.results.report import (
    metric_owner,
    not_ok_lines,
    provenance,
    reference_note,
    time_columns,
    varying_within,
)
from bench.results.stats import summarize
from bench.results.text import aligned, fmt, rounded, wrap

WIDTH = 120
"""Columns the table and its notes fit in (a table with more metrics than fit side by side is
printed in several parts, each repeating the sampler columns)."""

FLOOR_LINE = (
    f"{SHORT_FLOOR_MARK} : inside the floor (within {FLOOR_Z:g} sd·√(1/seeds + 1/draws) of what "
    "exact samples or real data score at this n, or better): not distinguishable from exact "
    "sampling, so not ranked by this metric; see docs/reports.md"
)


def short_report(
    rows: list[dict[str, Any]],
    confidence: float = 0.95,
    *,
    registry: Any | None = None,
    directions: Directions | None = None,
    width: int = WIDTH,
) -> str:
    """The table ``bench run`` prints: one line per config (mean ± CI when there are several
    seeds) with the sampler's schedule, steps, NFE (counted, and nominal where they differ),
    seconds and every metric that ranks samplers; then how each metric was measured, its floor,
    notes on what would look like a bug, and the cells that are not ok, one line per reason.
    It is the condensed form of ``bench report``, which also has the informational metrics
    (``logp``), the paired differences and the plots.

    Args:
        rows: the run's rows.
        confidence: level of the intervals.
        registry: the plugin registry, so that a loaded metric's ``higher_is_better`` sets its
            arrow (:meth:`bench.results.frame.Directions.from_registry`).
        directions: the directions to use (overrides ``registry``).
        width: the columns every line fits in (a wider table is printed in parts).
    """
    if not rows:
        return "(no results)"
    frame = to_frame(rows)
    directions = directions or Directions.from_registry(registry)
    metrics = metric_columns(frame, include_info=False)
    ranked = [m for m in metrics if directions(m) != "info"]
    timing = time_columns(frame)
    floors = [c for c in floor_summary_columns(frame, metrics) if c not in metrics]
    summary = summarize(frame, metrics + floors + timing, confidence)
    keys = _key_columns(summary)
    values, marked = _metric_texts(summary, ranked, directions)
    constant = _constant_columns(summary, values)
    for head in constant:
        del values[head]
    table = pd.concat(
        [keys, _timing_texts(summary, timing), _status_texts(summary, values)], axis=1
    )
    parts = _fit(table, values, left=len(_left_columns(keys)), width=width)
    footer = _footer(frame, summary, metrics, directions, confidence, keys, constant, marked)
    text = "\n\n".join(parts) + "\n\n" + "\n".join(wrapped(footer, width))
    lines = not_ok_lines(frame)
    return text + ("\n\nnot ok:\n" + "\n".join(wrapped(lines, width, "  ")) if lines else "")


def wrapped(lines: Sequence[str], width: int, prefix: str = "") -> list[str]:
    """Each logical line wrapped to ``width``; continuation lines indented two more spaces."""
    out: list[str] = []
    for line in lines:
        if line:
            out += wrap(prefix + line, width, prefix + "    ")
    return out


# -- columns --------------------------------------------------------------------------------------
def _key_columns(summary: pd.DataFrame) -> pd.DataFrame:
    """SDE (and any other context that varies), sampler, schedule (when samplers differ in it)
    and steps, as text."""
    shown = [c for c in ("sde", LABEL, "steps") if c in summary]
    shown += [
        c
        for c in varying_within(summary, group_columns(summary), "sde")
        if c not in shown and c not in SAMPLER_COLUMNS
    ]
    table = summary[shown].copy().rename(columns={LABEL: "sampler"})
    if _schedule_column(summary):
        table.insert(shown.index(LABEL) + 1, "schedule", summary["schedule"].fillna("-"))
        table["sampler"] = [
            _without_schedule(label, schedule)
            for label, schedule in zip(summary[LABEL], summary["schedule"])
        ]
    for col in table.columns:  # steps of 10.0 beside an ode's NaN print as 10 and -
        if pd.api.types.is_float_dtype(table[col]):
            table[col] = [fmt(v) for v in table[col]]
    return table


def _left_columns(keys: pd.DataFrame) -> list[str]:
    return [c for c in keys.columns if c in ("sde", "sampler", "schedule")]


def _schedule_column(summary: pd.DataFrame) -> bool:
    """Whether the cells run on more than one schedule (else the footer names the one)."""
    return "schedule" in summary and summary["schedule"].nunique(dropna=True) > 1


def _without_schedule(label: str, schedule: Any) -> str:
    return label.removesuffix(f"[{schedule}]") if isinstance(schedule, str) else label


def _timing_texts(summary: pd.DataFrame, timing: Sequence[str]) -> pd.DataFrame:
    """``nfe`` (counted), ``nominal`` (what the sampler claims, where some cell differs) and
    ``s`` (wall-clock seconds of sampling), means over the ok seeds."""
    heads = {"nfe": "nfe", "nfe_nominal": "nominal", "wall_clock_s": "s"}
    out = pd.DataFrame(index=summary.index)
    for col in timing:
        digits = 3 if col == "wall_clock_s" else 4
        out[heads.get(col, col)] = [
            fmt(v, digits) if ok else "-" for v, ok in zip(summary[col], summary["n_ok"])
        ]
    return out


def _metric_texts(
    summary: pd.DataFrame, metrics: Sequence[str], directions: Directions
) -> tuple[dict[str, list[str]], bool]:
    """``{head: texts}`` per metric (``mean ± ci``, ``≈`` inside the floor), and whether some
    value was marked."""
    out: dict[str, list[str]] = {}
    marked = False
    for col in metrics:
        texts = []
        for (_, row), m, c in zip(summary.iterrows(), summary[col], summary[f"{col}_ci"]):
            text = rounded(m, c) if row["n_ok"] else "-"
            if row["n_ok"] and inside_floor(row, col, directions):
                text += f" {SHORT_FLOOR_MARK}"
                marked = True
            texts.append(text)
        out[f"{col}{directions.arrow(col)}"] = texts
    return out, marked


def _constant_columns(summary: pd.DataFrame, values: dict[str, list[str]]) -> dict[str, str]:
    """Metric columns with the same text in every ok row (two at least): ``{head: text}``. They
    say nothing about the samplers, so the footer gives their one value instead."""
    ok = (summary["n_ok"] > 0).to_numpy()
    if ok.sum() < 2:
        return {}
    out = {}
    for head, texts in values.items():
        distinct = {t for t, keep in zip(texts, ok) if keep}
        if len(distinct) == 1:
            out[head] = distinct.pop()
    return out


def _status_texts(summary: pd.DataFrame, values: dict[str, list[str]]) -> pd.DataFrame:
    """The metric columns, where a cell with no ok seed shows its status in the first one; a
    ``status`` column (first) only when some cell ran on part of its seeds (``diverged 1/3``)."""
    out = pd.DataFrame(values, index=summary.index)
    partial = (summary["n_ok"] > 0) & (summary["status"] != "ok")
    failed = summary["n_ok"] == 0
    if partial.any() or (failed.any() and out.empty):
        out.insert(0, "status", summary["status"])
    elif failed.any():
        first = out.columns[0]
        out[first] = [s if bad else v for v, s, bad in zip(out[first], summary["status"], failed)]
    return out


def _fit(table: pd.DataFrame, values: dict[str, list[str]], *, left: int, width: int) -> list[str]:
    """The table as one text, or in parts of metric columns that each fit ``width`` columns
    (every part repeats the sampler, steps and timing columns)."""
    lines = aligned(table, left=left)
    if max(map(len, lines)) <= width or len(values) < 2:
        return ["\n".join(lines)]
    fixed = [c for c in table.columns if c not in values]
    parts: list[list[str]] = [[]]
    for head in values:
        trial = aligned(table[fixed + parts[-1] + [head]], left=left)
        if parts[-1] and max(map(len, trial)) > width:
            parts.append([])
        parts[-1].append(head)
    return ["\n".join(aligned(table[fixed + cols], left=left)) for cols in parts]


# -- footer ---------------------------------------------------------------------------------------
def _footer(
    frame: pd.DataFrame,
    summary: pd.DataFrame,
    metrics: Sequence[str],
    directions: Directions,
    confidence: float,
    keys: pd.DataFrame,
    constant: dict[str, str],
    marked: bool,
) -> list[str]:
    seeds = int(summary["seeds"].max())
    stat = f"mean ± {confidence:.0%} CI over {seeds} seeds (Student t), the mean to the interval's"
    stat += " precision; " if seeds > 1 else ""
    ran = bool((summary["n_ok"] > 0).any())
    lines = [(stat if seeds > 1 else "") + "s: wall-clock seconds of sampling per cell"] * ran
    if "nfe_nominal" in time_columns(frame):
        lines.append("nfe: score evaluations counted per sample; nominal: what the sampler claims")
    if "schedule" in frame and "schedule" not in keys.columns:
        schedules = frame["schedule"].dropna().unique()
        if len(schedules) == 1:
            lines.append(f"schedule: {schedules[0]} (every cell)")
    lines += provenance_lines(frame, metrics, directions)
    lines += floor_lines(frame, metrics, directions)
    if marked or any(v.endswith(SHORT_FLOOR_MARK) for v in constant.values()):
        lines.append(FLOOR_LINE)
    if constant:
        same = ", ".join(f"{head} {text}" for head, text in constant.items())
        lines.append(f"the same in every ok cell, so not a column: {same}")
    info = [m for m in metrics if directions(m) == "info"]
    if info:
        lines.append(
            f"informational (no better side, not ranked): {', '.join(info)}: see `bench report`"
        )
    ranked = [m for m in metrics if directions(m) != "info"]
    lines += table_notes(frame, summary, ranked, directions)
    lines.append(reference_note(frame))
    return lines


def provenance_lines(
    frame: pd.DataFrame, metrics: Sequence[str], directions: Directions
) -> list[str]:
    """One line per distinct provenance, naming the metrics measured that way, e.g.
    ``fid↓, kid↓: digits-classifier@4fe071e4, n=360 vs digits:train n=1437``."""
    by_text: dict[str, list[str]] = {}
    for metric in metrics:
        if directions(metric) == "info" and metric_owner(frame, metric) != metric:
            continue  # kid_subsets and the like describe kid: they need no line of their own
        how = provenance(frame, metric)
        if how:
            by_text.setdefault(how, []).append(f"{metric}{directions.arrow(metric)}")
    return [f"{', '.join(names)}: {how}" for how, names in by_text.items()]
