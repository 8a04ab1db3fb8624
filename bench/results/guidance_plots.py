"""The guidance trade-off plot: FID against guidance adherence as the guidance scale grows.

Classifier-free guidance trades sample diversity (FID) for adherence to the condition (Ho &
Salimans 2022, Fig. 1 and 4): one curve per sampler, its points the guidance scales s at one
number of steps (one panel per N, so at fixed NFE), labelled with s; the data's floors of both
metrics as lines. FID against NFE at each fixed s is the report's metric-vs-NFE plot, whose
panels already split by guidance scale.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from bench.results.floors import floor_of
from bench.results.frame import LABEL
from bench.results.plot_colors import sampler_colors
from bench.results.plots import _figure, _legend, _metric_label, _yerr, save, slug
from bench.results.report import Report, block_columns

ADHERENCE = ("class_acc",)
"""Metrics of adherence to the condition, in order of preference (the x axis)."""
QUALITY = ("fid", "swd")
"""Metrics of sample quality (the y axis), in order of preference."""


def axes_metrics(report: Report) -> tuple[str, str] | None:
    """(adherence, quality) metrics of the report, or None if it has no such pair."""
    x = next((m for m in ADHERENCE if m in report.summary), None)
    y = next((m for m in QUALITY if m in report.summary), None)
    return (x, y) if x and y else None


def plot_guidance_tradeoff(report: Report, folder: Path) -> list[Path]:
    """Per model and block (SDE, …; not the guidance scale): quality against adherence, one
    panel per number of steps. Nothing without several guidance scales or the two metrics."""
    summary = report.summary
    metrics = axes_metrics(report)
    if metrics is None or "guidance" not in summary or summary["guidance"].nunique() < 2:
        return []
    x, y = metrics
    context = [c for c in block_columns(summary) if c != "guidance"]
    colors = sampler_colors(summary[LABEL])
    paths: list[Path] = []
    for values, block in summary.groupby(context, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        name = " · ".join(str(v) for v in values)
        steps = sorted(block["steps"].dropna().unique()) if "steps" in block else []
        panels = [(f"N={n:g}", block[block["steps"] == n]) for n in steps] or [("", block)]
        fig, axes = _figure(len(panels))
        for ax, (title, rows) in zip(axes, panels):
            _panel(ax, rows, x, y, colors)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(_metric_label(x, report.directions), fontsize=8)
            ax.set_ylabel(_metric_label(y, report.directions), fontsize=8)
        fig.suptitle(f"{name}: {y} vs {x} as the guidance scale s grows", fontsize=11)
        _legend(fig, axes)
        fig.tight_layout()
        paths += save(fig, folder, file_name(y, x, dict(zip(context, values))))
    return paths


def file_name(y: str, x: str, context: dict[str, Any]) -> str:
    """``<y>_vs_<x>_guidance_<model>[-<sde>][-<hash of the other context>]``: short and unique."""
    head = [str(context.get(c)) for c in ("model", "sde") if c in context]
    rest = {k: str(v) for k, v in context.items() if k not in ("model", "sde")}
    if rest:
        head.append(hashlib.sha256(repr(sorted(rest.items())).encode()).hexdigest()[:8])
    return slug(f"{y}_vs_{x}_guidance_{'-'.join(head)}")


def _panel(ax: Any, rows: pd.DataFrame, x: str, y: str, colors: dict[str, Any]) -> None:
    ok = rows[(rows["n_ok"] > 0) & rows[x].notna() & rows[y].notna()]
    for sampler, line in ok.groupby(LABEL, sort=False):
        line = line.sort_values("guidance")
        ax.errorbar(
            line[x],
            line[y],
            xerr=_yerr(line, x),
            yerr=_yerr(line, y),
            marker="o",
            ms=4,
            lw=1.2,
            capsize=2,
            color=colors[sampler],
            label=sampler,
        )
        for _, point in line.iterrows():
            ax.annotate(
                f"s={point['guidance']:g}",
                (point[x], point[y]),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=6,
                color=colors[sampler],
            )
    for metric, draw, style in ((y, ax.axhline, "--"), (x, ax.axvline, ":")):
        floor = floor_of(rows, metric)
        if floor is not None:
            draw(floor.mean, color="grey", ls=style, lw=1, label=f"{metric} floor (real data)")
    ax.grid(alpha=0.3)
