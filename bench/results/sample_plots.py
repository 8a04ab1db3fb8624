"""Sample panels of a report: 2-D scatter against the target, 1-D histograms, image grids."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from bench.results.frame import LABEL
from bench.results.plots import MAX_SAMPLE_ROWS, _pyplot, save, slug
from bench.results.report import Report
from bench.results.text import fmt


# -- samples --------------------------------------------------------------------------------------
def first_seed_cells(frame: pd.DataFrame, samples_dir: Path) -> pd.DataFrame:
    """The ok cells of the smallest seed whose samples were saved (``samples/<cell_id>.npz``)."""
    ok = frame[(frame["status"] == "ok")].copy()
    if ok.empty or "cell_id" not in ok:
        return ok.iloc[0:0]
    ok = ok[ok["seed"] == ok["seed"].min()]
    return ok[[(samples_dir / f"{c}.npz").is_file() for c in ok["cell_id"]]]


def load_samples(samples_dir: Path, cell_id: str) -> np.ndarray:
    with np.load(samples_dir / f"{cell_id}.npz") as data:
        return data["samples"]


def plot_samples(
    report: Report,
    samples_dir: Path,
    folder: Path,
    target: Callable[[str, int], np.ndarray | None] | None = None,
) -> list[Path]:
    """Per model and block, a grid of panels (sampler × steps): a 2-D scatter against target
    samples, a 1-D histogram against the target's, or a tile of images, by the data shape."""
    cells = first_seed_cells(report.frame, samples_dir)
    paths: list[Path] = []
    if cells.empty:
        return paths
    for (model, sde), rows in cells.groupby(["model", "sde"], sort=False):
        first = load_samples(samples_dir, rows["cell_id"].iloc[0])
        kind = (
            "images"
            if first.ndim == 4
            else "scatter"
            if first.reshape(len(first), -1).shape[1] == 2
            else "hist"
            if first.reshape(len(first), -1).shape[1] == 1
            else None
        )
        if kind is None:
            continue
        ref = target(str(model), len(first)) if target and kind != "images" else None
        status = _first_seed_statuses(report.frame, model, sde, rows["seed"].iloc[0])
        paths += _sample_grid(rows, samples_dir, folder, kind, ref, f"{model} · {sde}", status)
    return paths


def _first_seed_statuses(
    frame: pd.DataFrame, model: Any, sde: Any, seed: Any
) -> dict[tuple[str, Any], str]:
    """(sampler, steps) → status of the cells of one model, SDE and seed."""
    rows = frame[(frame["model"] == model) & (frame["sde"] == sde) & (frame["seed"] == seed)]
    return {(s, n): str(st) for s, n, st in zip(rows[LABEL], rows["steps"], rows["status"])}


def _sample_grid(
    rows: pd.DataFrame,
    samples_dir: Path,
    folder: Path,
    kind: str,
    ref: np.ndarray | None,
    title: str,
    status: dict[tuple[str, Any], str] | None = None,
) -> list[Path]:
    """Samplers (rows) × steps (columns); every row and column is labelled, also where its
    first cell has no samples (such a cell says why: ``unsupported``, ``no samples``...)."""
    plt = _pyplot()
    samplers = list(dict.fromkeys(rows[LABEL]))[:MAX_SAMPLE_ROWS]
    steps = sorted(rows["steps"].unique())
    size = 2.4 if kind != "hist" else 2.8
    fig, axes = plt.subplots(
        len(samplers),
        len(steps),
        squeeze=False,
        figsize=(size * len(steps) + 1.2, size * len(samplers)),
    )
    limits = _limits(ref, rows, samples_dir) if kind == "scatter" else None
    for i, sampler in enumerate(samplers):
        for j, n in enumerate(steps):
            ax = axes[i][j]
            cell = rows[(rows[LABEL] == sampler) & (rows["steps"] == n)]
            if cell.empty:
                _empty_cell(ax, (status or {}).get((sampler, n), "no samples"))
            else:
                x = load_samples(samples_dir, cell["cell_id"].iloc[0])
                {"scatter": _scatter, "hist": _hist, "images": _images}[kind](ax, x, ref, limits)
            if i == 0:
                ax.set_title(f"N={fmt(n)}", fontsize=9)
            if j == 0:
                ax.set_ylabel(sampler, fontsize=8)
    seed = fmt(rows["seed"].iloc[0])
    what = {
        "scatter": "samples (blue) over target samples (orange)",
        "hist": "sample histogram (blue) over the target's (grey)",
        "images": "first samples",
    }
    scale = ""
    if limits is not None:
        scale = f"\nx ∈ [{limits[0]:.2g}, {limits[1]:.2g}], y ∈ [{limits[2]:.2g}, {limits[3]:.2g}]"
    heading = f"{title}, seed {seed}\n{what[kind]}{scale}"
    fig.suptitle(heading, fontsize=9)
    fig.tight_layout()
    lines = heading.count("\n") + 1
    fig.subplots_adjust(top=1 - (0.25 + 0.17 * lines) / fig.get_figheight())
    return save(fig, folder, slug(f"samples_{title.replace(' · ', '_')}"))


