"""Quick, independent quality check of digits samples (no FID tooling needed).

Reads ``samples/*.npz`` written by ``bench run --save-samples`` (images in [0, 1], (N, 1, 8, 8)),
then for each cell:

* saves an 8×8 PNG grid of the first 64 samples next to a grid of 64 real test digits;
* classifies the samples with an sklearn MLP trained on the digits **train** split and prints the
  predicted-class histogram, the mean max-probability and the balance (min/max class count);
* prints a Fréchet distance in the MLP's hidden features against the test split, next to the same
  distance for real train images (a rough floor), and the median nearest-train-neighbour L2
  distance (memorisation check).

Usage: python docs/check_digits_samples.py RUN_DIR [RUN_DIR ...] [--png-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import numpy as np
from bench_plugins.datasets import Digits
from scipy import linalg
from sklearn.neural_network import MLPClassifier


def grid_png(images: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.clip(images[:64, 0], 0, 1)
    tiles = np.ones((8 * 9 + 1, 8 * 9 + 1))
    for k, img in enumerate(images):
        r, c = divmod(k, 8)
        tiles[1 + r * 9 : 9 + r * 9, 1 + c * 9 : 9 + c * 9] = img
    fig, ax = plt.subplots(figsize=(6, 6.4), dpi=100)
    ax.imshow(tiles, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def hidden(clf: MLPClassifier, x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ clf.coefs_[0] + clf.intercepts_[0], 0)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


def main() -> None:
    warnings.filterwarnings("ignore", category=linalg.LinAlgWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--png-dir", type=Path, default=Path("/tmp/digits-grids"))
    args = parser.parse_args()
    args.png_dir.mkdir(parents=True, exist_ok=True)
    ds = Digits()
    xtr = ds.data("train").numpy().reshape(-1, 64)
    ytr = ds.labels("train").numpy()
    xte = ds.data("test").numpy().reshape(-1, 64)
    yte = ds.labels("test").numpy()
    clf = MLPClassifier((128,), max_iter=2000, random_state=0).fit(xtr, ytr)
    p_test = clf.predict_proba(xte)
    print(
        f"classifier test accuracy {clf.score(xte, yte):.3f}, "
        f"real test mean max-prob {p_test.max(1).mean():.3f}"
    )
    grid_png(xte.reshape(-1, 1, 8, 8), args.png_dir / "real_test.png", "real test digits")
    rng = np.random.default_rng(0)
    floor = frechet(hidden(clf, xtr[rng.choice(len(xtr), 512, replace=False)]), hidden(clf, xte))
    print(f"feature FD: 512 real train vs 360 test = {floor:.2f} (floor)")
    d_test = np.sqrt(((xte[:, None, :] - xtr[None]) ** 2).sum(-1)).min(1)
    print(f"real test images: median nearest-train L2 distance {np.median(d_test):.2f}")
    for run in args.runs:
        rows = {r["cell_id"]: r for r in csv.DictReader(open(run / "results.csv"))}
        for npz in sorted((run / "samples").glob("*.npz")):
            report(npz, rows.get(npz.stem, {}), clf, xtr, xte, args.png_dir)


def report(npz: Path, row: dict, clf, xtr, xte, png_dir: Path) -> None:
    x = np.load(npz)["samples"].astype(np.float64)
    name = (
        f"{row.get('model', '?')} {row.get('sde', '')} {row.get('predictor', '')}+"
        f"{row.get('corrector', '')} N={row.get('steps', '')}"
    )
    flat = np.clip(x.reshape(len(x), 64), 0, 1)
    proba = clf.predict_proba(flat)
    hist = np.bincount(proba.argmax(1), minlength=10)
    d = np.sqrt(((flat[:, None, :] - xtr[None]) ** 2).sum(-1)).min(1)
    fd = frechet(hidden(clf, flat), hidden(clf, xte))
    print(
        f"{name}: n={len(x)} hist={hist.tolist()} min/max={hist.min()}/{hist.max()} "
        f"max-prob={proba.max(1).mean():.3f} FD={fd:.2f} NN-train median={np.median(d):.2f} "
        f"range=[{x.min():.2f}, {x.max():.2f}]"
    )
    safe = name.replace(" ", "_").replace("+", "-").replace("/", "_").replace(":", "_")
    grid_png(x, png_dir / f"{safe}.png", name)


if __name__ == "__main__":
    main()
