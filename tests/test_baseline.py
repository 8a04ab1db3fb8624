"""The regression gate end to end: exact reruns pass, a broken predictor fails.

Small real sweeps on the exact-score ring (CPU, one thread, deterministic given the seeds), then
``bench compare``: against an exact rerun, against a rerun with the built-in reverse-diffusion
predictor broken in place (monkeypatched inside the same process), and against a broken copy
registered under a new name by a ``--plugins-dir`` file and mapped back with ``--rename``. The
slow test drives ``.ci/baseline-check`` itself in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import cli

ROOT = Path(__file__).parents[1]
SWEEP = [
    "--model",
    "ring8",
    "--sdes",
    "vp",
    "--predictors",
    "euler_maruyama,reverse_diffusion",
    "--correctors",
    "none",
    "--steps",
    "25",
    "--seeds",
    "0-2",
    "--samples",
    "200",
    "--batch-size",
    "200",
    "--device",
    "cpu",
    "--threads",
    "1",
    "--no-progress",
]

BROKEN_PLUGIN = '''
import bench
from bench_plugins.predictors import ReverseDiffusion


class BrokenReverseDiffusion(ReverseDiffusion):
    """Reverse diffusion with a deliberately wrong drift (× 0.8): a test regression."""

    name = "rd_broken"
    aliases = ()

    def update(self, x, t):
        return broken_update(self, x, t)


def broken_update(self, x, t):
    f, G = self.rsde.discretize(x, t)
    x_mean = x - 0.8 * f
    return (x_mean if G == 0.0 else x_mean + G * self.noise(x)), x_mean


@bench.hookimpl
def register_predictors(register):
    register(BrokenReverseDiffusion)
'''

PATCH_BUILTIN = '''
"""Test-only plugin: breaks the built-in reverse-diffusion predictor in place."""
from bench_plugins.predictors import ReverseDiffusion


def broken_update(self, x, t):
    f, G = self.rsde.discretize(x, t)
    x_mean = x - 0.8 * f
    return (x_mean if G == 0.0 else x_mean + G * self.noise(x)), x_mean


ReverseDiffusion.update = broken_update
'''


def broken_update(self, x, t):
    """Reverse diffusion with the drift scaled by 0.8 (the regression the gate must catch)."""
    f, G = self.rsde.discretize(x, t)
    x_mean = x - 0.8 * f
    return (x_mean if G == 0.0 else x_mean + G * self.noise(x)), x_mean


def sweep(out: Path, *extra: str) -> Path:
    result = CliRunner().invoke(cli, [*extra, "run", *SWEEP, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def compare(*args: str):
    return CliRunner().invoke(cli, ["compare", *args, "--no-config"])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return sweep(tmp_path_factory.mktemp("baseline") / "run")


def test_exact_rerun_passes(baseline, tmp_path):
    result = compare(str(baseline), str(sweep(tmp_path / "rerun")))
    assert result.exit_code == 0, result.output
    # 2 samplers × 6 gated columns (swd, fd, logp, coverage_tv, coverage_min, nfe)
    assert "12 of 12 comparisons are identical" in result.output


def test_broken_builtin_predictor_fails(baseline, tmp_path, monkeypatch):
    from bench_plugins import predictors

    monkeypatch.setattr(predictors.ReverseDiffusion, "update", broken_update)
    current = sweep(tmp_path / "broken")
    result = compare(
        str(baseline), str(current), "--max-regression", "5%", "--csv", str(tmp_path / "rows.csv")
    )
    assert result.exit_code == 1, result.output
    import pandas as pd

    rows = pd.read_csv(tmp_path / "rows.csv")
    regressed = set(rows.loc[rows["verdict"] == "regression", "label"])
    assert regressed == {"reverse_diffusion+none"}
    assert set(rows.loc[rows["label"] == "euler_maruyama+none", "verdict"]) == {"same"}


def test_broken_plugin_compared_by_name_mapping(baseline, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken_rd.py").write_text(BROKEN_PLUGIN)
    current = tmp_path / "plugin-run"
    args = [
        "--plugins-dir",
        str(plugins),
        "run",
        *SWEEP,
        "--predictors",
        "rd_broken",
        "--out",
        str(current),
    ]
    assert CliRunner().invoke(cli, args).exit_code == 0
    unmapped = compare(str(baseline), str(current), "--allow-missing")
    assert unmapped.exit_code == 0  # nothing matched: without the mapping nothing is judged
    mapped = compare(
        str(baseline),
        str(current),
        "--allow-missing",
        "--max-regression",
        "5%",
        "--rename",
        "predictor.rd_broken=reverse_diffusion",
    )
    assert mapped.exit_code == 1, mapped.output
    assert "reverse_diffusion+none" in mapped.output.split("regressions")[1]


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("BENCH_TEST_CI_SCRIPTS", "") in ("", "0"),
    reason="five bench processes (~30 s): set BENCH_TEST_CI_SCRIPTS=1 to run",
)
def test_ci_baseline_check_script(tmp_path):
    """``.ci/baseline-check`` passes on an exact rerun and fails on a broken built-in.

    The built-in is broken in the subprocesses by a ``BENCH_PLUGINS`` file that patches
    ``ReverseDiffusion.update`` on import; the baseline is a small sweep made with the same
    script (``BENCH_BASELINE_ARGS`` narrows it, ``BENCH_BASELINE_DIR`` points the check at it).
    """
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "BENCH_BASELINE_DIR": str(tmp_path / "baseline"),
        "BENCH_BASELINE_ARGS": " ".join(SWEEP[2:]) + " --probability-flow off",
    }
    env.pop("GITHUB_STEP_SUMMARY", None)
    make = subprocess.run(
        [ROOT / ".ci" / "baseline-sweep", tmp_path / "baseline", "oracle-ring8"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert make.returncode == 0, make.stderr
    check = ROOT / ".ci" / "baseline-check"
    passed = subprocess.run([check], env=env, capture_output=True, text=True)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "PASS" in passed.stdout
    patch = tmp_path / "patch_rd.py"
    patch.write_text(PATCH_BUILTIN)
    failed = subprocess.run(
        [check], env={**env, "BENCH_PLUGINS": str(patch)}, capture_output=True, text=True
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAIL" in failed.stdout and "reverse_diffusion+none" in failed.stdout
