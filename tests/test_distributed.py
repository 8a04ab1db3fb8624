"""torchrun sweeps (gloo, 2 CPU ranks) give a single process's table; a dead rank loses at most
the cell in flight and a resume finishes the run with each cell once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SWEEP = ["--sdes", "ve,vp", "--samplers", "pc,heun", "--predictors", "euler"]
SWEEP += ["--correctors", "none,langevin", "--steps", "20", "--samples", "60", "--batch-size", "16"]
DIGITS = ["--model", "digits-vp", "--samplers", "pc,dpmpp_2m", "--predictors", "euler"]
DIGITS += ["--correctors", "none", "--steps", "4", "--samples", "40", "--batch-size", "12"]
DIGITS += ["--metrics", "fid,kid", "-o", "kid.subsets=5"]


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, "BENCH_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1", **extra}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        out.pop(var, None)
    return out


def bench(args: list[str], ranks: int, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    """``bench ARGS`` in one process, or under ``torchrun --nproc_per_node=ranks``."""
    head = [sys.executable, "-m", "bench"]
    if ranks > 1:
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        head += [f"--nproc_per_node={ranks}", "-m", "bench"]
    return subprocess.run(
        [*head, *args], cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=600
    )


def one_and_two(args: list[str], cwd: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``bench run ARGS`` in one process (``cwd/one``) and on two ranks (``cwd/two``): both
    tables, after checking that both runs succeeded."""
    for ranks, out in ((1, "one"), (2, "two")):
        done = bench(["run", *args, "--no-progress", "--out", out], ranks, cwd)
        assert done.returncode == 0, done.stderr
    return table(cwd / "one"), table(cwd / "two")


def table(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "results.csv").set_index("cell_id").sort_index()


def same_table(one: Path, two: Path, metrics: list[str]) -> None:
    """Identical NFE and statuses; metrics equal to float rounding (the ranks sum their float64
    moments in another order, which FID's matrix square root of a small-n covariance amplifies
    to ~1e-9)."""
    a, b = table(one), table(two)
    assert list(a.index) == list(b.index)
    assert list(a["status"]) == list(b["status"])
    for column in ("nfe", "nfe_min", "nfe_max", "score_calls"):
        np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy(), column)
    for column in metrics:
        np.testing.assert_allclose(
            a[column].to_numpy(float), b[column].to_numpy(float), rtol=1e-6, atol=1e-12
        )
    assert set(b["world_size"]) == {2} and set(b["backend"]) == {"gloo"}
    assert set(b["devices"]) == {"cpu,cpu"} and set(a["world_size"]) == {1}


