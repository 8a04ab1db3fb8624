"""Durability: SIGKILL at random moments loses at most the cell in flight; Ctrl-C exits 130."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from bench.run.store import RunStore

GRID = [
    "--model",
    "ring8",
    "--sdes",
    "ve,vp",
    "--predictors",
    "euler,reverse_diffusion",
    "--correctors",
    "none,langevin",
    "--steps",
    "100,200",
    "--samples",
    "300",
    "--batch-size",
    "150",
    "--seeds",
    "0",
    "--no-progress",
]
TIMING = [
    "wall_clock_s",
    "samples_per_s",
    "s_per_nfe",
    "s_per_pass",
    "metrics_s",
    "started_at",
    "peak_memory_mb",
    "peak_rss_mb",
]


def bench(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", *GRID, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


def comparable(folder):
    frame = pd.read_csv(folder / "results.csv")
    return frame.drop(columns=[c for c in TIMING if c in frame]).set_index("cell_id").sort_index()


def finished_cells(folder) -> int:
    path = folder / "rows.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_a_clean_run(tmp_path):
    clean = bench("--out", tmp_path / "clean")
    assert clean.wait(timeout=300) == 0, clean.stderr.read()
    rng = random.Random(20261122)
    killed = tmp_path / "killed"
    kills = 0
    # one kill during start-up (imports, model, run folder), before any cell can finish
    proc = bench("--out", killed)
    time.sleep(rng.uniform(0.2, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    for _ in range(4):
        before = finished_cells(killed)
        proc = bench("--out", killed)
        while finished_cells(killed) == before and proc.poll() is None:
            time.sleep(0.01)  # let each attempt finish at least one cell ...
        time.sleep(rng.uniform(0.0, 0.3))  # ... then kill at a random moment
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 3 and finished_cells(killed) < 16
    final = bench("--out", killed)
    assert final.wait(timeout=300) == 0, final.stderr.read()
    expected, got = comparable(tmp_path / "clean"), comparable(killed)
    assert got.index.is_unique and len(got) == len(expected) == 16
    pd.testing.assert_frame_equal(got[expected.columns], expected)
    log = [json.loads(line)["cell_id"] for line in (killed / "rows.jsonl").read_text().splitlines()]
    assert len(log) == len(set(log)) == 16  # no cell ran twice to completion


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_exit_130(tmp_path):
    out = tmp_path / "r"
    proc = bench("--out", out)
    deadline = time.time() + 120
    while finished_cells(out) < 1 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    stderr = proc.stderr.read()
    assert f"resume with: bench run --resume {out}" in stderr and "Traceback" not in stderr
    done = finished_cells(out)
    assert 1 <= done < 16
    resumed = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--resume", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"16 cells ({done} already done)" in resumed.stderr
    assert len(pd.read_csv(out / "results.csv")) == 16


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    store = RunStore(tmp_path)
    store.prepare()
    store.append({"cell_id": "a", "status": "ok", "x": 1.0})
    with open(store.rows_path, "a") as f:
        f.write('{"cell_id": "b", "status": "o')  # a kill in the middle of a write
    assert [r["cell_id"] for r in store.rows()] == ["a"]
    store.append({"cell_id": "c", "status": "ok", "x": 3.0})
    assert [r["cell_id"] for r in store.rows()] == ["a", "c"]
    assert list(pd.read_csv(store.csv_path)["cell_id"]) == ["a", "c"]


def test_rows_with_different_columns_share_one_csv(tmp_path):
    store = RunStore(tmp_path)
    store.prepare()
    store.append({"cell_id": "a", "status": "unsupported", "reason": "why"})
    store.append({"cell_id": "b", "status": "ok", "swd": 0.1, "nan": float("nan")})
    frame = pd.read_csv(store.csv_path)
    assert list(frame.columns) == ["cell_id", "status", "reason", "swd", "nan"]
    assert frame["nan"].isna().all()


# -- the meaning of a run folder: refusals, --new-run, --resume, error cells ----------------------
SMALL = ["--model", "gauss1d", "--sdes", "vp", "--predictors", "euler", "--correctors", "none"]
SMALL += ["--steps", "25", "--samples", "16", "--no-progress"]


def invoke(*args):
    from click.testing import CliRunner

    from bench.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize(
    "change,what",
    [(["--samples", "32"], "samples: 16 → 32"), (["--model", "ring8"], "model: 'gauss1d'")],
)
def test_changed_meaning_of_an_existing_run_is_refused(tmp_path, change, what):
    out = tmp_path / "r"
    assert invoke("run", *SMALL, "--out", out).exit_code == 0
    before = (out / "rows.jsonl").read_text()
    result = invoke("run", *SMALL, *change, "--out", out)
    assert result.exit_code == 2 and "rows mean something else" in result.stderr
    assert what in result.stderr and "--new-run" in result.stderr
    assert (out / "rows.jsonl").read_text() == before  # untouched


@pytest.mark.parametrize("sampler,refused", [("euler_ancestral", True), ("euler", False)])
def test_a_folder_of_the_first_brownian_layout(tmp_path, sampler, refused):
    """A folder written before the Brownian layout was recorded (no key: layout 1) refuses to
    resume only if its rows drew Brownian paths; the others keep their rows and gain the key."""
    out = tmp_path / "r"
    args = ["run", "--model", "gauss1d", "--sdes", "vp", "--samplers", sampler, "--steps", "5"]
    args += ["--samples", "16", "--no-progress", "--out", out]
    assert invoke(*args).exit_code == 0
    meta = json.loads((out / "run.json").read_text())
    del meta["identity"]["brownian_layout"]
    (out / "run.json").write_text(json.dumps(meta))
    result = invoke(*args[:-2], "--steps", "5,6", "--out", out)
    if refused:
        assert result.exit_code == 2 and "brownian_layout: 1 → 2" in result.stderr
    else:
        assert result.exit_code == 0, result.output
        assert json.loads((out / "run.json").read_text())["identity"]["brownian_layout"] == 2
        assert pd.read_csv(out / "results.csv")["steps"].tolist() == [5, 6]


def test_new_run_archives_the_old_results(tmp_path):
    out = tmp_path / "r"
    assert invoke("run", *SMALL, "--out", out).exit_code == 0
    old = (out / "rows.jsonl").read_text()
    result = invoke("run", *SMALL, "--samples", "32", "--new-run", "--out", out)
    assert result.exit_code == 0, result.output
    (archive,) = out.glob("previous-*")
    assert (archive / "rows.jsonl").read_text() == old and (archive / "run.json").is_file()
    assert pd.read_csv(out / "results.csv")["samples"].tolist() == [32]


def test_resume_refuses_options_that_change_the_rows(tmp_path):
    out = tmp_path / "r"
    assert invoke("run", *SMALL, "--out", out).exit_code == 0
    result = invoke("run", "--resume", out, "--samples", "8")
    assert result.exit_code == 2 and "drop --samples" in result.stderr


def test_resume_reruns_error_cells_and_skips_finished_ones(tmp_path):
    out = tmp_path / "r"
    assert invoke("run", *SMALL, "--steps", "25,30", "--out", out).exit_code == 0
    store = RunStore(out)
    rows = store.rows()
    broken = {**rows[0], "status": "error", "reason": "in someone: RuntimeError: flaky"}
    store.append(broken)  # as if the first cell had failed
    result = invoke("run", "--resume", out)
    assert result.exit_code == 0, result.output
    assert "2 cells (1 already done)" in result.stderr
    final = pd.read_csv(out / "results.csv")
    assert len(final) == 2 and (final["status"] == "ok").all()


def test_a_second_run_on_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "r"
    holder = RunStore(out)
    holder.prepare()
    holder.lock()
    try:
        result = invoke("run", *SMALL, "--out", out)
        assert result.exit_code == 2 and "in use by another bench run" in result.stderr
    finally:
        holder.unlock()
    assert invoke("run", *SMALL, "--out", out).exit_code == 0
    assert not (out / ".lock").exists()  # released and removed when the run ends


@pytest.mark.slow
def test_ctrl_c_before_the_first_cell_exits_130(tmp_path):
    """SIGINT once the command runs but before any cell has finished (reference statistics)."""
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--model", "digits-vp", "--sdes", "vp", "--steps", "25", "--samples", "16"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", *args, "--no-progress", "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while not out.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # the run folder exists: the command is running, no cell has finished
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    stderr = proc.stderr.read()
    assert "interrupted" in stderr and "Traceback" not in stderr and "Aborted" not in stderr


def predictor_plugin(cls: str, doc: str, body: str = "") -> str:
    """A ``-p`` plugin file registering one Euler–Maruyama subclass."""
    return f"""
