"""A damaged durable log: a line in the middle of rows.jsonl that cannot be read is skipped (it
is in no table), its cell runs again on --resume, and the user is told which line it was."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.results.frame import load_frame
from bench.run.store import Damage, RunStore

SMALL = ["--model", "gauss1d", "--sdes", "vp", "--predictors", "euler", "--correctors", "none"]
SMALL += ["--steps", "10,20,30", "--samples", "16", "--no-progress"]


def store_with(tmp_path, lines):
    """A run folder whose rows.jsonl holds ``lines`` (each written with its newline)."""
    store = RunStore(tmp_path, warn=None)
    store.prepare()
    store.rows_path.write_text("".join(line + "\n" for line in lines))
    return store


def good(cell_id, **extra):
    return json.dumps({"cell_id": cell_id, "status": "ok", "swd": 0.1, **extra})


def test_a_corrupt_middle_line_is_skipped_and_reported_once(tmp_path):
    lines = [good("a"), '{"cell_id": "b", "status": "ok", "swd": 0.1 GARBAGE', good("c")]
    warnings = []
    store = store_with(tmp_path, lines)
    store.warn = warnings.append
    assert [r["cell_id"] for r in store.rows()] == ["a", "c"]
    assert store.damaged == [Damage(2, store.damaged[0].error, "b", recovered=False)]
    assert store.damaged[0].error.startswith("not JSON")
    (message,) = warnings
    assert f"{store.rows_path} line 2 is unreadable" in message
    assert "cell b is in no table and runs again on" in message
    assert f"`bench run --resume {tmp_path}`" in message
    store.rows()  # the sweep reads the log after every cell: one warning per line, not per read
    assert len(warnings) == 1


def test_every_kind_of_damage_is_named(tmp_path):
    lines = [
        good("a"),
        "[1, 2, 3]",
        '{"status": "ok"}',
        "\x00\x00\x00 not text",
        "",  # a blank line is harmless: skipped silently
        good("b"),
    ]
    store = store_with(tmp_path, lines)
    assert [r["cell_id"] for r in store.rows()] == ["a", "b"]
    errors = {d.line: d.error for d in store.damaged}
    assert list(errors) == [2, 3, 4]
    assert errors[2] == "a JSON list, not an object" and errors[3] == "no cell_id"
    assert errors[4].startswith("not JSON")
    assert all(d.cell_id is None for d in store.damaged)
    assert "its cell (id unreadable)" in store.damaged[0].message(store.rows_path)


def test_a_rerun_cell_recovers_the_damage(tmp_path):
    """Once the cell has run again (a later line), the damaged line costs nothing: said so."""
    lines = [good("a"), '{"cell_id": "b", "sta', good("b", swd=0.2)]
    store = store_with(tmp_path, lines)
    rows = store.rows()
    assert [r["cell_id"] for r in rows] == ["a", "b"] and rows[1]["swd"] == 0.2
    (damage,) = store.damaged
    assert damage.recovered and "another line holds cell b, so nothing is missing" in (
        damage.message(store.rows_path)
    )


def test_the_damaged_line_stays_out_of_results_csv(tmp_path):
    store = store_with(tmp_path, [good("a"), '{"cell_id": "b", "swd": 9e9 ]', good("c")])
    store.append(json.loads(good("d")))
    assert list(pd.read_csv(store.csv_path)["cell_id"]) == ["a", "c", "d"]


def test_a_torn_last_line_stays_silent(tmp_path):
    warnings = []
    store = RunStore(tmp_path, warn=warnings.append)
    store.prepare()
    store.rows_path.write_text(good("a") + '\n{"cell_id": "b", "sta')
    assert [r["cell_id"] for r in store.rows()] == ["a"]
    assert warnings == [] and store.damaged == []


def test_the_default_warning_goes_to_stderr_once(tmp_path, capsys):
    lines = [good("a"), "{broken", good("c")]
    store_with(tmp_path, lines)
    RunStore(tmp_path).rows()
    RunStore(tmp_path).rows()  # `bench report` may read a folder twice: one warning
    err = capsys.readouterr().err
    assert err.count("line 2 is unreadable") == 1 and err.startswith("warning: ")


def bench(*args):
    """``bench ARGS`` in this process; the once-per-process warnings are reset first, as a new
    process would have them."""
    from click.testing import CliRunner

    from bench.cli import cli
    from bench.run import store

    store._printed.clear()
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_report_warns_and_resume_reruns_the_damaged_cell(tmp_path):
    """End to end: damage the middle row of a finished run; `bench report` names the line and
    leaves the cell out of its table; `bench run --resume` names it too, runs that one cell
    again, and the folder is whole."""
    out = tmp_path / "run"
    assert bench("run", *SMALL, "--out", out).exit_code == 0
    log = out / "rows.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    lost = json.loads(lines[1])["cell_id"]
    lines[1] = lines[1][:40] + "#" + lines[1][41:]  # one damaged byte, inside the JSON
    log.write_text("".join(lines))

    report = bench("report", out, "--format", "csv")
    assert report.exit_code == 0, report.output
    assert f"{log} line 2 is unreadable" in report.stderr and f"cell {lost}" in report.stderr
    summary = pd.read_csv(io.StringIO(report.stdout))
    assert sorted(summary["steps"]) == [10, 30]  # the damaged cell is in no table

    resumed = bench("run", "--resume", out, "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    assert "line 2 is unreadable" in resumed.stderr and "runs again on" in resumed.stderr
    assert "3 cells (2 already done)" in resumed.stderr
    frame = pd.read_csv(out / "results.csv")
    assert sorted(frame["steps"]) == [10, 20, 30]
    assert lost in set(frame["cell_id"])
    again = bench("report", out, "--format", "csv")
    assert "nothing is missing" in again.stderr


def test_a_stale_results_csv_never_stands_in_for_a_damaged_log(tmp_path):
    """Every line damaged: the tables are empty, not filled from the older results.csv."""
    store = RunStore(tmp_path)
    store.prepare()
    store.write_meta({"sde_bench": "0.1.0"})
    store.append(json.loads(good("a", steps=10)))
    store.rows_path.write_text('{"cell_id": "a", "steps": 10 oops\n')
    with pytest.raises(BenchError, match="holds no result rows yet"):
        load_frame(tmp_path)