def test_two_ranks_give_the_table_of_one_process(tmp_path):
    common = [*SWEEP, "--no-progress", "--save-samples"]
    one = bench(["run", *common, "--out", "one"], 1, tmp_path)
    two = bench(["run", *common, "--out", "two"], 2, tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    metrics = ["swd", "fd", "logp", "logp_gap", "coverage_tv", "coverage_min", "swd_ref"]
    same_table(tmp_path / "one", tmp_path / "two", metrics)
    for npz in sorted((tmp_path / "one" / "samples").glob("*.npz")):
        other = tmp_path / "two" / "samples" / npz.name
        np.testing.assert_array_equal(np.load(npz)["samples"], np.load(other)["samples"])


def test_two_ranks_give_the_fid_and_kid_of_one_process(tmp_path):
    common = [*DIGITS, "--no-progress"]
    one = bench(["run", *common, "--out", "one"], 1, tmp_path)
    two = bench(["run", *common, "--out", "two"], 2, tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    same_table(tmp_path / "one", tmp_path / "two", ["fid", "kid", "kid_std"])


def test_a_metric_without_state_is_refused_under_torchrun(tmp_path):
    (tmp_path / "plain.py").write_text(
        textwrap.dedent('''
        import bench

        class Plain(bench.Metric):
            """A metric that does not expose its state (test only)."""
            name = "plain"
            def update(self, samples):
                pass
            def compute(self):
                return {"plain": 0.0}

        @bench.hookimpl
        def register_metrics(register):
            register(Plain)
        ''')
    )
    args = ["-p", "plain.py", "run", "--metrics", "plain", "--samples", "8", "--out", "r"]
    result = bench(args, 2, tmp_path)
    assert result.returncode != 0
    assert "metric 'plain' cannot run under torchrun" in result.stderr
    assert not (tmp_path / "r" / "rows.jsonl").exists()


KILLER = '''
import os
import signal

import bench
from bench_plugins.predictors import EulerMaruyama


class Killer(EulerMaruyama):
    """Euler–Maruyama whose rank 1 kills itself once, in its third cell (test only)."""

    name = "killer"
    aliases = ()
    calls = 0

    def update(self, x, t, t_next=None):
        marker = os.environ["KILL_MARKER"]
        if os.environ.get("RANK") == "1" and not os.path.exists(marker):
            Killer.calls += 1
            if Killer.calls > 40:
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        return super().update(x, t, t_next)


@bench.hookimpl
def register_predictors(register):
    register(Killer)
'''


def test_a_dead_rank_then_resume_finishes_each_cell_once(tmp_path):
    (tmp_path / "killer.py").write_text(KILLER)
    marker = str(tmp_path / "marker")
    args = ["-p", "killer.py", "run", "--sdes", "ve", "--predictors", "killer"]
    args += ["--correctors", "none", "--steps", "10", "--seeds", "0-5", "--samples", "40"]
    args += ["--batch-size", "10", "--metrics", "swd", "--no-progress", "--out", "run"]
    died = bench(args, 2, tmp_path, KILL_MARKER=marker)
    assert died.returncode != 0
    assert "rank      : 1" in died.stderr and "SIGKILL" in died.stderr  # torchrun names it
    lines = (tmp_path / "run" / "rows.jsonl").read_text().splitlines()
    assert 0 < len(lines) < 6 and all(json.loads(line)["status"] == "ok" for line in lines)
    resumed = bench(args, 2, tmp_path, KILL_MARKER=marker)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({len(lines)} already done)" in resumed.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and len({r["cell_id"] for r in rows}) == 6
    assert {r["status"] for r in rows} == {"ok"}


BROKEN = '''
import bench
from bench_plugins.predictors import EulerMaruyama


class Broken(EulerMaruyama):
    """Euler–Maruyama that always raises (test only)."""

    name = "broken"
    aliases = ()

    def update(self, x, t, t_next=None):
        raise ValueError("broken on purpose")


@bench.hookimpl
def register_predictors(register):
    register(Broken)
'''


def test_cells_of_one_batch_say_unsupported_and_error_as_one_process_does(tmp_path):
    """With fewer batches than ranks, rank 1 samples nothing: it abstains, and the cell's own
    unsupported or error outcome is the row, as in one process (not a failed run)."""
    (tmp_path / "broken.py").write_text(BROKEN)
    args = ["-p", "broken.py", "run", "--sdes", "vp", "--predictors", "euler,broken"]
    args += ["--correctors", "none,langevin", "--steps", "10,30", "--samples", "20"]
    args += ["--batch-size", "20", "--metrics", "swd", "--no-progress"]
    one = bench([*args, "--out", "one"], 1, tmp_path)
    two = bench([*args, "--out", "two"], 2, tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = table(tmp_path / "one"), table(tmp_path / "two")
    assert set(a["status"]) == {"ok", "unsupported", "error"}
    assert list(a.index) == list(b.index) and list(a["status"]) == list(b["status"])
    assert list(a["reason"].fillna("")) == list(b["reason"].fillna(""))
    np.testing.assert_array_equal(a["swd"].to_numpy(float), b["swd"].to_numpy(float))
