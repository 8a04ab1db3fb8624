"""A cell's samples do not depend on the batch size: every draw is a function of (seed, sample
index, draw index) only — except where a sampler couples the batch by design, which its row says."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from bench.cli import cli

STOCHASTIC = [
    ("pc", ["--predictors", "euler_maruyama,reverse_diffusion,ancestral_sampling"]),
    ("pc", ["--predictors", "none", "--correctors", "ald"]),
    ("ddim", ["-o", "sampler.ddim.eta=1"]),
    ("heun", ["-o", "sampler.heun.s_churn=5"]),
]


def samples_at(tmp_path, batch_size: int, sampler: str, extra: list[str]) -> dict[str, np.ndarray]:
    out = tmp_path / f"{sampler}-{batch_size}"
    args = ["run", "--model", "ring8", "--sdes", "ve,vp", "--samplers", sampler, "--steps", "12"]
    args += ["--samples", "64", "--batch-size", str(batch_size), "--dtype", "float64"]
    args += ["--metrics", "none", "--save-samples", "--no-progress", "--out", str(out), *extra]
    if sampler == "pc" and "--correctors" not in extra:
        args += ["--correctors", "none"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    import pandas as pd

    rows = pd.read_csv(out / "results.csv")
    ok = rows[rows["status"] == "ok"]
    assert len(ok) > 0
    names = ok["sde"] + "/" + ok["sampler"] + "/" + ok["predictor"].astype(str)
    return {
        name: np.load(out / "samples" / f"{cell}.npz")["samples"]
        for name, cell in zip(names, ok["cell_id"])
    }


@pytest.mark.parametrize("sampler,extra", STOCHASTIC, ids=[s for s, _ in STOCHASTIC])
def test_samples_do_not_depend_on_the_batch_size(tmp_path, sampler, extra):
    by_size = {b: samples_at(tmp_path, b, sampler, extra) for b in (1, 7, 64)}
    assert by_size[1].keys() == by_size[7].keys() == by_size[64].keys() and by_size[1]
    for name, ref in by_size[64].items():
        for b in (1, 7):
            np.testing.assert_allclose(by_size[b][name], ref, rtol=1e-12, atol=1e-12, err_msg=name)


def test_batch_coupled_samplers_say_so_in_the_row(tmp_path):
    out = tmp_path / "coupled"
    args = ["run", "--sdes", "ve", "--samplers", "pc,ode,heun", "--predictors", "euler"]
    args += ["--correctors", "none,langevin", "--steps", "10", "--samples", "16"]
    result = CliRunner().invoke(
        cli, [*args, "--metrics", "none", "--no-progress", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    import pandas as pd

    rows = pd.read_csv(out / "results.csv", keep_default_na=False)
    names = rows["sampler"] + "/" + rows["corrector"]
    coupled = {n: why for n, why in zip(names, rows["batch_dependence"]) if why}
    assert set(coupled) == {"pc/langevin", "ode/"}, coupled
    assert "batch-mean norms" in coupled["pc/langevin"] and "RK45" in coupled["ode/"]
