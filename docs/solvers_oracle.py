"""Error against NFE of every deterministic sampler on the exact-score oracles (docs/solvers.md).

    python docs/solvers_oracle.py --out docs/img        # about 2 minutes on one CPU thread

For the Gaussian oracle the reference is the closed-form probability-flow map to eps followed by
the exact final denoising step; for ring8 and gmm64 it is a very fine solution from the same
x_T (Heun, 4000 EDM steps). The error is the root-mean-square distance over 256 samples, in
float64. Writes a Markdown table to stdout and one PNG per model.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from bench.core.noise import SampleNoise, prior_noise
from bench.core.pc import PCSampler
from bench.core.views import ModelView
from bench.plugin import loading

SAMPLERS = [
    "euler",
    "ddim",
    "heun",
    "dpmpp_2m",
    "dpmpp_3m",
    "unipc",
    "unipc-3",
    "ipndm",
    "ipndm_v",
    "pc-pf",
]
SCHEDULES = ["edm", "logsnr", "quadratic", "uniform"]
STEPS = [5, 10, 20, 50, 100]
N_SAMPLES = 256


def sampler(registry, name):
    if name == "pc-pf":
        get = registry.get
        return PCSampler(
            get("predictors", "euler").obj, get("correctors", "none").obj, probability_flow=True
        )
    if name == "unipc-3":
        cls = registry.get("samplers", "unipc").obj
        return cls(cls.Options(order=3))
    cls = registry.get("samplers", name).obj
    return cls()


def run(registry, model, sde_name, schedule, s, steps, x_T):
    sde = registry.get("sdes", sde_name).obj(steps)
    grid = registry.get("schedules", schedule).obj().grid(sde, steps)
    sde.discrete = grid.paper
    view = ModelView(model.native_fn(sde), model.native, sde)
    with torch.no_grad():
        x = s.sample(x_T, grid, view, SampleNoise(0, 0, x_T.shape[0]))
    return x, view.calls


def gaussian_reference(sde, x_T, mean=0.5, std=0.2):
    """Closed-form flow from T to eps, then the exact denoiser D at eps (every sampler's last
    step into σ = 0 lands on D at its own x_{N−1})."""
    a_T, s_T = sde.marginal_coef(sde.T)
    a_e, s_e = sde.marginal_coef(sde.eps)
    v_T, v_e = a_T**2 * std**2 + s_T**2, a_e**2 * std**2 + s_e**2
    x_e = a_e * mean + math.sqrt(v_e / v_T) * (x_T - a_T * mean)
    return mean + a_e * std**2 / v_e * (x_e - a_e * mean)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/img")
    args = parser.parse_args()
    torch.set_num_threads(1)
    registry = loading.load(allow=[]).registry
    from bench_plugins.score_models.gmm import GaussianMixtureModel, Mixture

    gauss = GaussianMixtureModel(
        Mixture.from_dict({"weights": [1], "means": [[0.5] * 4], "stds": [0.2]}, "gauss4"),
        "gauss4",
        None,
        torch.device("cpu"),
        torch.float64,
    )
    models = {"gauss4": gauss}
    for name in ("ring8", "gmm64"):
        models[name] = registry.get("score-models", name).obj.load(
            None, device=torch.device("cpu"), dtype=torch.float64
        )
    rows = []
    for model_name, model in models.items():
        for sde_name in ("vp", "ve"):
            sde = registry.get("sdes", sde_name).obj(10)
            z = prior_noise(0, 0, N_SAMPLES, model.data_shape).to(torch.float64)
            x_T = sde.prior_sampling(z)
            if model_name == "gauss4":
                ref = gaussian_reference(sde, x_T)
            else:
                ref, _ = run(registry, model, sde_name, "edm", sampler(registry, "heun"), 4000, x_T)
            for schedule in SCHEDULES:
                for name in SAMPLERS:
                    for steps in STEPS:
                        x, nfe = run(
                            registry, model, sde_name, schedule, sampler(registry, name), steps, x_T
                        )
                        err = float((x - ref).flatten(1).norm(dim=1).pow(2).mean().sqrt())
                        rows.append((model_name, sde_name, schedule, name, steps, nfe, err))
    import pandas as pd

    frame = pd.DataFrame(
        rows, columns=["model", "sde", "schedule", "sampler", "steps", "nfe", "rmse"]
    )
    at10 = frame[frame["nfe"].isin([9, 10])].pivot_table(  # 10 NFE (Heun: 9)
        index=["model", "sde", "sampler"], columns="schedule", values="rmse"
    )
    from bench.results.text import markdown_table

    table = at10.map(lambda v: f"{v:.2e}").reset_index()
    print(markdown_table(table))
    plot(frame, Path(args.out))


def plot(frame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    for model, rows in frame.groupby("model"):
        fig, axes = plt.subplots(2, len(SCHEDULES), figsize=(4 * len(SCHEDULES), 7), sharey=True)
        for i, (sde, by_sde) in enumerate(rows.groupby("sde")):
            for j, schedule in enumerate(SCHEDULES):
                ax = axes[i][j]
                for name, line in by_sde[by_sde["schedule"] == schedule].groupby("sampler"):
                    ax.loglog(line["nfe"], line["rmse"], marker="o", ms=3, label=name)
                ax.set_title(f"{model} · {sde} · {schedule}", fontsize=9)
                ax.set_xlabel("NFE (counted)")
                ax.grid(True, which="both", alpha=0.3)
        axes[0][0].set_ylabel("RMSE to the reference")
        axes[1][0].set_ylabel("RMSE to the reference")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"solvers-error-vs-nfe-{model}.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
