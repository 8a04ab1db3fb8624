"""FID against NFE of digits-flow beside digits-vp (docs/flow.md), from docs/flow-digits.sh's runs.

Usage: python docs/flow_plot.py RESULTS_DIR [--out docs/img/flow-digits-fid.png]

One panel per grid (each sampler's default, shift s = 1, flow's grid over VP's range, edm over
VP's range); one colour per sampler, digits-flow solid and digits-vp dashed; mean FID over the
seeds with its 95 % Student-t interval; the floor (real test digits against the train split at
the same n) and 1.5× the floor as horizontal lines.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

PANELS = {
    "default": "each sampler's default grid",
    "shift1": "shift s = 1 (uniform in t)",
    "flowgrid": "flow's uniform-t σ̃ on VP's range",
    "vprange": "edm ρ = 7 on VP's range",
}
SAMPLERS = ("euler", "heun", "dpmpp_2m", "unipc")


def read(results: Path) -> pd.DataFrame:
    rows = []
    for path in results.glob("*/digits-*/rows.jsonl"):
        for line in path.read_text().splitlines():
            rows.append({**json.loads(line), "grid": path.parts[-3]})
    frame = pd.DataFrame(rows)
    return frame[(frame.status == "ok") & frame.sampler.isin(SAMPLERS)]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    from scipy import stats

    def half(x: pd.Series) -> float:
        n = len(x)
        return float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0

    keys = ["grid", "model", "sampler", "nfe"]
    return frame.groupby(keys).fid.agg(["mean", half]).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/img/flow-digits-fid.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    floor = json.loads((args.results / "floor.json").read_text())[0]["fid_mean"]
    table = summary(read(args.results))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(16, 4.2), sharey=True, dpi=100)
    colours = dict(zip(SAMPLERS, plt.get_cmap("tab10").colors, strict=False))
    for ax, (grid, title) in zip(axes, PANELS.items(), strict=True):
        for (model, sampler), part in table[table.grid == grid].groupby(["model", "sampler"]):
            style = "-" if model == "digits-flow" else "--"
            ax.errorbar(part.nfe, part["mean"], yerr=part["half"], ls=style, marker="o",
                        ms=3, capsize=2, color=colours[sampler],
                        label=f"{sampler}, {model}")  # fmt: skip
        ax.axhline(floor, color="grey", lw=0.8)
        ax.axhline(1.5 * floor, color="grey", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="log", title=title, xlabel="NFE")
        ax.set_xticks([5, 10, 20, 50], labels=["5", "10", "20", "50"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].set_ylabel(f"FID (n = 360; floor {floor:.2f}, dotted 1.5×)")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
