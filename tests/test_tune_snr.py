"""``bench tune-snr``: the search on synthetic curves (where the optimum is known), and end to end
on ring8, whose exact metric ``logp_gap`` has a sharp optimum in the SNR, against a dense grid."""

from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import BenchError
from bench.run.tune import Curve, Search, Target, paired, proposals, snap, tune_target

TARGET = Target("ve", "reverse_diffusion", "langevin", 30, 1, False)


class FakeRunner:
    """Values f(snr) + a per-seed offset shared by every SNR (common random numbers) + a
    little independent noise; ``None`` (no corrector) scores ``baseline``."""

    def __init__(self, f, seeds=(0, 1, 2), noise=0.0, baseline=1.0):
        self.f, self.seeds, self.noise, self.baseline = f, seeds, noise, baseline
        self.calls: list[list[float | None]] = []

    def run(self, target, snrs):
        self.calls.append(list(snrs))

    def values(self, target, snr, column):
        out = {}
        for seed in self.seeds:
            rng = random.Random(hash((seed, snr)))
            shared = 0.5 * seed  # a seed moves every SNR alike: paired differences cancel it
            value = self.baseline if snr is None else self.f(snr)
            out[seed] = value + shared + self.noise * rng.gauss(0, 1)
        return out


def test_finds_a_sharp_optimum_to_the_resolution():
    runner = FakeRunner(lambda s: abs(s - 0.226), noise=1e-4)  # 0.23 is best on the grid
    out = tune_target(runner, TARGET, Search("m", budget=60), include=(0.16,), baselines=("rd",))
    assert out.chosen == pytest.approx(0.23) and out.stop == "resolution"
    assert out.plausible == (pytest.approx(0.23), pytest.approx(0.23))
    assert out.cells <= 60 and all(len(c) <= 2 for c in runner.calls[1:-1])
    (vs_paper, vs_base) = out.comparisons
    assert vs_paper["verdict"] == "tuned is better" and vs_paper["diff"] < 0
    assert vs_base["verdict"] == "tuned is better" and runner.calls[-1] == [None]


def test_stops_inside_the_noise_and_reports_the_plausible_range():
    """A flat curve: the neighbours are never significantly worse, so the coarse grid is all."""
    runner = FakeRunner(lambda s: 0.0, noise=0.05)
    out = tune_target(runner, TARGET, Search("m", budget=60))
    assert out.stop == "noise" and out.cells == 6 * 3
    assert out.plausible[0] <= 0.02 and out.plausible[1] >= 0.16


def test_extends_past_the_edge_and_respects_the_budget():
    runner = FakeRunner(lambda s: abs(s - 0.897))
    out = tune_target(runner, TARGET, Search("m", budget=90))
    assert out.chosen == pytest.approx(0.9) and out.stop == "resolution"  # past the grid's 0.32
    small = tune_target(FakeRunner(lambda s: abs(s - 0.9)), TARGET, Search("m", budget=24))
    assert small.stop == "budget" and small.cells <= 24
    with pytest.raises(BenchError, match="budget"):
        tune_target(FakeRunner(lambda s: s), TARGET, Search("m", budget=10))


def test_diverged_cells_are_worse_than_anything():
    runner = FakeRunner(lambda s: math.inf if s > 0.1 else -s)
    out = tune_target(runner, TARGET, Search("m", budget=60))
    assert 0.08 <= out.chosen <= 0.1 and out.curve[-1]["mean"] == math.inf


def test_curve_helpers():
    assert snap(0.123, 0.01) == 0.12 and snap(0.001, 0.01) == 0.01
    assert paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.5, 2: 2.5})[0] == pytest.approx(0.5)
    assert paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.5, 2: 2.5})[1] == pytest.approx(0)
    curve = Curve({0.1: {0: 1.0}, 0.2: {0: 0.5}, 0.4: {0: 0.9}})
    assert curve.best() == 0.2 and curve.worse(0.1, 0.2) is None  # one seed: no interval
    assert proposals(curve, Search("m"))[0] == [0.15, 0.3]


# -- end to end on the exact oracle ---------------------------------------------------------------
COMMON = [
    "--model", "ring8", "--sdes", "ve", "--predictors", "rd", "--correctors", "langevin",
    "--steps", "30", "--samples", "1000", "--batch-size", "1000", "--seeds", "0-2",
    "--metrics", "logp", "--no-progress",
]  # fmt: skip


@pytest.mark.slow
def test_ring8_tuned_snr_matches_a_dense_grid(tmp_path):
    """On ring8 (VE, reverse diffusion + Langevin, 30 steps) ``logp_gap`` is a sharp V in the
    SNR (minimum near 0.28). The tuner's choice lies among the dense grid's best SNRs and the
    dense argmin inside the tuner's uncertainty, for fewer cells than the dense grid."""
    out = tmp_path / "tune"
    runner = CliRunner()
    tune = ["tune-snr", *COMMON, "--budget", "48", "--out", str(out), "--json"]
    result = runner.invoke(cli, tune)
    assert result.exit_code == 0, result.output
    (outcome,) = json.loads(result.stdout)
    assert outcome["metric"] == "logp_gap" and outcome["stop"] in ("noise", "resolution")
    lo, hi = outcome["plausible"]
    dense = [round(0.14 + 0.02 * i, 2) for i in range(14)]  # 0.14 … 0.40
    snrs = ",".join(map(str, dense))
    ran = runner.invoke(cli, ["run", *COMMON, "--snr", snrs, "--out", str(tmp_path / "dense")])
    assert ran.exit_code == 0, ran.output
    frame = pd.read_csv(tmp_path / "dense" / "results.csv")
    frame = frame[frame.corrector == "langevin"]
    table = frame.pivot_table(index="snr", columns="seed", values="logp_gap")
    argmin = float(table.mean(axis=1).idxmin())
    assert 0.22 <= argmin <= 0.34  # the optimum is well inside the grid
    assert lo - 0.02 <= argmin <= hi + 0.02
    assert abs(outcome["chosen"] - argmin) <= 0.04
    assert outcome["cells"] < len(dense) * 3
    # the run folder is an ordinary run: rows, run.json with the tuning, tune.json, bench report
    meta = json.loads((out / "run.json").read_text())
    assert meta["tune"][0]["chosen"] == outcome["chosen"]
    rows = pd.read_csv(out / "results.csv")
    assert set(rows.status) == {"ok"} and rows.snr.nunique() == outcome["cells"] // 3
    assert (out / "tune.json").is_file()
    report = runner.invoke(cli, ["report", str(out), "--metric", "logp_gap"])
    assert report.exit_code == 0, report.output
    again = runner.invoke(cli, tune)
    assert json.loads(again.stdout)[0]["chosen"] == outcome["chosen"]  # resumed: nothing rerun


def test_bad_requests_exit_2(tmp_path):
    runner = CliRunner()
    base = ["tune-snr", *COMMON, "--out", str(tmp_path / "x")]
    assert runner.invoke(cli, [*base, "--metric", "logp"]).exit_code == 2  # informational
    assert runner.invoke(cli, [*base, "--metric", "nope"]).exit_code == 2
    assert runner.invoke(cli, [*base, "--budget", "3"]).exit_code == 2
    assert runner.invoke(cli, [*base, "--metric", "swd"]).exit_code == 2  # swd not in --metrics
