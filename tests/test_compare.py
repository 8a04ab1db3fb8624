"""`bench compare`: matching, the noise-aware regression rule, tolerances, exit codes."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import BenchError
from bench.results.compare import change_and_noise, compare, verdict_of
from bench.results.compare_settings import (
    Settings,
    Tolerance,
    find_pyproject,
    read_pyproject,
    settings_from,
)
from bench.results.frame import to_frame
from tests.rows import row, seeds, write_run

T_975_2 = 4.302652729911275


def frames(old_rows, new_rows):
    return to_frame(old_rows), to_frame(new_rows)


def run(old_rows, new_rows, **settings):
    return compare(*frames(old_rows, new_rows), Settings(**settings))


def verdicts(result, metric="swd"):
    table = result.table
    return list(table.loc[table["metric"] == metric, "verdict"])


BASE = {"swd": [0.10, 0.11, 0.12], "coverage_min": [-1.0, -1.1, -1.2]}


def with_swd(values):
    return {**BASE, "swd": values}


# -- tolerances and the rule ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, relative, absolute",
    [
        ("5%", 0.05, 0.0),
        ("0.01", 0.0, 0.01),
        (0.5, 0.0, 0.5),
        ("2% + 0.001", 0.02, 0.001),
    ],
)
def test_tolerance_parse(text, relative, absolute):
    tol = Tolerance.parse(text)
    assert tol.relative == pytest.approx(relative) and tol.absolute == pytest.approx(absolute)


def test_tolerance_allowed_and_errors():
    assert Tolerance.parse("5%+0.01").allowed(-2.0) == pytest.approx(0.11)
    assert str(Tolerance.parse("5%+0.01")) == "5%+0.01" and str(Tolerance()) == "0"
    for bad in ("five", "-1", "5%%x"):
        with pytest.raises(BenchError):
            Tolerance.parse(bad)


@pytest.mark.parametrize(
    "change, direction, allowed, noise, expected",
    [
        (0.0, "lower", 0.0, 0.0, "same"),
        (0.2, "lower", 0.1, 0.05, "regression"),  # beyond tolerance and noise
        (0.2, "lower", 0.1, 0.3, "within noise"),  # beyond tolerance, inside the noise
        (0.2, "lower", 0.3, 0.05, "within tolerance"),
        (-0.2, "higher", 0.1, 0.05, "regression"),  # higher is better: a drop is worse
        (0.2, "higher", 0.1, 0.05, "improved"),
        (-0.2, "lower", 0.1, math.nan, "improved"),  # unknown noise counts as 0
    ],
)
def test_verdict_rule(change, direction, allowed, noise, expected):
    assert verdict_of(change, direction, allowed, noise) == expected


def test_noise_paired_over_common_seeds():
    old = pd.Series([1.0, 2.0, 3.0], index=[0, 1, 2])
    new = pd.Series([1.5, 2.4, 3.8], index=[0, 1, 2])
    o, n, noise, kind = change_and_noise(old, new, 0.95)
    assert (o, n, kind) == (2.0, pytest.approx(2.5666667), "paired n=3")
    assert noise == pytest.approx(T_975_2 * 0.2081666 / math.sqrt(3), rel=1e-6)


def test_noise_welch_without_common_seeds_and_none_with_one_seed():
    from scipy import stats

    old = pd.Series([1.0, 2.0, 3.0], index=[0, 1, 2])
    new = pd.Series([2.0, 4.0, 6.0], index=[3, 4, 5])
    _, _, noise, kind = change_and_noise(old, new, 0.95)
    assert kind == "welch"
    assert noise == pytest.approx(stats.t.ppf(0.975, 50 / 17) * math.sqrt(5 / 3))
    assert change_and_noise(pd.Series([1.0]), pd.Series([2.0]), 0.95)[2:] == (0.0, "none")


# -- matching and verdicts ------------------------------------------------------------------------
def test_identical_runs_pass():
    rows = seeds(BASE) + seeds(BASE, corrector="langevin")
    result = run(rows, rows)
    assert not result.failed and result.matched == 2
    assert set(result.table["verdict"]) == {"same"}
    assert result.metrics == ["swd", "coverage_min", "nfe"]


def test_regression_beyond_tolerance_and_noise_fails():
    result = run(seeds(BASE), seeds(with_swd([0.20, 0.21, 0.22])), default=Tolerance.parse("5%"))
    assert verdicts(result) == ["regression"] and result.failed
    r = result.regressions.iloc[0]
    assert r["change"] == pytest.approx(0.1) and r["noise"] == pytest.approx(0, abs=1e-12)
    assert r["allowed"] == pytest.approx(0.0055)
    assert verdicts(result, "coverage_min") == ["same"]


def test_values_measured_differently_are_not_comparable():
    """Another feature extractor (or reference set) makes equal configs incomparable: fail."""
    old = seeds(BASE, swd_extractor="digits-classifier@4fe071e4", swd_ref="digits:train")
    new = seeds(BASE, swd_extractor="digits-classifier@00000000", swd_ref="digits:train")
    result = run(old, new)
    assert verdicts(result) == ["not comparable"] and result.failed
    reason = result.regressions.iloc[0]["reason"]
    assert reason == "swd_extractor: digits-classifier@4fe071e4 → digits-classifier@00000000"
    assert verdicts(run(old, old)) == ["same"]


def test_change_inside_the_noise_passes_even_without_tolerance():
    result = run(seeds(BASE), seeds(with_swd([0.10, 0.20, 0.12])))
    assert verdicts(result) == ["within noise"] and not result.failed
    assert result.table.iloc[0]["noise"] == pytest.approx(
        T_975_2 * 0.0519615 / math.sqrt(3), rel=1e-5
    )


def test_change_beyond_noise_but_within_tolerance_passes():
    current = seeds(with_swd([0.105, 0.115, 0.125]))  # +0.005 on every seed = +4.5 %
    assert verdicts(run(seeds(BASE), current, default=Tolerance.parse("5%"))) == [
        "within tolerance"
    ]
    assert verdicts(run(seeds(BASE), current, default=Tolerance.parse("0.01"))) == [
        "within tolerance"
    ]
    failing = run(seeds(BASE), current, default=Tolerance.parse("2%"))
    assert verdicts(failing) == ["regression"] and failing.failed


def test_direction_higher_is_better():
    worse = run(seeds(BASE), seeds({**BASE, "coverage_min": [-2.0, -2.1, -2.2]}))
    assert verdicts(worse, "coverage_min") == ["regression"]
    better = run(seeds(BASE), seeds({**BASE, "coverage_min": [-0.5, -0.6, -0.7]}))
    assert verdicts(better, "coverage_min") == ["improved"] and not better.failed


def test_missing_and_new_groups_are_listed():
    old = seeds(BASE) + seeds(BASE, corrector="langevin")
    new = seeds(BASE) + seeds(BASE, steps=20)
    result = run(old, new)
    assert list(result.missing["label"]) == ["euler_maruyama+langevin"]
    assert list(result.added["steps"]) == [20]
    assert result.failed
    assert not run(old, new, allow_missing=True).failed


def test_status_change_to_non_ok_fails_and_unsupported_on_both_sides_is_fine():
    unsupported = [
        row(seed=s, predictor="ancestral_sampling", status="unsupported") for s in range(3)
    ]
    old = seeds(BASE) + unsupported
    new = seeds(BASE)[:2] + [row(seed=2, status="diverged")] + unsupported
    result = run(old, new)
    assert result.failed
    s = result.status.iloc[0]
    assert (s["old"], s["new"], s["failed"]) == ("ok", "diverged 1/3", True)
    assert result.matched == 2 and len(result.status) == 1


def test_metric_that_disappears_fails():
    new = [{k: v for k, v in r.items() if k != "swd"} for r in seeds(BASE)]
    result = run(seeds(BASE), new)
    assert verdicts(result) == ["missing"] and result.failed


def test_renamed_sampler_is_matched():
    new = seeds(BASE, predictor="my_rd")
    old = seeds(BASE, predictor="reverse_diffusion")
    assert run(old, new).failed  # nothing matches: the baseline cell is missing
    result = run(old, new, renames={"predictor": {"my_rd": "reverse_diffusion"}})
    assert not result.failed and result.matched == 1


def test_requested_metric_must_exist():
    with pytest.raises(BenchError, match="no column 'fid'"):
        run(seeds(BASE), seeds(BASE), metrics=["fid"])


# -- settings from pyproject and the command line -------------------------------------------------
PYPROJECT = """
[project]
name = "x"

