"""The README's plugin examples run as written: each `# NAME.py` block is written to a file and
the `bench -p NAME.py ...` command under it runs (with few samples, into a temporary folder)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import cli

README = (Path(__file__).parents[1] / "README.md").read_text()
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def examples() -> list[tuple[str, str, list[str]]]:
    """(file name, source, [commands]) for every plugin file in the README."""
    out: list[tuple[str, str, list[str]]] = []
    for lang, body in BLOCK.findall(README):
        first = body.splitlines()[0] if body.strip() else ""
        if lang == "python" and re.fullmatch(r"# \w+\.py", first):
            out.append((first[2:], body, []))
        elif lang == "bash" and out and not out[-1][2]:
            out[-1][2].extend(line for line in body.splitlines() if line.startswith("bench -p"))
    return out


EXAMPLES = examples()


def test_every_kind_has_an_example():
    assert len(EXAMPLES) >= 5 and all(commands for _, _, commands in EXAMPLES)
    hooks = {m for _, source, _ in EXAMPLES for m in re.findall(r"def (register_\w+)", source)}
    assert {"register_samplers", "register_schedules", "register_predictors"} <= hooks
    assert {"register_metrics", "register_score_models"} <= hooks


@pytest.mark.parametrize("name,source,commands", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_readme_example_runs(tmp_path, monkeypatch, name, source, commands):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(source)
    for i, command in enumerate(commands):
        args = shlex.split(command)[1:]
        args += ["--samples", "64", "--batch-size", "64", "--no-progress", "--out", f"run{i}"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, f"{command}\n{result.output}"
        assert "error" not in set(_statuses(tmp_path / f"run{i}")), result.output


def _statuses(run: Path) -> list[str]:
    import pandas as pd

    return list(pd.read_csv(run / "results.csv")["status"])