import bench
from bench.run import interrupts
from bench_plugins.predictors import EulerMaruyama


class {cls}(EulerMaruyama):
    '''{doc}'''
    name = "{cls.lower()}"
    aliases = ()
{body}

@bench.hookimpl
def register_predictors(register):
    register({cls})
"""


def plugin_run(tmp_path, text: str, predictors: str):
    """(plugin file, run folder, ``bench -p FILE run ...`` arguments)."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(text)
    out = tmp_path / "r"
    return plugin, out, ["-p", plugin, "run", *SMALL, "--predictors", predictors, "--out", out]


PLUGIN = predictor_plugin("Mine", "A researcher's predictor, edited between runs.")


def test_cells_of_an_edited_plugin_file_run_again_on_resume(tmp_path):
    plugin, out, args = plugin_run(tmp_path, PLUGIN, "mine,euler")
    assert invoke(*args).exit_code == 0
    before = {r["predictor"]: r for r in RunStore(out).rows()}
    assert invoke(*args).exit_code == 0  # unchanged: nothing runs again
    assert len((out / "rows.jsonl").read_text().splitlines()) == 2
    plugin.write_text(PLUGIN + "\n# a fix\n")
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "1 finished cell(s) were made by other plugin code" in result.stderr
    after = {r["predictor"]: r for r in RunStore(out).rows()}
    assert after["mine"]["predictor_provider"] != before["mine"]["predictor_provider"]
    assert after["euler_maruyama"] == before["euler_maruyama"]  # the built-in cell was kept
    assert len(pd.read_csv(out / "results.csv")) == 2


MANGLER = predictor_plugin(
    "Mangler",
    "Ctrl-C arrives while this plugin runs, and it turns the interrupt into another error.",
    """
    def update(self, x, t):
        interrupts._received = True  # what the SIGINT handler records
        raise RuntimeError("a library swallowed KeyboardInterrupt and raised this")
""",
)


def test_an_interrupt_turned_into_another_error_still_stops_the_sweep(tmp_path):
    _, out, args = plugin_run(tmp_path, MANGLER, "euler,mangler")
    result = invoke(*args)
    assert result.exit_code == 130, result.output
    assert "resume with: bench run --resume" in result.stderr
    statuses = [r["status"] for r in RunStore(out).rows()]
    assert statuses == ["ok"]  # no bogus error row for the interrupted cell
