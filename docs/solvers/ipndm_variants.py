"""iPNDM's published defaults and the suite's variants side by side (docs/solvers/ipndm_ode.md).

    python docs/solvers/ipndm_variants.py        # about 10 s on one CPU thread

On the exact Gaussian oracle N(0.5, 0.2²·I) in 4 dimensions, float64, the error of the final
sample is measured against its N → ∞ limit, the closed-form flow to eps followed by the exact
denoiser D at eps (every variant's last step lands there). Prints two Markdown tables: the
observed order (least-squares slope of log error against log 1/N, 64 samples, N = 64 … 512 and
256 … 2048) and the RMS error over 256 samples at 5, 10 and 20 steps (= NFE).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.core.views import ModelView
from bench.plugin import loading

MEAN, STD = 0.5, 0.2
VARIANTS = {
    "`ipndm` (diff-sampler `ipndm_sampler`)": ("ipndm", {}),
    "`ipndm -o last_step=multistep` (diffusers `IPNDMScheduler`)": (
        "ipndm",
        {"last_step": "multistep"},
    ),
    "`ipndm -o variable_step=true` (the suite's exact AB)": ("ipndm", {"variable_step": True}),
    "`ipndm_v` (diff-sampler `ipndm_v_sampler`)": ("ipndm_v", {}),
    "`ipndm_v -o order=3`": ("ipndm_v", {"order": 3}),
}
CASES = [("ve", "edm"), ("ve", "logsnr"), ("vp", "edm"), ("vp", "logsnr")]
RANGES = ([64, 128, 256, 512], [256, 512, 1024, 2048])
FEW = [5, 10, 20]


def gaussian(registry):
    from bench_plugins.score_models.gmm import GaussianMixtureModel, Mixture

    mixture = Mixture.from_dict({"weights": [1], "means": [[MEAN] * 4], "stds": [STD]}, "gauss4")
    return GaussianMixtureModel(mixture, "gauss4", None, torch.device("cpu"), torch.float64)


def limit(sde, x_T):
    """The flow from T to eps in closed form, then D at eps (Tweedie, exact for Gaussian data)."""
    a_T, s_T = sde.marginal_coef(sde.T)
    a_e, s_e = sde.marginal_coef(sde.eps)
    v_T, v_e = a_T**2 * STD**2 + s_T**2, a_e**2 * STD**2 + s_e**2
    x_e = a_e * MEAN + math.sqrt(v_e / v_T) * (x_T - a_T * MEAN)
    return MEAN + a_e * STD**2 / v_e * (x_e - a_e * MEAN)


def final_error(registry, model, variant, sde_name, schedule, N, n):
    """(max-abs error, RMS error) of the final sample from n prior samples, and the counted NFE."""
    name, options = variant
    cls = registry.get("samplers", name).obj
    sde = registry.get("sdes", sde_name).obj(N)
    grid = registry.get("schedules", schedule).obj().grid(sde, N)
    z = torch.randn(n, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = sde.prior_sampling(z)
    view = ModelView(model.native_fn(sde), model.native, sde)
    with torch.no_grad():
        x = cls(cls.Options(**options)).sample(x_T, grid, view, None)
    diff = x - limit(sde, x_T)
    assert view.calls == N
    return diff.abs().max().item(), diff.norm(dim=1).pow(2).mean().sqrt().item()


def slope(steps, errors) -> float:
    return float(np.polyfit(np.log(1.0 / np.asarray(steps)), np.log(np.asarray(errors)), 1)[0])


def main() -> None:
    torch.set_num_threads(1)
    registry = loading.load(allow=[]).registry
    model = gaussian(registry)
    head = " | ".join(f"{s.upper()}-{g}" for s, g in CASES)
    print(f"| variant | {head} |\n|---|{'---|' * len(CASES)}")
    for label, variant in VARIANTS.items():
        cells = []
        for sde_name, schedule in CASES:
            fits = []
            for steps in RANGES:
                errs = [
                    final_error(registry, model, variant, sde_name, schedule, N, 64)[0]
                    for N in steps
                ]
                fits.append(f"{slope(steps, errs):.2f}")
            cells.append(" / ".join(fits))
        print(f"| {label} | {' | '.join(cells)} |")
    print()
    print(f"| SDE-schedule | variant | {' | '.join(f'N = {N}' for N in FEW)} |")
    print(f"|---|---|{'---|' * len(FEW)}")
    for sde_name, schedule in CASES:
        for label, variant in VARIANTS.items():
            errs = [
                final_error(registry, model, variant, sde_name, schedule, N, 256)[1] for N in FEW
            ]
            row = " | ".join(f"{e:.2e}" for e in errs)
            print(f"| {sde_name.upper()}-{schedule} | {label} | {row} |")


if __name__ == "__main__":
    main()
