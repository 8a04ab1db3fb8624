"""Plugin loading: entry points, -p modules and files, --plugins-dir, failures, duplicates."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import BenchError
from bench.plugin import loading as plugins

PREDICTOR_PLUGIN = '''
import bench
from bench_plugins.predictors import ReverseDiffusion


class {cls}(ReverseDiffusion):
    """A third-party predictor (reverse diffusion under another name)."""

    name = "{name}"
    aliases = ()


@bench.hookimpl
def register_predictors(register):
    register({cls})
'''


def write_module(folder: Path, module: str, source: str) -> Path:
    path = folder / f"{module}.py"
    path.write_text(textwrap.dedent(source))
    return path


class FakeDist:
    def __init__(self, name: str, version: str = "1.0") -> None:
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    def __init__(self, name: str, module: str, dist: str) -> None:
        self.name, self.module, self.dist = name, module, FakeDist(dist)

    def load(self):
        return importlib.import_module(self.module)


@pytest.fixture
def third_party(monkeypatch, tmp_path):
    """Install fake third-party entry points next to the real built-in ones."""
    monkeypatch.syspath_prepend(str(tmp_path))
    real = plugins.md.entry_points
    fakes: list[FakeEntryPoint] = []

    def entry_points(**params):
        if params.get("group") != "sde_bench":
            return real(**params)
        return list(real(**params)) + fakes

    monkeypatch.setattr(plugins.md, "entry_points", entry_points)
    monkeypatch.delenv("BENCH_LOAD_PLUGINS")

    def add(name: str, source: str, dist: str = "sde-bench-extra") -> None:
        module = f"fake_{name.replace('-', '_')}"
        write_module(tmp_path, module, source)
        sys.modules.pop(module, None)
        fakes.append(FakeEntryPoint(name, module, dist))

    return add


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_third_party_predictor_is_usable_by_bench_run(third_party, tmp_path):
    third_party("mine", PREDICTOR_PLUGIN.format(cls="Mine", name="mine"))
    result = invoke(
        "run",
        "--model",
        "gauss1d",
        "--sdes",
        "vp",
        "--predictors",
        "mine",
        "--correctors",
        "none",
        "--steps",
        "30",
        "--samples",
        "20",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "run" / "results.csv").read_text()
    assert "mine" in rows and "fake_mine" not in rows.split("\n")[0]
    assert "sde-bench-extra" in rows  # provenance recorded


def test_broken_plugin_is_reported_and_skipped(third_party):
    third_party("broken", "raise ImportError('missing dependency foo')")
    third_party("fine", PREDICTOR_PLUGIN.format(cls="Fine", name="fine"))
    result = invoke("list", "predictors")
    assert result.exit_code == 0
    assert "fine" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "broken" in line]
    assert len(warnings) == 1 and "missing dependency foo" in warnings[0]
    listing = json.loads(invoke("plugins", "--json").stdout)
    status = {p["name"]: (p["status"], p["error"]) for p in listing}
    assert status["broken"][0] == "failed" and "foo" in status["broken"][1]
    assert status["fine"] == ("ok", None)
    assert invoke("plugins", "--check").exit_code == 1


def test_strict_plugins_makes_a_failure_fatal(third_party):
    third_party("broken", "raise ImportError('missing dependency foo')")
    result = invoke("--strict-plugins", "list", "predictors")
    assert result.exit_code == 2
    assert 'plugin "broken" failed to load' in result.stderr and "foo" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


def test_duplicate_names_are_refused_naming_both_providers(third_party, tmp_path):
    third_party("dup", PREDICTOR_PLUGIN.format(cls="Dup", name="reverse_diffusion"))
    result = invoke("list", "predictors")
    assert result.exit_code == 2  # a duplicate is an error, even from an installed package
    assert "duplicate predictor name 'reverse_diffusion'" in result.stderr
    assert "builtin-predictors" in result.stderr and "dup (sde-bench-extra 1.0)" in result.stderr


def test_duplicate_names_from_local_files_are_refused(tmp_path):
    local = write_module(tmp_path, "twin", PREDICTOR_PLUGIN.format(cls="Twin", name="rd"))
    result = invoke("-p", str(local), "list", "predictors")
    assert result.exit_code == 2
    assert "duplicate predictor name 'rd'" in result.stderr and "file:twin.py" in result.stderr


def test_allowlist_filters_distributions(third_party, monkeypatch):
    third_party("mine", PREDICTOR_PLUGIN.format(cls="Mine", name="mine"))
    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "")
    assert "mine" not in invoke("list", "predictors").stdout
    monkeypatch.setenv("BENCH_LOAD_PLUGINS", "sde-bench-extra")
    assert "mine" in invoke("list", "predictors").stdout


def test_misspelt_hook_is_caught(third_party):
    third_party(
        "typo",
        """
        import bench

        @bench.hookimpl
        def register_predictor(register):
            pass
    """,
    )
    listing = json.loads(invoke("plugins", "--json").stdout)
    (typo,) = [p for p in listing if p["name"] == "typo"]
    assert typo["status"] == "failed" and "register_predictor" in typo["error"]


def test_half_registered_plugin_is_rolled_back(third_party):
    third_party(
        "half",
        PREDICTOR_PLUGIN.format(cls="Half", name="half")
        + """

