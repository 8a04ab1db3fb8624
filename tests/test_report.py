"""`bench report`: seed statistics, pivots, paired differences and rendering, against hand
computations on synthetic rows."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.results.frame import Directions, direction, load_frame, metric_columns, to_frame
from bench.results.report import block_columns, build_report, pivot, render
from bench.results.short_report import short_report
from bench.results.stats import ci_halfwidth, paired_differences, summarize, welch_halfwidth
from bench.results.text import markdown_table
from tests.rows import row, seeds, write_run

T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom
T_975_1 = 12.706204736174696


def one(frame: pd.DataFrame, **where) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for k, v in where.items():
        mask &= frame[k] == v
    assert mask.sum() == 1, where
    return frame[mask].iloc[0]


# -- statistics -----------------------------------------------------------------------------------
def test_ci_halfwidth_matches_hand_computation():
    assert ci_halfwidth([1.0, 2.0, 3.0]) == pytest.approx(T_975_2 * 1.0 / math.sqrt(3))
    assert ci_halfwidth([1.0, 3.0]) == pytest.approx(T_975_1 * math.sqrt(2) / math.sqrt(2))
    assert math.isnan(ci_halfwidth([1.0]))
    assert ci_halfwidth([2.0, 2.0, 2.0]) == 0.0


def test_welch_halfwidth_matches_hand_computation():
    # var(a)/3 = 1/3, var(b)/3 = 4/3; dof = (5/3)² / ((1/3)²/2 + (4/3)²/2) = 50/17
    from scipy import stats

    expected = stats.t.ppf(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert welch_halfwidth([1, 2, 3], [2, 4, 6]) == pytest.approx(expected)
    assert math.isnan(welch_halfwidth([1], [2, 3]))


def test_summarize_mean_and_ci_over_seeds():
    frame = to_frame(seeds({"swd": [1.0, 2.0, 3.0], "coverage_min": [-1.0, -1.0, -1.0]}))
    summary = summarize(frame, ["swd", "coverage_min", "nfe"])
    assert len(summary) == 1
    s = summary.iloc[0]
    assert (s["seeds"], s["n_ok"], s["status"]) == (3, 3, "ok")
    assert s["swd"] == pytest.approx(2.0)
    assert s["swd_ci"] == pytest.approx(T_975_2 / math.sqrt(3))
    assert s["coverage_min_ci"] == 0.0
    assert s["nfe"] == 10


def test_summarize_ignores_non_ok_seeds_and_says_so():
    rows = seeds({"swd": [1.0, 3.0]}) + [row(seed=2, status="diverged")]
    s = summarize(to_frame(rows), ["swd"]).iloc[0]
    assert (s["seeds"], s["n_ok"], s["status"]) == (3, 2, "diverged 1/3")
    assert s["swd"] == pytest.approx(2.0)
    assert s["swd_ci"] == pytest.approx(T_975_1)
    assert s["reason"] == "why not"


def test_summarize_single_seed_has_no_interval():
    s = summarize(to_frame([row(swd=0.5)]), ["swd"]).iloc[0]
    assert s["swd"] == 0.5 and math.isnan(s["swd_ci"])


def test_groups_match_json_and_csv_rows(tmp_path):
    run = write_run(tmp_path / "run", seeds({"swd": [1.0, 2.0]}) + [row(corrector="langevin")])
    from_json = summarize(load_frame(run), ["swd"])
    (run / "rows.jsonl").unlink()
    from_csv = summarize(load_frame(run), ["swd"])
    assert len(from_json) == len(from_csv) == 2
    assert list(from_json["swd"]) == pytest.approx(list(from_csv["swd"]))


def test_paired_differences_by_seed():
    rows = seeds({"swd": [0.1, 0.2, 0.3], "coverage_min": [-1.2, -1.25, -1.3]}) + seeds(
        {"swd": [0.6, 0.7, 0.9], "coverage_min": [-1.0, -1.0, -1.0]}, predictor="reverse_diffusion"
    )
    paired = paired_differences(
        to_frame(rows), "euler_maruyama+none", ["swd", "coverage_min"], directions=Directions()
    )
    swd = one(paired, metric="swd")
    assert swd["label"] == "reverse_diffusion+none" and swd["pairs"] == 3
    assert swd["diff"] == pytest.approx(0.5333333)
    assert swd["diff_ci"] == pytest.approx(T_975_2 * 0.0577350 / math.sqrt(3), rel=1e-5)
    assert swd["verdict"] == "worse"  # lower is better
    coverage_min = one(paired, metric="coverage_min")
    assert coverage_min["diff"] == pytest.approx(0.25)
    assert coverage_min["diff_ci"] == pytest.approx(T_975_2 * 0.05 / math.sqrt(3))
    assert coverage_min["verdict"] == "better"  # higher is better


def test_paired_differences_need_the_same_seed_and_context():
    rows = [
        row(seed=0, swd=0.1),
        row(seed=1, predictor="reverse_diffusion", swd=0.5),
        row(seed=0, steps=20, predictor="reverse_diffusion", swd=0.5),
    ]
    assert paired_differences(to_frame(rows), "euler_maruyama+none", ["swd"]).empty


def test_paired_identical_values_are_same():
    rows = [row(seed=s, swd=0.1, predictor=p) for s in (0, 1) for p in ("euler_maruyama", "rd")]
    paired = paired_differences(to_frame(rows), "euler_maruyama+none", ["swd"])
    assert list(paired["verdict"]) == ["same"]


# -- columns and directions -----------------------------------------------------------------------
def test_metric_columns_skip_counts_and_text():
    frame = to_frame([row(metrics="swd,coverage,fid", fid=3.0, fid_n=100, fid_extractor="digits")])
    assert metric_columns(frame) == ["swd", "coverage_min", "coverage_tv_ref", "fid"]
    assert metric_columns(frame, include_info=False) == ["swd", "coverage_min", "fid"]


def test_directions_fallbacks_and_registry(registry):
    assert direction("logp") == "info" and direction("logp_gap") == "lower"
    assert direction("coverage_min") == "higher"
    assert direction("swd") == "lower" and direction("something_new") == "lower"
    assert direction("coverage_tv_ref") == "info" and direction("kid_std") == "info"
    assert direction("logp", registry) == "info" and direction("coverage_min", registry) == "higher"

    class Sharpness:
        name, higher_is_better = "sharp", True
        column_directions = {"sharp_blur": "lower"}

    d = Directions((Sharpness,))
    assert d("sharp") == "higher" and d("sharp_extra") == "higher" and d("sharp_blur") == "lower"


def test_sampler_labels_show_swept_snr():
    rows = [row(corrector="langevin", snr=0.1), row(corrector="langevin", snr=0.2), row()]
    assert list(to_frame(rows)["label"]) == [
        "euler_maruyama+langevin@0.1",
        "euler_maruyama+langevin@0.2",
        "euler_maruyama+none",
    ]


# -- tables ---------------------------------------------------------------------------------------
def synthetic_rows():
    rows = []
    for steps in (10, 20):
        rows += seeds({"swd": [1.0, 2.0, 3.0]}, steps=steps)
        rows += seeds({"swd": [0.5, 0.5, 0.5]}, steps=steps, corrector="langevin")
    rows += [
        row(sde="subvp", predictor="ancestral_sampling", status="unsupported", seed=s)
        for s in range(3)
    ]
    return rows


def test_pivot_sampler_by_steps_with_nfe_and_time():
    report = build_report(synthetic_rows())
    block = report.summary[report.summary["sde"] == "vp"]
    table = pivot(block, "swd", report.directions)
    assert list(table.columns) == [
        "sampler",
        "N=10 swd↓",
        "N=10 nfe",
        "N=10 s",
        "N=20 swd↓",
        "N=20 nfe",
        "N=20 s",
    ]
    first = table.iloc[0]
    assert first["sampler"] == "euler_maruyama+none"
    assert first["N=10 swd↓"] == f"2 ± {T_975_2 / math.sqrt(3):.2g}"
    assert first["N=20 nfe"] == "20"
    assert table.iloc[1]["N=10 nfe"] == "20"  # langevin: two score calls per step
    assert table.iloc[1]["N=10 swd↓"] == "0.5 ± 0"


def test_render_text_and_markdown():
    report = build_report(synthetic_rows(), baseline="euler_maruyama+none")
    text = render(report)
    assert "ring8 · vp" in text and "swd (lower is better)" in text
    assert (
        "unsupported in 1 cell (ancestral_sampling+none at N=10; subvp) × 3 seeds: why not" in text
    )
    assert "paired differences vs euler_maruyama+none" in text
    md = render(report, markdown=True)
    assert md.startswith("# sde-bench report")
    assert "| sampler | N=10 swd↓ |" in md and "|:---|---:|" in md
    assert "## ring8 · subvp" in md


def test_markdown_table_escapes_pipes():
    assert markdown_table(pd.DataFrame({"a": ["x|y"]})) == "| a |\n|:---|\n| x\\|y |"


def test_unknown_metric_and_baseline_are_clear_errors():
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="no column 'fid'"):
        build_report(synthetic_rows(), metrics=["fid"])
    with pytest.raises(BenchError, match="unknown baseline sampler 'heun'"):
        build_report(synthetic_rows(), baseline="heun")


def test_short_report_honours_the_registry_direction_of_a_third_party_metric():
    class Sharpness:
        name, higher_is_better = "sharp", True

    class Registry:  # the two things Directions.from_registry reads
        entries = {"metrics": {"sharp": type("Entry", (), {"obj": Sharpness})}}

        def names(self, kind):
            return ["sharp"]

    rows = [row(metrics="sharp", sharp=0.5, seed=s) for s in (0, 1)]
    assert "sharp↓" in short_report(rows)  # no registry: the fallback (lower is better)
    assert "sharp↑" in short_report(rows, registry=Registry())
    assert "sharp↑" in short_report(rows, directions=Directions((Sharpness,)))


def fid_rows(n_by_steps=None):
    """Rows with a feature-extractor metric and its provenance columns, as the runner writes."""
    n_by_steps = n_by_steps or {10: 64, 20: 64}
    return [
        row(
            seed=s,
            steps=steps,
            metrics="fid",
            swd=None,
            fid=10.0 + s,
            fid_extractor="digits-classifier@4fe071e4",
            fid_n=n,
            fid_ref="digits:train",
            fid_ref_n=1437,
        )
        for steps, n in n_by_steps.items()
        for s in (0, 1)
    ]


def test_every_metric_states_its_extractor_and_n():
    measured = "digits-classifier@4fe071e4, n=64 vs digits:train n=1437"
    report = build_report(fid_rows())
    assert f"fid (lower is better): {measured}" in render(report)
    assert f"### fid (lower is better): {measured}" in render(report, markdown=True)
    summary = report.summary
    assert list(summary["fid_extractor"]) == ["digits-classifier@4fe071e4"] * 2
    assert list(summary["fid_n"]) == [64, 64] and list(summary["fid_ref_n"]) == [1437] * 2
    assert list(summary["fid_ref"]) == ["digits:train"] * 2
    assert f"fid↓: {measured}" in short_report(fid_rows())
    # oracle metrics: n only (coverage_min is measured by `coverage`, whose n is coverage_n)
    oracle = build_report(synthetic_rows())
    assert "swd (lower is better): n=100" in render(oracle)
    assert "coverage_min (higher is better): n=100" in render(oracle)
    assert "swd↓, coverage_min↑: n=100" in short_report(synthetic_rows())
    logp = [row(metrics="logp", logp=-1.0, logp_ref=-0.5, logp_n=100, logp_gap=0.5)]
    logp_summary = build_report(logp).summary  # a numeric *_ref is a value, not a reference set
    assert "logp_n" in logp_summary and "logp_ref" not in logp_summary
    assert "logp_gap (lower is better): n=100" in render(build_report(logp))


def test_a_table_whose_cells_differ_in_n_says_so():
    rows = fid_rows({10: 64, 20: 360})
    text = render(build_report(rows, baseline="euler_maruyama+none"))
    assert "fid (lower is better): digits-classifier@4fe071e4, n=64–360 (varies) vs" in text
    assert "n=64–360 (varies)" in short_report(rows)
    mixed = rows[:1] + [dict(rows[1], fid_n=128)]  # one group of seeds, two n
    summary = build_report(mixed).summary
    assert list(summary["fid_n"]) == ["64–128"]


def test_short_report_aggregates_seeds_and_lists_non_ok_cells():
    text = short_report(synthetic_rows())
    assert "mean ± 95% CI over 3 seeds" in text
    table = text.split("\n\n")[0].splitlines()
    assert sum("euler_maruyama+none" in line for line in table) == 2  # per steps, not per seed
    assert "not ok:" in text and "× 3 seeds: why not" in text
    single = short_report([row(swd=0.25)])
    assert "0.25" in single and "±" not in single and "CI" not in single
    assert short_report([]) == "(no results)"


def test_short_report_prints_whole_steps_beside_an_adaptive_cell():
    # an adaptive cell has no steps (NaN), which turns the column into floats
    text = short_report([row(steps=10), row(predictor="ode", steps=None, nfe=74)])
    lines = text.splitlines()
    assert any("euler_maruyama+none" in line and " 10 " in line for line in lines), text
    assert "10.0" not in text


# -- the command ----------------------------------------------------------------------------------
def test_report_command_writes_tables_and_plots(tmp_path):
    run = write_run(tmp_path / "run", synthetic_rows())
    args = ["report", str(run), "--baseline-sampler", "euler_maruyama+none", "--metric", "swd"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "swd (lower is better)" in result.output
    out = run / "report"
    for name in ("report.txt", "report.md", "summary.csv", "paired.csv"):
        assert (out / name).stat().st_size > 0
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "swd_vs_nfe_ring8.png" in pngs and "swd_vs_wall_clock_s_ring8.png" in pngs
    for png in (out / "plots").glob("*.png"):
        assert png.stat().st_size > 1000 and png.with_suffix(".svg").stat().st_size > 1000
    summary = pd.read_csv(out / "summary.csv")
    assert {"sampler", "steps", "swd", "swd_ci", "nfe", "wall_clock_s"} <= set(summary.columns)


def test_report_command_csv_to_stdout_without_files(tmp_path):
    run = write_run(tmp_path / "run", synthetic_rows())
    result = CliRunner().invoke(cli, ["report", str(run), "--format", "csv", "--no-save"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("model,sde,")
    assert not (run / "report").exists()


def test_report_parquet_without_pyarrow_writes_everything_else(tmp_path, monkeypatch):
    def no_pyarrow(self, *args, **kwargs):
        raise ImportError("Unable to find a usable engine; tried using: 'pyarrow'")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", no_pyarrow)
    run = write_run(tmp_path / "run", synthetic_rows())
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["report", str(run), "--parquet", "--out", str(out)])
    assert result.exit_code == 2 and "pip install 'sde-bench[parquet]'" in result.output
    assert "Traceback" not in result.output
    for name in ("report.txt", "report.md", "summary.csv"):
        assert (out / name).is_file()
    assert list((out / "plots").glob("*.png")), "the plots come before the parquet file"
    assert not (out / "summary.parquet").exists()


def test_report_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    run = write_run(tmp_path / "run", synthetic_rows())
    args = ["report", str(run), "--no-plots", "--parquet", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    parquet = pd.read_parquet(tmp_path / "r" / "summary.parquet")
    csv = pd.read_csv(tmp_path / "r" / "summary.csv")
    assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv)
    rows = fid_rows({10: 64, 20: 64})
    rows[1]["fid_n"] = 128  # fid_n: 64 in one group, the text "64–128" in the other
    run = write_run(tmp_path / "mixed", rows)
    args = ["report", str(run), "--no-plots", "--parquet", "--out", str(tmp_path / "m")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert list(pd.read_parquet(tmp_path / "m" / "summary.parquet")["fid_n"]) == ["64–128", "64"]


def test_report_of_a_folder_of_runs(tmp_path):
    write_run(tmp_path / "all" / "a", seeds({"swd": [1.0, 2.0]}))
    write_run(tmp_path / "all" / "b", seeds({"swd": [1.0, 2.0]}, sde="ve"))
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "all"), "--no-save"])
    assert result.exit_code == 0, result.output
    assert "ring8 · vp" in result.output and "ring8 · ve" in result.output


def test_report_rows_from_a_real_run(tmp_path):
    out = tmp_path / "run"
    args = [
        "run",
        "--model",
        "ring8",
        "--sdes",
        "vp",
        "--predictors",
        "euler,reverse_diffusion",
        "--correctors",
        "none,langevin",
        "--snr",
        "0.1,0.2",
        "--steps",
        "3,40",  # 3 steps: Euler–Maruyama far from the floor, so swd separates the cells
        "--seeds",
        "0-1",
        "--samples",
        "64",
        "--batch-size",
        "64",
        "--save-samples",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "mean ± 95% CI over 2 seeds" in result.output  # bench run's short report
    result = CliRunner().invoke(cli, ["report", str(out), "--metric", "swd"])
    assert result.exit_code == 0, result.output
    plots = {p.name for p in (out / "report" / "plots").glob("*.png")}
    assert plots == {
        "swd_vs_nfe_ring8.png",
        "swd_vs_wall_clock_s_ring8.png",
        "swd_vs_snr_ring8.png",
        "samples_ring8_vp.png",
    }
    meta = json.loads((out / "run.json").read_text())
    assert meta["grid"]["snrs"] == [0.1, 0.2]


# -- `bench profile` folders ----------------------------------------------------------------------
def profile_rows(started_at="2026-01-01T00:00:00Z"):
    base = {
        "kind": "profile",
        "model": "ring8",
        "sde": "ve",
        "predictor": "reverse_diffusion",
        "corrector": "langevin",
        "steps": 20,
        "batch_size": 64,
        "device": "cpu",
        "dtype": "float32",
        "threads": 1,
        "started_at": started_at,
        "repeats": 2,
    }
    variants = [("bare_forward", None, 0.0001), ("sde_bench", 40, 0.008), ("minimal", 40, 0.007)]
    return [
        {
            **base,
            "variant": v,
            "nfe": nfe,
            "wall_s": wall,
            "wall_s_iqr": wall / 10,
            "wall_s_min": wall * 0.9,
            "s_per_nfe": wall / (nfe or 1),
            "ratio_vs_bare_forward": wall / 0.0001,
            "cell_id": f"profile-{v}-{started_at}",
        }
        for v, nfe, wall in variants
    ]


def write_profile(folder, rows):
    from bench.run.store import RunStore

    store = RunStore(folder)
    store.prepare()
    store.write_meta({"kind": "profile", "options": {}})
    for r in rows:
        store.append(r)
    return folder


def test_report_of_a_profile_folder_prints_its_timing_table(tmp_path):
    prof = write_profile(tmp_path / "prof", profile_rows())
    result = CliRunner().invoke(cli, ["report", str(prof), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "not a sweep" in result.output
    assert "ring8 · ve · reverse_diffusion+langevin · N=20 · batch 64" in result.output
    lines = [line.split() for line in result.output.splitlines()]
    variants = [words[0] for words in lines if words and words[0] in ("sde_bench", "minimal")]
    assert variants == ["sde_bench", "minimal"]
    assert (tmp_path / "r" / "report.md").read_text().count("| bare_forward |") == 1
    for fmt in ("markdown", "csv"):
        args = ["report", str(prof / "results.csv"), "--format", fmt, "--no-save"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and "sde_bench" in result.output, result.output


def test_compare_refuses_a_profile_folder_in_one_line(tmp_path):
    prof = str(write_profile(tmp_path / "prof", profile_rows()))
    sweep = str(write_run(tmp_path / "sweep", synthetic_rows()))
    for args in ([prof, prof], [sweep, prof], [prof + "/results.csv", sweep]):
        result = CliRunner().invoke(cli, ["compare", *args, "--no-config"])
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)  # a message, never a traceback
        assert "holds `bench profile` rows (timings per variant), not a sweep" in result.output
        assert "results.csv" in result.output
    empty = tmp_path / "empty"  # run.json says profile, no rows yet
    write_profile(empty, [])
    result = CliRunner().invoke(cli, ["compare", str(empty), sweep, "--no-config"])
    assert result.exit_code == 2 and "`bench profile`" in result.output


def test_a_folder_mixing_profile_and_sweep_runs_is_refused(tmp_path):
    write_profile(tmp_path / "all" / "prof", profile_rows())
    write_run(tmp_path / "all" / "sweep", synthetic_rows())
    for command in ("report", "compare"):
        args = [command, str(tmp_path / "all")] + ([str(tmp_path / "all")] * (command == "compare"))
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "mixes `bench profile` runs" in result.output


@pytest.mark.slow
def test_report_and_compare_of_a_real_profile_run(tmp_path):
    out = tmp_path / "p"
    args = ["profile", "--steps", "20", "--repeats", "2", "--calls", "5", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = CliRunner().invoke(cli, ["report", str(out), "--no-save"])
    assert report.exit_code == 0, report.output
    assert "sde_bench" in report.output and "minimal" in report.output
    compare = CliRunner().invoke(cli, ["compare", str(out), str(out), "--no-config"])
    assert compare.exit_code == 2 and "not a sweep" in compare.output


def test_metric_settings_are_not_metric_tables():
    """kid_subset_size, kid_subsets, kid_pool_n describe how KID ran: rows keep them, tables don't."""
    from bench.results.frame import metric_columns

    frame = pd.DataFrame(
        [
            {
                "metrics": "fid,kid",
                "fid": 9.5,
                "kid": 1.2,
                "kid_std": 0.3,
                "kid_subset_size": 64,
                "kid_subsets": 100,
                "kid_pool_n": 64,
                "fid_n": 64,
            }
        ]
    )
    assert metric_columns(frame) == ["fid", "kid", "kid_std"]