[tool.sde-bench.compare]
metrics = ["swd"]
max-regression = { default = "5%", swd = "0.5" }
confidence = 0.9
"""


def test_pyproject_table_and_precedence(tmp_path):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "sub").mkdir()
    path = find_pyproject(tmp_path / "sub")
    assert path == tmp_path / "pyproject.toml"
    table = read_pyproject(path)
    s = settings_from(table)
    assert s.metrics == ["swd"] and s.confidence == 0.9
    assert s.tolerance("swd") == Tolerance(0, 0.5) and s.tolerance("coverage_min") == Tolerance(
        0.05
    )
    s = settings_from(table, max_regression=["swd=1%"], metrics=["swd", "coverage_min"])
    assert s.tolerance("swd") == Tolerance(0.01) and s.metrics == ["swd", "coverage_min"]
    s = settings_from(table, max_regression=["10%"])  # a bare CLI value replaces the file's
    assert s.tolerance("swd") == Tolerance(0.10) and s.tolerance("coverage_min") == Tolerance(0.10)


def test_pyproject_unknown_key_is_an_error():
    with pytest.raises(BenchError, match="unknown key"):
        settings_from({"max-regresion": "5%"})


def test_project_pyproject_gates_the_baseline():
    from pathlib import Path

    table = read_pyproject(Path(__file__).parents[1] / "pyproject.toml")
    s = settings_from(table)
    assert s.tolerance("nfe") == Tolerance() and s.tolerance("swd") == Tolerance(0.02, 0.001)


# -- the command ----------------------------------------------------------------------------------
@pytest.fixture
def runs(tmp_path):
    def make(name, rows):
        return str(write_run(tmp_path / name, rows))

    return make


def invoke(*args):
    return CliRunner().invoke(cli, ["compare", *args, "--no-config"])


def test_command_exit_codes_and_markdown(runs, tmp_path):
    base = runs("base", seeds(BASE))
    same = runs("same", seeds(BASE))
    worse = runs("worse", seeds(with_swd([0.2, 0.21, 0.22])))
    noisy = runs("noisy", seeds(with_swd([0.10, 0.20, 0.12])))
    ok = invoke(base, same)
    assert ok.exit_code == 0 and ok.output.splitlines()[3].startswith("PASS")
    assert invoke(base, noisy).exit_code == 0
    summary = tmp_path / "summary.md"
    bad = invoke(
        base,
        worse,
        "--metric",
        "swd",
        "--max-regression",
        "5%",
        "--format",
        "markdown",
        "--markdown",
        str(summary),
        "--csv",
        str(tmp_path / "c.csv"),
    )
    assert bad.exit_code == 1
    assert "**FAIL**" in bad.output and "## regressions" in bad.output
    assert "❌ regression" in bad.output and "| euler_maruyama+none | swd↓ |" in bad.output
    assert "Every compared cell has model=ring8, sde=vp, steps=10" in bad.output  # not per row
    assert summary.read_text().startswith("# sde-bench compare")
    assert pd.read_csv(tmp_path / "c.csv")["verdict"].tolist() == ["regression"]
    assert invoke(base, worse, "--max-regression", "swd=0.2").exit_code == 0


def test_command_lists_missing_cells(runs):
    base = runs("base", seeds(BASE) + seeds(BASE, corrector="langevin"))
    cur = runs("cur", seeds(BASE) + seeds(BASE, steps=20))
    result = invoke(base, cur)
    assert result.exit_code == 1
    assert "in the baseline only: missing from the current run" in result.output
    assert "in the current run only" in result.output
    assert invoke(base, cur, "--allow-missing").exit_code == 0


def test_nothing_matched_lists_the_values_on_one_side_only(runs):
    """The README's old mistake: a run compared with a baseline of another grid."""
    base = seeds(BASE, steps=25) + seeds(BASE, steps=50) + seeds(BASE, sde="ve", steps=25)
    cur = [*seeds(BASE, steps=10, samples=4000), *seeds(BASE, steps=100, samples=4000)]
    result = run(base, cur)
    assert result.matched == 0
    assert result.differences == {
        "sde": (["ve"], []),
        "steps": (["25", "50"], ["10", "100"]),  # numeric order, not text order
        "samples": (["100"], ["4000"]),
    }
    out = invoke(runs("base", base), runs("cur", cur))
    assert out.exit_code == 1  # as before: baseline cells are missing
    lines = out.output.splitlines()
    start = lines.index("nothing matched: the runs differ in")
    table = lines[lines.index("dimension  baseline only  current only", start) :][:4]
    assert [line.split() for line in table[1:]] == [
        ["sde", "ve", "-"],
        ["steps", "25", "|", "50", "10", "|", "100"],
        ["samples", "100", "4000"],
    ]
    allowed = invoke(runs("base2", base), runs("cur2", cur), "--allow-missing")
    assert allowed.exit_code == 0 and "nothing matched" in allowed.output


