"""Plot axes that stay readable: log-axis ticks whose labels never overlap, y limits that hold
the means (log when they span decades), and marks where an interval leaves the axes."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from bench.results.text import fmt

LOG_Y_RATIO = 20.0
"""A panel whose positive means span more than this factor gets a log y axis (FID from 5 to 50
NFE: a few-step blow-up would otherwise flatten every other point)."""


def wide_positive(means: pd.Series) -> bool:
    """Whether the means are all positive and span more than :data:`LOG_Y_RATIO`."""
    values = means.dropna()
    return bool(len(values)) and values.min() > 0 and values.max() / values.min() > LOG_Y_RATIO


def log_y(ax: Any, rows: pd.DataFrame, metric: str) -> None:
    """A log y axis from a little below the smallest mean (or interval end) to a little above
    the largest: intervals reaching zero or below leave the axes and are marked."""
    ci = rows.get(f"{metric}_ci", pd.Series(0.0, index=rows.index)).fillna(0)
    low = float(rows[metric].min())
    lows = rows[metric] - ci
    if (lows > 0).all():
        low = float(lows.min())
    high = float((rows[metric] + ci).max())
    ax.set_yscale("log")
    ax.set_ylim(low / 1.25, high * 1.25)


def tick_values(block: pd.DataFrame, metric: str, cost: str) -> list[float] | None:
    """The NFEs of a panel's points (preferred tick positions), None for other costs."""
    if cost != "nfe":
        return None
    ok = block[(block["n_ok"] > 0) & block[metric].notna() & block[cost].notna()]
    return sorted(float(v) for v in ok[cost].unique())