def test_a_column_only_pc_cells_set_splits_no_block():
    """Whole samplers take no ``denoise``: their NaN beside PC's True is one block, not two."""
    rows = seeds({"swd": [0.1, 0.2]}) + seeds({"swd": [0.3, 0.4]}, predictor="reverse_diffusion")
    whole = seeds({"swd": [0.2, 0.3]}, predictor="heun")
    for r in whole:
        r["denoise"] = None
    report = build_report(rows + whole)
    assert "denoise" not in block_columns(report.summary)
    mixed = rows + seeds({"swd": [0.3, 0.4]}, predictor="ddim", denoise=False)
    assert "denoise" in block_columns(build_report(mixed).summary)  # set values that differ do


def test_the_same_cells_in_two_runs_are_two_blocks_not_two_seeds(tmp_path):
    """One process and torchrun (or a rerun) in one folder: never averaged as seeds."""
    write_run(tmp_path / "both" / "one", [row(swd=0.10)])
    write_run(tmp_path / "both" / "two", [row(swd=0.30)])
    write_run(tmp_path / "apart" / "a", [row(swd=0.10)])
    write_run(tmp_path / "apart" / "b", [row(swd=0.30, seed=1)])
    both = build_report(load_frame(tmp_path / "both"))
    assert list(both.summary["run"]) == ["one", "two"] and list(both.summary["n_ok"]) == [1, 1]
    assert "run" in block_columns(both.summary)
    apart = build_report(load_frame(tmp_path / "apart"))  # seeds 0 and 1: one cell's two seeds
    assert "run" not in apart.frame and list(apart.summary["n_ok"]) == [2]


