"""Sample grids for docs/digits-results.md: 64 samples of each model at 1,000 steps (seed 0).

Usage: python docs/digits_grids.py RESULTS_DIR [--out docs/img]

RESULTS_DIR is the folder docs/digits-results.sh wrote; the grids use the samples saved with
--save-samples, and a grid of 64 real test digits is written for comparison. Pixels are shown
as they are (clipped to [0, 1]), nearest-neighbour, black on white like the 8×8 digits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results.sample_plots import image_tile, load_samples


def save_grid(images: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4.25), dpi=100)
    ink = 1 - np.clip(images[:64], 0, 1)  # dark strokes on white; the grid's padding stays white
    ax.imshow(image_tile(ink, pad=2), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for run in sorted(p for p in args.results.iterdir() if (p / "results.csv").is_file()):
        rows = pd.read_csv(run / "results.csv")
        cell = rows[(rows.steps == 1000) & (rows.seed == 0) & (rows.status == "ok")].iloc[0]
        samples = load_samples(run / "samples", cell.cell_id)
        title = f"{cell.model}: {cell.predictor}+{cell.corrector}, N=1000"
        save_grid(samples, args.out / f"{run.name}.png", title)
        print(args.out / f"{run.name}.png")
    from bench_plugins.datasets import Digits

    real = Digits().data("test").numpy()
    save_grid(real, args.out / "digits-real-test.png", "real digits (test split)")
    print(args.out / "digits-real-test.png")


if __name__ == "__main__":
    main()
