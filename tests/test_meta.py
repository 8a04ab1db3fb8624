"""Meta-tests: every hook is documented with its signature and exercised by a test_hook_<name>."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

from bench.plugin import hookspecs
from bench.plugin import loading as plugins

ROOT = Path(__file__).parents[1]
HOOKS = [
    name
    for name, obj in vars(hookspecs).items()
    if name.startswith("register_") and inspect.isfunction(obj)
]

EXAMPLES = {
    "register_sdes": ("sdes", "bench_plugins.sdes", "VPSDE"),
    "register_schedules": ("schedules", "bench_plugins.schedules", "EDM"),
    "register_samplers": ("samplers", "bench.core.pc", "PCSampler"),
    "register_predictors": ("predictors", "bench_plugins.predictors", "ReverseDiffusion"),
    "register_correctors": ("correctors", "bench_plugins.correctors", "Langevin"),
    "register_score_models": (
        "score-models",
        "bench_plugins.score_models.gmm",
        "GaussianMixtureModel",
    ),
    "register_metrics": ("metrics", "bench_plugins.metrics", "SlicedWasserstein"),
    "register_datasets": ("datasets", "bench_plugins.datasets", "Digits"),
}


def test_every_hook_is_documented_with_its_signature():
    readme = (ROOT / "README.md").read_text()
    for name in HOOKS:
        args = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({args})`" in readme, name


def test_every_hook_has_a_test():
    assert set(HOOKS) == set(EXAMPLES)
    for name in HOOKS:
        assert callable(globals().get(f"test_hook_{name}")), name


def _check_hook(hook, tmp_path):
    kind, module, base = EXAMPLES[hook]
    path = tmp_path / f"plugin_{hook}.py"
    path.write_text(
        textwrap.dedent(f'''
        import bench
        from {module} import {base}

        class Extra({base}):
            """An extra component registered through {hook}."""
            name = "extra_{kind.replace("-", "_")}"
            aliases = ()

        @bench.hookimpl
        def {hook}(register):
            register(Extra)
    ''')
    )
    report = plugins.load(modules=[str(path)], allow=[])
    entry = report.registry.get(kind, f"extra_{kind.replace('-', '_')}")
    assert entry.provider.source == "file" and entry.summary.startswith("An extra component")


def test_hook_register_sdes(tmp_path):
    _check_hook("register_sdes", tmp_path)


def test_hook_register_schedules(tmp_path):
    _check_hook("register_schedules", tmp_path)


def test_hook_register_samplers(tmp_path):
    _check_hook("register_samplers", tmp_path)


def test_hook_register_predictors(tmp_path):
    _check_hook("register_predictors", tmp_path)


def test_hook_register_correctors(tmp_path):
    _check_hook("register_correctors", tmp_path)


def test_hook_register_score_models(tmp_path):
    _check_hook("register_score_models", tmp_path)


def test_hook_register_metrics(tmp_path):
    _check_hook("register_metrics", tmp_path)


def test_hook_register_datasets(tmp_path):
    _check_hook("register_datasets", tmp_path)


def test_readme_quick_start_has_exactly_two_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert commands == ["pip install -e . && bench run", 'pip install -e ".[test]" && pytest']
    assert 'pip install -e ".[test]" && pytest' in (ROOT / ".ci" / "run").read_text()


def test_every_package_of_the_suite_is_listed_for_installation():
    """pyproject's explicit package list names every folder with an ``__init__.py`` (a missing
    one works in an editable install and is absent from a wheel)."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(("bench_plugins" if p.parts[0] == "plugins" else p.parts[0], *p.parts[1:]))
        for folder in ("bench", "plugins")
        for p in (i.parent.relative_to(ROOT) for i in (ROOT / folder).rglob("__init__.py"))
    }
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"