def log_ticks(ax: Any, values: list[float] | None) -> None:
    """Readable log-axis ticks that never overlap: at ``values`` (e.g. the NFEs run) where
    their labels fit side by side on the axis, else at 1, 2, 5 × 10^k thinned until they fit
    (see :func:`fitting_ticks`)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    low, high = ax.get_xlim()
    ticks = fitting_ticks(values or [], low, high, axis_width_px(ax), label_width_px(ax))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(float(v), 3)))


def fitting_ticks(
    values: Sequence[float],
    low: float,
    high: float,
    width_px: float,
    label_px: Callable[[str], float],
    gap_px: float = 6.0,
) -> list[float]:
    """Tick positions on a log axis from ``low`` to ``high`` (``width_px`` wide) whose labels,
    ``label_px(text)`` wide each and centred on their tick, keep ``gap_px`` apart.

    The preferred ticks are ``values`` (the costs that were run); when two of their labels
    would touch, the candidates are the 1, 2, 5 × 10^k in range instead, then 1, 3 × 10^k,
    then the powers of ten, then every other power: the first set whose labels all fit.
    A set of one tick always fits. The largest and the smallest value run are then added,
    in place of the round ticks their labels would touch, so the ends of every line are named.
    """
    if not (0 < low < high) or width_px <= 0:
        return sorted(v for v in values if v > 0)
    scale = width_px / (math.log10(high) - math.log10(low))

    def fits(ticks: list[float]) -> bool:
        xs = [math.log10(t) * scale for t in ticks]
        half = [label_px(fmt(float(t), 3)) / 2 for t in ticks]
        return all(xs[i + 1] - xs[i] >= half[i] + half[i + 1] + gap_px for i in range(len(xs) - 1))

    inside = sorted({float(v) for v in values if low <= v <= high})
    if inside and fits(inside):
        return inside
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    chosen = [10.0 ** round(math.log10(math.sqrt(low * high)))]
    for subs, every in (((1, 2, 5), 1), ((1, 3), 1), ((1,), 1), ((1,), 2), ((1,), 3)):
        ticks = [
            m * 10.0**k
            for k in range(lo, hi + 1)
            if k % every == 0
            for m in subs
            if low <= m * 10.0**k <= high
        ]
        if len(ticks) >= 2 and fits(ticks):
            chosen = ticks
            break
    for end in inside[-1:] + inside[:1]:  # the largest cost run, then the smallest
        chosen = with_tick(chosen, end, fits)
    return chosen


def with_tick(ticks: list[float], tick: float, fits: Callable[[list[float]], bool]) -> list[float]:
    """``ticks`` with ``tick`` added, dropping the round ticks whose labels it would touch
    (the ends of the costs that were run get a label: 39 NFE beside 10 and 20)."""
    if tick in ticks:
        return ticks
    kept = [t for t in ticks if fits(sorted([t, tick]))]
    candidate = sorted(kept + [tick])
    return candidate if fits(candidate) else ticks


def axis_width_px(ax: Any) -> float:
    return float(ax.get_window_extent().width)


def label_width_px(ax: Any) -> Callable[[str], float]:
    """The rendered width of an x tick label of ``ax`` (its font and size), in pixels."""
    import matplotlib
    from matplotlib.font_manager import FontProperties

    renderer = ax.figure.canvas.get_renderer()
    labels = ax.xaxis.get_ticklabels()
    prop = (
        labels[0].get_fontproperties()
        if labels
        else FontProperties(size=matplotlib.rcParams["xtick.labelsize"])
    )
    cache: dict[str, float] = {}

    def width(text: str) -> float:
        if text not in cache:
            w, _, _ = renderer.get_text_width_height_descent(text, prop, ismath=False)
            cache[text] = float(w)
        return cache[text]

    return width


def show_range(ax: Any, low: float, high: float) -> None:
    """Widen the y limits set from the cells to hold [low, high] (on a log axis, the positive
    part of it)."""
    bottom, top = ax.get_ylim()
    if ax.get_yscale() == "log":
        if high > 0:
            ax.set_ylim(min(bottom, low / 1.25) if low > 0 else bottom, max(top, high * 1.25))
        return
    if low < bottom or high > top:
        pad = 0.05 * (max(top, high) - min(bottom, low))
        ax.set_ylim(min(bottom, low - pad), max(top, high + pad))


def mark_clipped(ax: Any, x: Any, means: Any, ci: Any, colors: Sequence[Any]) -> None:
    """Where an interval leaves the axes, a triangle on the edge (▲ above, ▼ below) in the
    line's colour, and a note in the panel, so that a cut interval is not read as a short one."""
    if ci is None:
        return
    low, high = ax.get_ylim()
    x, means, ci = (np.asarray(v, dtype=float) for v in (x, means, ci))
    ci = np.nan_to_num(ci)
    up, down = means + ci > high, means - ci < low
    colors = np.asarray(colors, dtype=object)
    for mask, y, marker in ((up, high, "^"), (down, low, "v")):
        if mask.any():
            ax.scatter(
                x[mask],
                np.full(mask.sum(), y),
                marker=marker,
                s=28,
                c=list(colors[mask]),
                edgecolors="black",
                lw=0.5,
                clip_on=False,
                zorder=5,
            )
    if up.any() or down.any():
        ax.text(
            0.99,
            0.01,
            "▲▼ interval continues beyond the axes",
            ha="right",
            va="bottom",
            fontsize=6,
            color="0.3",
            transform=ax.transAxes,
        )


def fit_intervals(ax: Any, rows: pd.DataFrame, metric: str) -> None:
    """Y limits that hold every mean and its whole interval (a wide interval squeezes the means
    together rather than leaving the axes: differences inside the noise then look like it)."""
    means = rows[metric].dropna()
    if means.empty:
        return
    ci = rows.get(f"{metric}_ci", pd.Series(0.0, index=rows.index)).fillna(0)
    low, high = float((rows[metric] - ci).min()), float((rows[metric] + ci).max())
    pad = 0.05 * ((high - low) or abs(high) or 1.0)
    ax.set_ylim(low - pad, high + pad)


def clip_to_means(ax: Any, rows: pd.DataFrame, metric: str) -> None:
    """Y limits that keep the means readable when a few seeds give very wide intervals: the
    intervals are drawn but may leave the axes (at most one span of the means beyond them)."""
    means = rows[metric].dropna()
    if means.empty:
        return
    ci = rows.get(f"{metric}_ci", pd.Series(0.0, index=rows.index)).fillna(0)
    lo, hi = float(means.min()), float(means.max())
    span = (hi - lo) or abs(hi) or 1.0
    low = max(float((rows[metric] - ci).min()), lo - span)
    high = min(float((rows[metric] + ci).max()), hi + span)
    pad = 0.05 * (high - low or span)
    ax.set_ylim(low - pad, high + pad)
