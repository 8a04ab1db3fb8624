"""Report plots (matplotlib, Agg): metric vs NFE and vs wall-clock with the Pareto frontier,
metric vs SNR with the best SNR, and samples (2-D scatter against the target, 1-D histograms,
image grids). Every figure is written as PNG and SVG.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Collection, Iterator, Sequence

import numpy as np
import pandas as pd

from bench.results.floors import DATA_FLOOR_METRICS, FLOOR_Z, floor_of
from bench.results.frame import LABEL, Directions, sampler_label
from bench.results.plot_axes import (
    clip_to_means,
    fit_intervals,
    log_ticks,
    log_y,
    mark_clipped,
    show_range,
    tick_values,
    wide_positive,
)
from bench.results.plot_colors import sampler_colors
from bench.results.report import Report, block_columns, metric_owner
from bench.results.text import fmt

PANEL = (4.6, 3.5)
MAX_PANELS_PER_ROW = 3
MAX_SAMPLE_ROWS = 24


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(text)).strip("-") or "x"


def save(fig: Any, folder: Path, name: str) -> list[Path]:
    """Write ``fig`` as ``name.png`` and ``name.svg`` under ``folder``; close it."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    _pyplot().close(fig)
    return paths


# -- Pareto frontier ------------------------------------------------------------------------------
def pareto_mask(
    cost: Sequence[float], value: Sequence[float], higher_is_better: bool
) -> np.ndarray:
    """True for the points no other point beats: less or equal cost and a better-or-equal value,
    one of them strictly. Points with a missing coordinate are never on the frontier."""
    x = np.asarray(cost, dtype=float)
    y = -np.asarray(value, dtype=float) if higher_is_better else np.asarray(value, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    mask = np.zeros(x.size, dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i]))
        mask[i] = not dominated.any()
    return mask


# -- panels ---------------------------------------------------------------------------------------
def _grid(n: int) -> tuple[int, int]:
    cols = min(n, MAX_PANELS_PER_ROW)
    return math.ceil(n / cols), cols


def _figure(n: int, panel: tuple[float, float] = PANEL):
    plt = _pyplot()
    rows, cols = _grid(n)
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _colors(report: Report) -> dict[str, Any]:
    """One colour per sampler label of the report (:func:`sampler_colors`): the same in all
    of its plots, and in other reports for the same label."""
    return sampler_colors(report.summary[LABEL])


def model_blocks(summary: pd.DataFrame) -> Iterator[tuple[str, list[tuple[str, pd.DataFrame]]]]:
    """Per model: its blocks (SDE and any other varying context) as (title, rows)."""
    cols = block_columns(summary)
    inner = [c for c in cols if c != "model"]
    for model, rows in (
        summary.groupby("model", sort=False) if "model" in summary else [("", summary)]
    ):
        if not inner:
            yield str(model), [("", rows)]
            continue
        parts = []
        for values, block in rows.groupby(inner, sort=False, dropna=False):
            values = values if isinstance(values, tuple) else (values,)
            title = " · ".join(str(v) if c == "sde" else f"{c}={v}" for c, v in zip(inner, values))
            parts.append((title, block))
        yield str(model), parts


def _legend(fig: Any, axes: list[Any]) -> None:
    handles, labels = {}, []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = h
                labels.append(label)
    if labels:
        fig.legend(
            [handles[k] for k in labels],
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(4, len(labels)),
            frameon=False,
            fontsize=8,
        )


def _metric_label(metric: str, directions: Directions) -> str:
    way = {"lower": " (lower is better)", "higher": " (higher is better)", "info": ""}
    return f"{metric}{way[directions(metric)]}"


# -- metric vs cost -------------------------------------------------------------------------------
COST_LABELS = {
    "nfe": "NFE (score evaluations per sample)",
    "wall_clock_s": "wall-clock seconds of sampling (per cell)",
}


def plot_metric_vs_cost(
    report: Report, metric: str, cost: str, folder: Path, skip: Collection[str] = ()
) -> list[Path]:
    """Per model (but those in ``skip``): one panel per block, metric (± CI) against ``cost``
    for each sampler, with the Pareto frontier over every (sampler, steps) point of the panel
    ringed and joined (not for informational columns such as ``logp``, which have no better
    direction). Every panel of a figure follows one rule for its axes (:func:`axis_scales`)."""
    paths: list[Path] = []
    direction = report.directions(metric)
    colors = _colors(report)
    for model, parts in model_blocks(report.summary):
        if model in skip:
            continue
        fig, axes = _figure(len(parts))
        scales = axis_scales([block for _, block in parts], metric, cost)
        for ax, (title, block) in zip(axes, parts):
            ok = _cost_panel(ax, block, metric, cost, direction, colors, scales)
            _floor_band(ax, block, report.frame, metric, model)
            if ok is not None:  # after the reference line, which may widen the limits
                ci = ok.get(f"{metric}_ci")
                mark_clipped(ax, ok["x"], ok[metric], ci, [colors[s] for s in ok[LABEL]])
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(COST_LABELS.get(cost, cost), fontsize=8)
            ax.set_ylabel(_metric_label(metric, report.directions), fontsize=8)
        ringed = " (Pareto frontier ringed)" if direction != "info" else ""
        fig.suptitle(f"{model}: {metric} vs {cost}{ringed}", fontsize=11)
        _legend(fig, axes)
        fig.tight_layout()
        for ax, (_, block) in zip(axes, parts):  # the final axes widths: labels that fit
            if ax.get_xscale() == "log":
                log_ticks(ax, tick_values(block, metric, cost))
        paths += save(fig, folder, slug(f"{metric}_vs_{cost}_{model}"))
    return paths