# -- paired differences at equal NFE --------------------------------------------------------------
def equal_nfe_rows():
    """heun at 5 steps (9 NFE) and dpmpp_2m at 5 and 9 steps (5 and 9 NFE), three seeds."""
    rows = []
    for sampler, steps, nfe, swd in (
        ("heun", 5, 9, [0.30, 0.32, 0.35]),
        ("dpmpp_2m", 5, 5, [0.50, 0.55, 0.52]),
        ("dpmpp_2m", 9, 9, [0.20, 0.23, 0.24]),
    ):
        for seed, value in enumerate(swd):
            r = row(predictor=None, corrector=None, steps=steps, seed=seed, nfe=nfe, swd=value)
            cell = f"{sampler}-{steps}-{seed}"  # the sampler is not in row()'s cell id
            rows.append(dict(r, sampler=sampler, schedule="edm", cell_id=cell))
    return rows


def test_paired_differences_at_equal_nfe():
    """A Heun cell of N steps spends 2N − 1 NFE: at equal NFE it pairs with dpmpp_2m at 9
    steps, never with dpmpp_2m at its own 5 steps."""
    frame = to_frame(equal_nfe_rows())
    by_nfe = paired_differences(frame, "heun", ["swd"], pair_by="nfe")
    (pair,) = by_nfe.to_dict("records")
    assert (pair["nfe"], pair["steps"], pair["baseline_steps"]) == (9, 9, 5)
    diffs = [0.20 - 0.30, 0.23 - 0.32, 0.24 - 0.35]
    assert pair["diff"] == pytest.approx(sum(diffs) / 3)
    assert pair["diff_ci"] == pytest.approx(ci_halfwidth(diffs))
    assert pair["verdict"] == "better"
    by_steps = paired_differences(frame, "heun", ["swd"])
    assert list(by_steps["steps"]) == [5]  # equal steps: dpmpp_2m at 5 steps (5 NFE)
    assert by_steps["diff"].iloc[0] == pytest.approx((0.20 + 0.23 + 0.17) / 3)
    text = render(build_report(frame, baseline="heun", pair_by="nfe"))
    assert "paired differences vs heun at equal NFE" in text
    assert "NFE=9" in text and "(N=9 vs 5)" in text


def test_pair_by_through_the_command(tmp_path):
    run = write_run(tmp_path / "run", equal_nfe_rows())
    args = ["report", str(run), "--no-save", "--baseline-sampler", "heun", "--pair-by", "nfe"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "at equal NFE" in result.output and "NFE=9" in result.output
    alone = CliRunner().invoke(cli, ["report", str(run), "--no-save", "--pair-by", "nfe"])
    assert alone.exit_code == 2 and "--pair-by needs --baseline-sampler" in alone.output
