"""``bench compare`` output: terminal text or Markdown (for ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.results.compare import Comparison, summary_counts
from bench.results.frame import LABEL, SAMPLER_COLUMNS
from bench.results.text import fmt, heading, markdown_table, signed, text_table

VERDICT_MARKS = {
    "regression": "❌ regression",
    "missing": "❌ missing",
    "not comparable": "❌ not comparable",
    "improved": "✅ improved",
}


def comparison_table(result: Comparison, rows: pd.DataFrame, markdown: bool) -> pd.DataFrame:
    """The comparison rows as text columns: old, new, change, noise, allowed, verdict."""
    out = rows[result.display].copy().astype(object)
    arrows = {"lower": "↓", "higher": "↑", "info": ""}
    out["metric"] = [f"{m}{arrows.get(d, '')}" for m, d in zip(rows["metric"], rows["direction"])]
    out["old"] = rows["old"].map(fmt)
    out["new"] = rows["new"].map(fmt)
    change = rows.get("change", pd.Series(math.nan, index=rows.index))
    rel = rows.get("rel_change", pd.Series(math.nan, index=rows.index))
    out["change"] = [signed(c, math.nan) if not _nan(c) else "-" for c in change]
    out["change %"] = [f"{100 * r:+.2f}%" if not _nan(r) else "-" for r in rel]
    noise = rows.get("noise", pd.Series(math.nan, index=rows.index))
    kind = rows.get("noise_kind", pd.Series("", index=rows.index))
    out["noise ±"] = [f"{fmt(n, 2)} ({k})" if not _nan(n) else "-" for n, k in zip(noise, kind)]
    allowed = rows.get("allowed", pd.Series(math.nan, index=rows.index))
    out["allowed"] = [
        f"{fmt(a, 2)} ({t})" if not _nan(a) else t for a, t in zip(allowed, rows["tolerance"])
    ]
    marks = VERDICT_MARKS if markdown else {}
    reasons = rows.get("reason", pd.Series("", index=rows.index)).fillna("")
    out["verdict"] = [
        marks.get(v, v) + (f" ({r})" if r else "") for v, r in zip(rows["verdict"], reasons)
    ]
    return out.reset_index(drop=True)


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def render_comparison(
    result: Comparison,
    baseline: str,
    current: str,
    *,
    markdown: bool = False,
    show_all: bool = False,
) -> str:
    """The comparison as terminal text or Markdown (for ``$GITHUB_STEP_SUMMARY``).

    Regressions, status changes and missing groups always show; other comparisons show when
    they changed (every one with ``show_all``; in Markdown inside a collapsed block).
    """

    table = markdown_table if markdown else text_table
    prose = (lambda text: text) if markdown else wrap
    out = [
        heading("sde-bench compare", 1, markdown),
        prose(_verdict_line(result, baseline, current, markdown)),
        prose(_rule_line(result)),
    ]
    if result.constant:
        out.append(prose(_constant_line(result, markdown)))
    if result.matched == 0 and not result.missing.empty:
        out += _nothing_matched(result, table, prose, markdown)
    if len(result.regressions):
        out += [
            heading("regressions", 2, markdown),
            table(comparison_table(result, result.regressions, markdown)),
        ]
    if not result.status.empty:
        out += [heading("status changes", 2, markdown), table(_status_text(result.status))]
    if not result.missing.empty:
        allowed = " (allowed)" if result.settings.allow_missing else ""
        out += [
            heading(f"in the baseline only: missing from the current run{allowed}", 2, markdown),
            table(result.missing),
        ]
    if not result.added.empty:
        out += [
            heading("in the current run only (not in the baseline)", 2, markdown),
            table(result.added),
        ]
    out += _all_rows(result, table, markdown, show_all)
    if markdown:
        out += _settings_block(result)
    if result.notes:
        notes = [f"- {n}" if markdown else wrap(f"- {n}", indent="  ") for n in result.notes]
        out += [heading("notes", 2, markdown), "\n".join(notes)]
    return "\n\n".join(out) + "\n"


WIDTH = 100
"""Prose lines of the terminal output are wrapped at this width (tables are as wide as their
columns: :attr:`Comparison.display` keeps them to the columns that tell cells apart)."""


def wrap(text: str, indent: str = "") -> str:
    """``text`` wrapped at :data:`WIDTH` columns (continuation lines indented by ``indent``)."""
    import textwrap

    return textwrap.fill(
        text, WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def _constant_line(result: Comparison, markdown: bool) -> str:
    """The identifying values every compared cell shares (short ones; the rest: --csv)."""
    short = {c: v for c, v in result.constant.items() if len(fmt(v)) <= 40}
    hidden = [c for c in result.constant if c not in short]
    text = "Every compared cell has " + ", ".join(f"{c}={fmt(v)}" for c, v in short.items())
    if hidden:
        text += f" and one value of {', '.join(hidden)}"
    where = "the table below" if markdown else "--csv (and the Markdown output)"
    return text + f"; other settings that do not tell cells apart are in {where}."


def _nothing_matched(result: Comparison, table: Any, prose: Any, markdown: bool) -> list[str]:
    """Why no cell matched: per grid dimension, the values found on one side only."""
    text = (
        "No cell of the current run has the settings of a baseline cell (seeds aside), so "
        "nothing was compared. Compare two runs of the same grid: a baseline made with "
        "`bench run ... --out DIR` and a later run of the same command."
    )
    if not result.differences:
        text += " Each dimension has the same values on both sides: only their combinations differ."
        return [heading("nothing matched", 2, markdown), prose(text)]
    rows = pd.DataFrame.from_records(
        [
            {"dimension": c, "baseline only": _listed(old), "current only": _listed(new)}
            for c, (old, new) in result.differences.items()
        ]
    )
    return [
        heading("nothing matched: the runs differ in", 2, markdown),
        prose(text),
        table(rows) if markdown else _left_aligned(rows),
    ]


def _left_aligned(frame: pd.DataFrame) -> str:
    """A text table with every column left-aligned (lists of names read better that way)."""
    cells = [list(frame.columns), *([str(v) for v in r] for r in frame.itertuples(index=False))]
    widths = [max(len(r[i]) for r in cells) for i in range(frame.shape[1])]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


LISTED = 6
"""At most this many values of one dimension are listed (then a count of the others)."""


def _listed(values: list[str]) -> str:
    """Values separated by `` | `` (option strings hold commas), an unset value as
    ``(empty)``; ``-`` when there are none."""
    if not values:
        return "-"
    shown = ["(empty)" if v == "-" else v for v in values[:LISTED]]
    more = f" | … ({len(values) - LISTED} more)" if len(values) > LISTED else ""
    return " | ".join(shown) + more


def _settings_block(result: Comparison) -> list[str]:
    """Markdown: the identifying columns the tables leave out (option strings and the like),
    one row per distinct combination, in a collapsed block."""
    rows = result.table
    if rows.empty:
        return []
    hidden = [
        c
        for c in result.identity
        if c in rows
        and c not in result.display
        and c not in result.constant
        and c not in (LABEL, *SAMPLER_COLUMNS)  # the label names the sampler
    ]
    if not hidden:
        return []
    anchor = [c for c in ("model", "sde") if c in result.display]
    settings = rows[anchor + hidden].map(fmt).drop_duplicates()
    body = markdown_table(settings.reset_index(drop=True))
    return [
        f"<details><summary>settings of the compared cells ({len(settings)} distinct, "
        "not shown above)</summary>\n\n" + body + "\n\n</details>"
    ]


def _verdict_line(result: Comparison, baseline: str, current: str, markdown: bool) -> str:
    counts = summary_counts(result)
    word = "FAIL" if result.failed else "PASS"
    word = f"**{word}**" if markdown else word
    parts = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing to compare"
    gated = ", ".join(result.metrics) or "none"
    return (
        f"{word}: {baseline} → {current}: {result.matched} matched groups × "
        f"{len(result.metrics)} gated columns ({gated}); {parts}."
    )


def _rule_line(result: Comparison) -> str:
    s = result.settings
    tols = ", ".join(f"{m} {s.tolerance(m)}" for m in result.metrics)
    return (
        f"A regression is a change for the worse larger than both its tolerance and its noise "
        f"(the {s.confidence:.0%} CI of the change over seeds: paired when the runs share two "
        f"or more seeds, Welch otherwise, 0 with one seed). Tolerances: {tols or '-'}."
    )


def _status_text(status: pd.DataFrame) -> pd.DataFrame:
    out = status.copy()
    out["failed"] = out["failed"].map({True: "yes", False: "no"})
    return out


def _all_rows(result: Comparison, table: Any, markdown: bool, show_all: bool) -> list[str]:
    rows = result.table
    if rows.empty:
        return []
    shown = rows if show_all else rows[rows["verdict"] != "same"]
    same = int((rows["verdict"] == "same").sum())
    title = "all comparisons" if show_all else "changed values"
    note = f"{same} of {len(rows)} comparisons are identical" + (
        "" if show_all else " (not listed)"
    )
    if shown.empty:
        return [heading(title, 2, markdown), note + "."]
    body = table(comparison_table(result, shown, markdown))
    if markdown:
        body = f"<details><summary>{len(shown)} rows</summary>\n\n{body}\n\n</details>"
    return [heading(title, 2, markdown), note + ".", body]