def _points(block: pd.DataFrame, metric: str, cost: str) -> pd.DataFrame:
    """The ok summary rows of a panel that have both the metric and the cost."""
    return block[(block["n_ok"] > 0) & block[metric].notna() & block[cost].notna()]


def axis_scales(blocks: Sequence[pd.DataFrame], metric: str, cost: str) -> tuple[bool, bool]:
    """(log x, log y) for every panel of one figure: x is logarithmic when the cost spans more
    than a factor 5 in some panel, y when the means of some panel span more than
    :data:`bench.results.plot_axes.LOG_Y_RATIO` and every mean of the figure is positive."""
    points = [_points(b, metric, cost) for b in blocks]
    points = [p for p in points if len(p)]
    if not points:
        return False, False
    log_x = all(p[cost].min() > 0 for p in points) and any(
        p[cost].max() / p[cost].min() > 5 for p in points
    )
    log_y = all((p[metric] > 0).all() for p in points) and any(
        wide_positive(p[metric]) for p in points
    )
    return log_x, log_y


def _cost_panel(
    ax: Any,
    block: pd.DataFrame,
    metric: str,
    cost: str,
    direction: str,
    colors: dict[str, Any],
    scales: tuple[bool, bool] | None = None,
) -> pd.DataFrame | None:
    """Draw one panel; return its points (``x``: the plotted, nudged cost), None if empty."""
    ok = _points(block, metric, cost).copy()
    if ok.empty:
        ax.text(0.5, 0.5, "no ok cells", ha="center", va="center", transform=ax.transAxes)
        return None
    log, log_y_axis = scales if scales is not None else axis_scales([block], metric, cost)
    ok["x"] = ok[cost] * _dodge(ok[LABEL]) if cost == "nfe" else ok[cost]
    for sampler, rows in ok.groupby(LABEL, sort=False):
        rows = rows.sort_values(cost)
        _line(ax, rows["x"], rows, metric, colors[sampler], sampler)
    if direction != "info":
        _frontier(ax, ok, metric, cost, direction == "higher")
    if log_y_axis:
        log_y(ax, ok, metric)
    else:
        clip_to_means(ax, ok, metric)
    if log:
        ax.set_xscale("log")
        log_ticks(ax, tick_values(block, metric, cost))
    ax.grid(alpha=0.3)
    return ok


STEP_STYLES = ("-", "--", ":", "-.")
"""Line styles of the SNR plots' lines, one per number of steps (the colour is the sampler's)."""


def _line(
    ax: Any,
    x: pd.Series,
    rows: pd.DataFrame,
    metric: str,
    color: Any,
    label: str,
    style: str = "-",
) -> None:
    """One line of a metric (± its CI over seeds) against ``x``, in the plots' common style."""
    ax.errorbar(
        x,
        rows[metric],
        yerr=_yerr(rows, metric),
        marker="o",
        ms=4,
        lw=1.2,
        capsize=2,
        color=color,
        ls=style,
        label=label,
    )


def _frontier(ax: Any, ok: pd.DataFrame, metric: str, cost: str, higher: bool) -> None:
    """The Pareto frontier (no point both cheaper and better), ringed and joined."""
    front = ok[pareto_mask(ok[cost], ok[metric], higher)].sort_values(cost)
    ax.plot(
        front["x"],
        front[metric],
        ls="--",
        color="black",
        lw=1,
        drawstyle="steps-post",
        label="Pareto frontier",
        zorder=1,
    )
    ax.scatter(
        front["x"], front[metric], s=110, facecolors="none", edgecolors="black", lw=1.2, zorder=3
    )


def _dodge(samplers: pd.Series, spread: float = 0.06) -> np.ndarray:
    """Small multiplicative x offsets per sampler, so overlapping error bars stay readable."""
    labels = list(dict.fromkeys(samplers))
    k = len(labels)
    offset = {s: 1 + spread * (i - (k - 1) / 2) / max(k - 1, 1) for i, s in enumerate(labels)}
    return samplers.map(offset).to_numpy(dtype=float)