def test_nothing_matched_with_the_same_values_in_other_combinations(runs):
    base = seeds(BASE, steps=25) + seeds(BASE, sde="ve", steps=50)
    cur = seeds(BASE, steps=50) + seeds(BASE, sde="ve", steps=25)
    assert run(base, cur).differences == {}
    out = invoke(runs("base", base), runs("cur", cur))
    assert out.exit_code == 1 and "only their combinations differ" in " ".join(out.output.split())


def test_a_partial_match_is_not_explained_as_nothing_matched(runs):
    base = seeds(BASE, steps=25) + seeds(BASE, steps=50)
    result = run(base, seeds(BASE, steps=25))
    assert result.matched == 1 and result.differences == {"steps": (["50"], [])}
    out = invoke(runs("base", base), runs("cur", seeds(BASE, steps=25)))
    assert "nothing matched" not in out.output
    unset = run(seeds(BASE, corrector="langevin"), seeds(BASE))  # snr None vs 0.16
    assert unset.differences["snr"] == (["0.16"], ["-"])
    pc, p = runs("pc", seeds(BASE, corrector="langevin")), runs("p", seeds(BASE))
    markdown = invoke(pc, p, "--format", "markdown")
    assert "| snr | 0.16 | (empty) |" in markdown.output


def test_command_reads_pyproject(runs, tmp_path, monkeypatch):
    base = runs("base", seeds(BASE))
    cur = runs("cur", seeds(with_swd([0.13, 0.14, 0.15])))  # +0.03: within swd = 0.5
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, ["compare", base, cur]).exit_code == 0
    assert invoke(base, cur).exit_code == 1  # --no-config: tolerance 0
    config = ["compare", base, cur, "--config", str(tmp_path / "pyproject.toml")]
    assert CliRunner().invoke(cli, config).exit_code == 0


