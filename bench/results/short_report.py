"""The table ``bench run`` prints at the end of a run: the condensed form of ``bench report``."""

from __future__ import annotations

import math
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
from bench.results.report import (
    metric_owner,
    not_ok_lines,
    provenance,
    reference_note,
    time_columns,
    varying_within,
)
from bench.results.stats import summarize
from bench.results.text import estimate, fmt, text_table


def short_report(
    rows: list[dict[str, Any]],
    confidence: float = 0.95,
    *,
    registry: Any | None = None,
    directions: Directions | None = None,
) -> str:
    """The table ``bench run`` prints: one line per config (mean ± CI when there are several
    seeds), how each metric was measured (extractor, n, reference), then the cells that are not
    ok. It is the condensed form of ``bench report``.

    Args:
        rows: the run's rows.
        confidence: level of the intervals.
        registry: the plugin registry, so that a loaded metric's ``higher_is_better`` sets its
            arrow (:meth:`bench.results.frame.Directions.from_registry`).
        directions: the directions to use (overrides ``registry``).
    """
    if not rows:
        return "(no results)"
    frame = to_frame(rows)
    directions = directions or Directions.from_registry(registry)
    metrics = metric_columns(frame, include_info=False)
    timing = time_columns(frame)
    floors = [c for c in floor_summary_columns(frame, metrics) if c not in metrics]
    summary = summarize(frame, metrics + floors + timing, confidence)
    shown = [c for c in ("sde", LABEL, "steps") if c in summary]
    shown += [
        c
        for c in varying_within(summary, group_columns(summary), "sde")
        if c not in shown and c not in SAMPLER_COLUMNS
    ]
    table = summary[shown].copy().rename(columns={LABEL: "sampler"})
    for col in table.columns:  # steps of 10.0 beside an ode's NaN print as 10 and -
        if pd.api.types.is_float_dtype(table[col]):
            table[col] = [fmt(v) for v in table[col]]
    table["status"] = summary["status"]
    marked = False
    for col in [*timing, *metrics]:
        if col in summary:
            head = {"wall_clock_s": "s"}.get(col, f"{col}{directions.arrow(col)}")
            ci = summary[f"{col}_ci"] if col in metrics else [math.nan] * len(summary)
            texts = []
            for (_, row), m, c in zip(summary.iterrows(), summary[col], ci):
                text = estimate(m, c) if row["n_ok"] else "-"
                if col in metrics and row["n_ok"] and inside_floor(row, col, directions):
                    text += f" {SHORT_FLOOR_MARK}"
                    marked = True
                texts.append(text)
            table[head] = texts
    seeds = int(summary["seeds"].max())
    footer = [f"mean ± {confidence:.0%} CI over {seeds} seeds (Student t)"] if seeds > 1 else []
    footer += provenance_lines(frame, metrics, directions)
    footer += floor_lines(frame, metrics, directions)
    if marked:
        footer.append(
            f"{SHORT_FLOOR_MARK} : inside the floor (within {FLOOR_Z:g} sd·√(1/seeds + 1/draws) "
            "of what exact samples or real data score at this n, or better): not distinguishable "
            "from exact sampling, so not ranked by this metric; see docs/reports.md"
        )
    footer += [reference_note(frame)]
    text = text_table(table) + "\n\n" + "\n".join(line for line in footer if line)
    text = text.rstrip()
    lines = not_ok_lines(frame)
    return text + ("\n\nnot ok:\n" + "\n".join(f"  {n}" for n in lines) if lines else "")


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
