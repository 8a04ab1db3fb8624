"""Start-up: a command imports what it uses when it uses it (timings: docs/performance.md).

Each check runs the command in a fresh interpreter and reads which heavy packages it imported
(``sys.modules`` at exit), so the test is about imports, never about seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.cli import cli

HEAVY = ("torch", "scipy", "pandas", "matplotlib", "sklearn")

PROBE = """
import json, sys
from bench.cli import cli
try:
    cli(sys.argv[2:], prog_name="bench")
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": [m for m in %r if m in sys.modules]}, f)
""" % (HEAVY,)


def imported(tmp_path, *args: str) -> list[str]:
    """The heavy packages ``bench ARGS`` has imported when it exits (it must exit 0)."""
    record = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(record), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(record.read_text())
    assert result["code"] in (0, None), done.stdout + done.stderr
    return result["modules"]


@pytest.mark.parametrize("command", ["", *cli.commands])
def test_help_imports_no_heavy_package(tmp_path, command):
    """``bench --help`` and every ``bench COMMAND --help`` (lists, not imports, the commands)."""
    assert imported(tmp_path, *filter(None, [command, "--help"])) == []


def test_an_oracle_run_does_not_import_scipy(tmp_path):
    """scipy (its ODE solvers) is for the ``nll`` metric and the ``ode`` sampler only."""
    run = ["run", "--model", "gauss1d", "--sdes", "ve", "--predictors", "euler"]
    run += ["--correctors", "none", "--steps", "2", "--samples", "8", "--batch-size", "8"]
    run += ["--seeds", "0", "--no-progress", "--out", str(tmp_path / "run")]
    modules = imported(tmp_path, *run)
    assert "torch" in modules  # the probe sees the run's imports
    assert "scipy" not in modules
    assert (tmp_path / "run" / "results.csv").exists()


def test_the_ode_sampler_still_finds_scipy(tmp_path):
    """The import moved into the function that needs it: a run of ``ode`` imports it."""
    run = ["run", "--model", "gauss1d", "--sdes", "ve", "--samplers", "ode", "--metrics", "swd"]
    run += ["--samples", "8", "--batch-size", "8", "--seeds", "0", "--no-progress"]
    run += ["--out", str(tmp_path / "run")]
    assert "scipy" in imported(tmp_path, *run)
