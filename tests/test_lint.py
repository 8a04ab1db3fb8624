"""The code base stays ruff-clean and ruff-formatted (100 columns, pyproject's rule set)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PATHS = ["bench", "plugins", "tests", "docs"]


TYPED = ["bench/__init__.py", "bench/plugin", "bench/core"]
"""The plugin boundary: the hookspecs and kinds, the registry and loader, and the base classes
plugins derive from (SDE, schedule, sampler, predictor, corrector, views, model, metric)."""


@pytest.mark.skipif(
    shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[test]')"
)
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff(command):
    result = subprocess.run(["ruff", *command, *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("mypy") is None, reason="mypy is not installed (pip install -e '.[test]')"
)
def test_the_plugin_boundary_type_checks():
    """mypy runs clean on the boundary modules (settings in pyproject's [tool.mypy])."""
    result = subprocess.run(["mypy", *TYPED], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


MAX_MODULE_LINES = 500


def test_no_module_of_the_suite_is_over_500_lines():
    """Small modules whose names say what they hold: split a module before it grows past 500."""
    long = {
        str(p.relative_to(ROOT)): n
        for folder in ("bench", "plugins")
        for p in sorted((ROOT / folder).rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"