@bench.hookimpl
def register_correctors(register):
    raise RuntimeError("boom")
""",
    )
    result = invoke("list", "predictors", "--json")
    assert "half" not in [p["name"] for p in json.loads(result.stdout)]
    assert "boom" in result.stderr


def test_plugins_dir_and_env_vars(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_module(folder, "local_pred", PREDICTOR_PLUGIN.format(cls="Local", name="local"))
    write_module(folder, "_private", "raise SystemExit('must not be loaded')")
    assert "local" in invoke("--plugins-dir", str(folder), "list", "predictors").stdout
    monkeypatch.setenv("BENCH_PLUGINS_DIR", str(folder))
    listing = json.loads(invoke("plugins", "--json").stdout)
    (local,) = [p for p in listing if p["name"] == "file:local_pred.py"]
    assert local["source"] == "file" and len(local["sha256"]) == 64


def test_dash_p_module_and_file(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "user_mod", PREDICTOR_PLUGIN.format(cls="Mod", name="viamodule"))
    path = write_module(tmp_path, "user_file", PREDICTOR_PLUGIN.format(cls="F", name="viafile"))
    out = invoke("-p", "user_mod", "-p", str(path), "list", "predictors").stdout
    assert "viamodule" in out and "viafile" in out
    monkeypatch.setenv("BENCH_PLUGINS", "user_mod")
    assert "viamodule" in invoke("list", "predictors").stdout


def test_explicit_plugin_that_fails_is_fatal(tmp_path):
    path = write_module(tmp_path, "bad", "import does_not_exist_anywhere")
    result = invoke("-p", str(path), "list", "sdes")
    assert result.exit_code == 2 and "does_not_exist_anywhere" in result.stderr
    result = invoke("-p", "no.such.module", "list", "sdes")
    assert result.exit_code == 2 and "no.such.module" in result.stderr


def test_invalid_component_name_is_refused(tmp_path):
    path = write_module(tmp_path, "badname", PREDICTOR_PLUGIN.format(cls="B", name="Bad Name"))
    result = invoke("-p", str(path), "list", "predictors")
    assert result.exit_code == 2 and "invalid predictor name" in result.stderr


def test_builtin_entry_points_match_pyproject():
    """Stale metadata guard: run `pip install -e .` again if this fails."""
    import importlib.metadata as md

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["sde_bench"]
    installed = {
        ep.name: ep.value
        for ep in md.distribution("sde-bench").entry_points.select(group="sde_bench")
    }
    assert installed == declared, "entry points are stale: run `pip install -e .` again"


def test_builtins_load_as_bench_plugins_not_plugins():
    report = plugins.load(allow=[])
    assert {p.source for p in report.plugins} == {"builtin"}
    for entry in report.registry.entries["predictors"].values():
        assert entry.obj.__module__.startswith("bench_plugins.")


def test_every_component_has_a_valid_name_and_summary(registry):
    from bench.plugin.kinds import KEYS as KINDS
    from bench.plugin.registry import NAME_RE

    for kind in KINDS:
        for name, entry in registry.entries[kind].items():
            assert NAME_RE.match(name) and entry.summary, (kind, name)


def test_help_does_not_import_torch():
    code = "import sys; from bench.cli import cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_directly_raises_for_explicit_failures(tmp_path):
    with pytest.raises(BenchError, match="no such file"):
        plugins.load(modules=[str(tmp_path / "nope.py")], allow=[])
    with pytest.raises(BenchError, match="does not exist"):
        plugins.load(dirs=[tmp_path / "nowhere"], allow=[])