def _empty_cell(ax: Any, status: str) -> None:
    """A blank panel that keeps its axis labels, with the reason it is blank."""
    _no_ticks(ax)
    for spine in ax.spines.values():
        spine.set_visible(False)
    text = status if status != "ok" else "no samples saved"
    ax.text(
        0.5, 0.5, text, ha="center", va="center", fontsize=8, color="0.4", transform=ax.transAxes
    )


def _limits(
    ref: np.ndarray | None, rows: pd.DataFrame, samples_dir: Path
) -> tuple[float, float, float, float]:
    """Axis limits from the target (or the first cell), padded, so panels share one scale."""
    base = ref if ref is not None else load_samples(samples_dir, rows["cell_id"].iloc[0])
    base = base.reshape(len(base), -1)
    lo, hi = np.nanpercentile(base, 0.5, axis=0), np.nanpercentile(base, 99.5, axis=0)
    pad = 0.15 * (hi - lo) + 1e-9
    return lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1]


def _scatter(ax: Any, x: np.ndarray, ref: np.ndarray | None, limits: Any) -> None:
    x = x.reshape(len(x), -1)
    if ref is not None:
        r = ref.reshape(len(ref), -1)
        ax.scatter(r[:, 0], r[:, 1], s=7, color="tab:orange", alpha=0.25, lw=0, rasterized=True)
    ax.scatter(x[:, 0], x[:, 1], s=1.5, color="tab:blue", alpha=0.8, lw=0, rasterized=True)
    outside = _outside(x, limits)
    if outside:
        ax.text(0.02, 0.02, f"{outside} outside", fontsize=6, transform=ax.transAxes)
    ax.set_xlim(limits[0], limits[1])
    ax.set_ylim(limits[2], limits[3])
    ax.set_aspect("equal")
    _no_ticks(ax)


def _no_ticks(ax: Any) -> None:
    """Sample panels share one scale (given in the title); ticks would only cost layout time."""
    ax.set_xticks([])
    ax.set_yticks([])


def _outside(x: np.ndarray, limits: Any) -> int:
    inside = (
        (x[:, 0] >= limits[0])
        & (x[:, 0] <= limits[1])
        & (x[:, 1] >= limits[2])
        & (x[:, 1] <= limits[3])
    )
    return int((~inside).sum())


def _hist(ax: Any, x: np.ndarray, ref: np.ndarray | None, limits: Any) -> None:
    x = x.reshape(-1)
    both = x if ref is None else np.concatenate([x, ref.reshape(-1)])
    bins = np.linspace(*np.nanpercentile(both, [0.5, 99.5]), 41)
    if ref is not None:
        ax.hist(ref.reshape(-1), bins=bins, density=True, color="0.75", label="target")
    ax.hist(x, bins=bins, density=True, histtype="step", color="tab:blue", lw=1.2)
    ax.set_yticks([])
    ax.tick_params(labelsize=6)


def _images(ax: Any, x: np.ndarray, ref: Any, limits: Any, count: int = 16) -> None:
    ax.imshow(
        image_tile(x[:count]),
        cmap="gray" if x.shape[1] == 1 else None,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    _no_ticks(ax)


def image_tile(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """(n, C, H, W) images in [0, 1] → one (H', W'[, C]) array, a near-square grid."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tile = np.ones((c, rows * (h + pad) + pad, cols * (w + pad) + pad))
    for k in range(n):
        r, q = divmod(k, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        tile[:, top : top + h, left : left + w] = np.clip(images[k], 0, 1)
    return tile[0] if c == 1 else np.moveaxis(tile, 0, -1)