def _floor_band(ax: Any, block: pd.DataFrame, frame: pd.DataFrame, metric: str, model: str) -> None:
    """The metric's floor (what exact samples score at this n) as a line and a grey band of
    ± z·sd·√(1/seeds + 1/draws) around it (seeds: the most any point of the panel averages),
    the same band as the tables' ≈floor mark. Rows without a floor get a dotted line at a
    plain ``<metric>_ref`` value (older runs), and FID/KID panels without the data's floor say
    so."""
    floor = floor_of(block, metric)
    if floor is not None:
        seeds = int(block["n_ok"].max()) if "n_ok" in block and len(block) else 1
        band = floor.band(seeds)
        ax.axhline(floor.mean, color="0.35", ls=":", lw=1.2, zorder=0)
        ax.axhspan(
            floor.mean - band,
            floor.mean + band,
            color="0.5",
            alpha=0.18,
            lw=0,
            zorder=0,
            label=f"floor: {floor.source} ± {FLOOR_Z:g} sd",
        )
        show_range(ax, floor.mean - band, floor.mean + band)
        return
    if metric_owner(frame, metric) in DATA_FLOOR_METRICS:
        ax.text(
            0.01,
            0.99,
            f"no {metric} floor in these rows (bench fid-floor)",
            ha="left",
            va="top",
            fontsize=6,
            color="0.3",
            transform=ax.transAxes,
        )
        return
    _reference_line(ax, frame, metric, model)


def _reference_line(ax: Any, frame: pd.DataFrame, metric: str, model: str) -> None:
    """A dotted line at ``<metric>_ref`` (the metric on exact samples) when the run has it."""
    ref = f"{metric}_ref"
    if ref not in frame:
        return
    rows = frame[(frame["status"] == "ok") & (frame.get("model", model) == model)]
    values = pd.to_numeric(rows[ref], errors="coerce").dropna()
    if len(values):
        value = float(values.mean())
        ax.axhline(value, color="0.4", ls=":", lw=1.2, label=f"{metric} of exact samples")
        show_range(ax, value, value)


def _yerr(rows: pd.DataFrame, metric: str) -> np.ndarray | None:
    ci = rows.get(f"{metric}_ci")
    if ci is None or ci.isna().all():
        return None
    return ci.fillna(0).to_numpy()


# -- metric vs SNR --------------------------------------------------------------------------------
def plot_metric_vs_snr(
    report: Report, metric: str, folder: Path, skip: Collection[str] = ()
) -> list[Path]:
    """For corrector sweeps over several SNRs: metric against SNR per (sampler, steps), the
    best SNR of each line starred (per model, but those in ``skip``). Nothing when the run has
    one SNR."""
    summary = report.summary
    if "snr" not in summary or summary["snr"].dropna().nunique() < 2:
        return []
    direction = report.directions(metric)
    show_k = (
        summary["corrector_steps"].dropna().nunique() > 1 if "corrector_steps" in summary else False
    )
    paths: list[Path] = []
    for model, parts in model_blocks(summary[summary["snr"].notna()]):
        if model in skip:
            continue
        fig, axes = _figure(len(parts), panel=(5.0, 5.0))
        for ax, (title, block) in zip(axes, parts):
            _snr_panel(ax, block, metric, direction, show_k)
            _floor_band(ax, block, report.frame, metric, model)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("corrector SNR r", fontsize=8)
            ax.set_ylabel(_metric_label(metric, report.directions), fontsize=8)
        starred = " (★ best SNR per line)" if direction != "info" else ""
        fig.suptitle(f"{model}: {metric} vs SNR{starred}", fontsize=11)
        for ax in axes:  # per panel: the best SNR differs between panels
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
        fig.tight_layout()
        paths += save(fig, folder, slug(f"{metric}_vs_snr_{model}"))
    return paths


def _snr_panel(ax: Any, block: pd.DataFrame, metric: str, direction: str, show_k: bool) -> None:
    ok = block[(block["n_ok"] > 0) & block[metric].notna()].copy()
    ok["sampler"] = [sampler_label(r, corrector_steps=show_k) for _, r in ok.iterrows()]
    ok["line"] = [f"{name} N={fmt(n)}" for name, n in zip(ok["sampler"], ok["steps"])]
    colors = sampler_colors(ok["sampler"])  # one colour per sampler, one dash per N
    dashes = {
        n: STEP_STYLES[i % len(STEP_STYLES)] for i, n in enumerate(sorted(ok["steps"].unique()))
    }
    for line, rows in ok.groupby("line", sort=False):
        rows = rows.sort_values("snr")
        color, style = colors[rows["sampler"].iloc[0]], dashes[rows["steps"].iloc[0]]
        if direction == "info":  # no better direction: no best SNR
            _line(ax, rows["snr"], rows, metric, color, line, style)
            continue
        best = rows.loc[rows[metric].idxmax() if direction == "higher" else rows[metric].idxmin()]
        _line(ax, rows["snr"], rows, metric, color, f"{line} (best r={best['snr']:g})", style)
        ax.scatter(
            [best["snr"]],
            [best[metric]],
            marker="*",
            s=180,
            color=color,
            edgecolors="black",
            lw=0.7,
            zorder=4,
        )
    fit_intervals(ax, ok, metric)
    ax.grid(alpha=0.3)