def test_command_usage_errors_exit_2(runs):
    base = runs("base", seeds(BASE))
    assert invoke(base, base, "--metric", "fid").exit_code == 2
    assert invoke(base, base, "--max-regression", "lots").exit_code == 2
    assert invoke(base, base, "--rename", "nonsense").exit_code == 2


# -- readable output: the columns that tell cells apart, the rest in the CSV ----------------------
ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("extra", [[], ["--all"]], ids=["changed", "all"])
def test_compare_output_on_the_committed_baseline_fits_a_terminal(extra, tmp_path):
    """Every line of `bench compare results/baseline results/baseline` is at most 160 columns
    (the option strings of every component used to make each row about 390 wide); the CSV
    keeps every identifying column in full."""
    baseline = str(ROOT / "results" / "baseline")
    out = invoke(baseline, baseline, *extra, "--csv", str(tmp_path / "all.csv"))
    assert out.exit_code == 0, out.output
    widest = max(out.output.splitlines(), key=len)
    assert len(widest) <= 160, widest
    csv = pd.read_csv(tmp_path / "all.csv")
    assert {"metric_options", "sde_options", "samples", "predictor", "label"} <= set(csv.columns)
    assert csv["metric_options"].str.contains("projections=128").any()
    if extra:
        header = next(line for line in out.output.splitlines() if "verdict" in line)
        assert header.split()[:4] == ["model", "sde", "label", "steps"]
        assert "metric_options" not in out.output and "projections=128" not in out.output


def test_display_columns_are_the_ones_that_tell_cells_apart():
    from bench.results.compare import display_columns
    from bench.results.frame import group_columns, to_frame
    from bench.results.stats import with_groups

    def shown(rows):
        frame = to_frame(rows)
        keys = group_columns(frame)
        return display_columns(with_groups(frame, keys).drop_duplicates("_group"), keys)

    one = [row(), row(predictor="reverse_diffusion")]
    assert shown(one) == ["label"]  # model, SDE and steps are the same everywhere
    steps = one + [row(steps=20)]
    assert shown(steps) == ["label", "steps"]
    samples = steps + [row(samples=500)]
    assert shown(samples) == ["label", "steps", "samples"]  # needed: two cells look alike
    per_model = [
        row(model="ring8", metric_options="swd: projections=128"),
        row(model="gmm64", metric_options="swd: projections=64"),
    ]
    assert shown(per_model) == ["model", "label"]  # the options follow the model: not shown
    same_model = [
        row(metric_options="swd: projections=128"),
        row(metric_options="swd: projections=64"),
    ]
    assert shown(same_model) == ["label", "metric_options"]  # the only difference: shown


def test_markdown_lists_the_settings_the_table_leaves_out(runs):
    base = runs("base", seeds(BASE, metric_options="swd: projections=128"))
    out = invoke(base, base, "--format", "markdown", "--all")
    assert out.exit_code == 0
    assert "settings of the compared cells" not in out.output  # constant: in the sentence
    assert "metric_options=swd: projections=128" in out.output
    mixed = runs(
        "mixed",
        seeds(BASE, metric_options="swd: projections=128")
        + seeds(BASE, model="gmm64", metric_options="swd: projections=64"),
    )
    out = invoke(mixed, mixed, "--format", "markdown", "--all")
    assert "<details><summary>settings of the compared cells (2 distinct" in out.output
    assert "| gmm64 | swd: projections=64 |" in out.output
