"""The table `bench run` prints and the notes under it: width, schedules, NFE, not-ok reasons,
and the notes on what would otherwise read as a bug (identical samplers, a metric with one
value, KID's scale, values below a data floor)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.results.frame import Directions, load_rows, to_frame
from bench.results.notes import (
    cannot_separate,
    constant_metric_notes,
    identical_samplers,
    kid_notes,
    not_ok_lines,
)
from bench.results.report import build_report, render
from bench.results.short_report import short_report
from bench.results.text import rounded
from tests.rows import row, seeds

BASELINE = Path(__file__).resolve().parents[1] / "results" / "baseline"


def table_lines(text: str) -> list[str]:
    """The lines of the table (every part), without the footer and the not-ok list."""
    parts = text.split("\n\n")
    return [line for part in parts if part.startswith("sde") for line in part.splitlines()]


# -- numbers --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mean,ci,text",
    [
        (0.07526, 0.01, "0.075 ± 0.010"),  # the interval's two digits set the mean's last digit
        (0.233, 0.0089, "0.2330 ± 0.0089"),
        (0.0006959, 0.0004, "0.00070 ± 0.00040"),
        (-12.87, 0.84, "-12.87 ± 0.84"),
        (1282.4, 120.0, "1280 ± 120"),  # no digit below the tens
        (0.25, float("nan"), "0.25"),  # one seed: no interval, never a fake ± 0
        (0.5, 0.0, "0.5 ± 0"),
    ],
)
def test_rounded_prints_no_digit_below_the_interval(mean, ci, text):
    assert rounded(mean, ci) == text


# -- width ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", ["oracle-ring8", "oracle-solvers", "digits-solvers", "digits-vp"])
def test_every_line_fits_120_columns_on_the_committed_runs(run):
    """The committed baseline sweeps (the default ring8 grid, 18 PC samplers × 3 SDEs, 6 metric
    columns): the table used to be ~177 columns wide and wrap on every terminal."""
    text = short_report(load_rows(BASELINE / run))
    assert max(len(line) for line in text.splitlines()) <= 120, text


def test_a_table_too_wide_comes_in_parts_that_repeat_the_sampler():
    metrics = {f"m{i}": [0.123456 + i, 0.2 + i] for i in range(12)}
    rows = []
    for r in seeds(metrics):
        rows.append(dict(r, metrics=",".join(metrics)))
    text = short_report(rows, width=100)
    parts = [p for p in text.split("\n\n") if p.startswith("sde")]
    assert len(parts) >= 2
    assert all("euler_maruyama+none" in p and "steps" in p for p in parts)
    heads = " ".join(p.splitlines()[0] for p in parts)
    assert all(f"m{i}↓" in heads for i in range(12))  # every metric is in some part
    assert max(len(line) for line in text.splitlines()) <= 100


# -- schedules and NFE ----------------------------------------------------------------------------
def solver_rows(**kw):
    """heun (edm, 2N − 1 NFE) and dpmpp_2m (logsnr, N NFE) at 5 and 10 steps, two seeds."""
    rows = []
    for sampler, schedule, nfe in (
        ("heun", "edm", lambda n: 2 * n - 1),
        ("dpmpp_2m", "logsnr", int),
    ):
        for steps in (5, 10):
            for seed in (0, 1):
                r = row(
                    predictor=None,
                    corrector=None,
                    steps=steps,
                    seed=seed,
                    nfe=nfe(steps),
                    swd=0.1 * seed + (0.3 if sampler == "heun" else 0.2) / steps,
                    coverage_min=0.9,
                )
                r.update(sampler=sampler, schedule=schedule, nfe_nominal=nfe(steps))
                rows.append({**r, **kw})
    return rows


def test_every_row_names_its_sampler_schedule():
    """dpmpp_2m runs on logsnr and heun on edm by default: without the column a solver author
    compares them at two schedules without noticing."""
    lines = table_lines(short_report(solver_rows()))
    assert lines[0].split()[:4] == ["sde", "sampler", "schedule", "steps"]
    assert {tuple(line.split()[1:3]) for line in lines[1:]} == {
        ("heun", "edm"),
        ("dpmpp_2m", "logsnr"),
    }
    one = short_report(seeds({"swd": [0.1, 0.2]}))  # every cell on one schedule: said once
    assert "schedule" not in table_lines(one)[0] and "schedule: uniform (every cell)" in one


def test_nominal_nfe_shows_only_where_it_differs_from_the_count():
    same = short_report(solver_rows())  # an int nominal beside a float count is no difference
    assert "nominal" not in table_lines(same)[0]
    adaptive = solver_rows()[:2] + [dict(r, nfe_nominal=None) for r in solver_rows()[2:4]]
    lines = table_lines(short_report(adaptive))
    assert "nominal" in lines[0].split()
    assert any(line.split()[2:5] == ["10", "19", "-"] for line in lines), lines  # count, unknown


# -- not ok ---------------------------------------------------------------------------------------
def test_one_not_ok_line_per_reason_with_the_cells_it_covers():
    rows = [row(steps=30)]
    for sde in ("vp", "subvp"):
        for predictor in ("euler_maruyama", "reverse_diffusion"):
            for seed in (0, 1, 2):
                rows.append(
                    dict(
                        row(sde=sde, predictor=predictor, corrector="langevin", seed=seed),
                        status="unsupported",
                        reason="the corrector's step size needs N > 20",
                    )
                )
    rows += [
        row(sde="subvp", predictor="ancestral_sampling", steps=n, status="unsupported")
        for n in (10, 30)
    ]
    lines = not_ok_lines(to_frame(rows))
    assert lines == [
        "unsupported in 4 cells (euler_maruyama+langevin, reverse_diffusion+langevin at N=10; "
        "vp, subvp) × 3 seeds: the corrector's step size needs N > 20",
        "unsupported in 2 cells (ancestral_sampling+none at N=10, 30; subvp): why not",
    ]


# -- notes ----------------------------------------------------------------------------------------
def em_rd_rows(sde: str, same: bool = True):
    """Euler–Maruyama and reverse diffusion with metrics equal up to float32 round-off."""
    rows = []
    for seed, value in enumerate([0.3, 0.5]):
        rows.append(row(sde=sde, seed=seed, swd=value, coverage_min=0.8 + seed / 100))
        other = value * (1 + 3e-7) if same else value + 0.01
        rows.append(
            row(
                sde=sde,
                seed=seed,
                predictor="reverse_diffusion",
                swd=other,
                coverage_min=0.8 + seed / 100,
            )
        )
    return rows


def test_sub_vp_euler_maruyama_and_reverse_diffusion_are_said_to_be_one_sampler():
    text = short_report(em_rd_rows("subvp"))
    assert "subvp: euler_maruyama+none = reverse_diffusion+none: identical to every" in text
    assert "reverse diffusion falls back to Euler–Maruyama" in " ".join(text.split())
    assert "identical" in render(build_report(em_rd_rows("subvp")))
    vp = short_report(em_rd_rows("vp"))  # the same values elsewhere: said, with no sub-VP reason
    assert "identical to every" in vp and "falls back" not in vp
    apart = short_report(em_rd_rows("subvp", same=False))
    assert "identical" not in apart


def test_a_metric_with_one_value_across_samplers_says_why():
    """Deterministic samplers from shared x_T land in the same modes: coverage cannot rank."""
    frame = to_frame(em_rd_rows("vp", same=False))
    notes = constant_metric_notes(frame, ["swd", "coverage_min"], Directions())
    assert len(notes) == 1 and notes[0].startswith("coverage_min↑: the same value in 2 cells")
    assert "common random numbers" in notes[0] and "same mode" in notes[0]
    differ = [dict(r, coverage_min=r["swd"]) for r in em_rd_rows("vp", same=False)]
    assert constant_metric_notes(to_frame(differ), ["coverage_min"], Directions()) == []
    # samplers identical in every metric are one sampler, not a metric that cannot rank
    same = to_frame(em_rd_rows("subvp"))
    assert identical_samplers(same, ["swd", "coverage_min"])
    assert constant_metric_notes(same, ["swd", "coverage_min"], Directions()) == []


def kid_rows(values, **extra):
    return [
        row(
            seed=s,
            metrics="kid",
            swd=None,
            kid=v,
            kid_std=5.0,
            kid_extractor="digits-classifier@4fe071e4",
            kid_n=200,
            **extra,
        )
        for s, v in enumerate(values)
    ]


def test_kid_notes_state_its_scale_and_why_it_can_be_negative():
    (note,) = kid_notes(to_frame(kid_rows([83.5, -7.9])), ["kid"])
    assert "not ×10³" in note and "never with Inception KID (0.001–0.05)" in note
    assert "can be negative" in note and "unbiased" in note
    (positive,) = kid_notes(to_frame(kid_rows([83.5, 7.9])), ["kid"])
    assert "negative" not in positive
    inception = kid_rows([0.01, 0.02])
    for r in inception:
        r["kid_extractor"] = "inception-v3-compat"
    (plain,) = kid_notes(to_frame(inception), ["kid"])
    assert "not ×10³" in plain and "digits" not in plain
    assert kid_notes(to_frame(seeds({"swd": [0.1, 0.2]})), ["swd"]) == []


def test_a_value_below_the_real_data_floor_is_explained():
    floor = {"kid_floor": 3.1, "kid_floor_std": 12.0, "kid_floor_of": "digits:train split-half"}
    below = short_report(kid_rows([-1.0, 1.0], **floor))
    assert "Below the real-data floor: kid in 1 cell" in below
    assert "cannot be told from real data" in " ".join(below.split())
    above = short_report(kid_rows([20.0, 30.0], **floor))
    assert "Below the real-data floor" not in above


def test_a_metric_that_cannot_separate_the_cells_is_named_in_the_report():
    rows = em_rd_rows("vp", same=False)  # coverage_min: one value in every cell
    report = build_report(rows)
    text = render(report)
    assert "Plots leave out what cannot separate the cells: coverage_min" in text
    assert cannot_separate(report.summary, "swd", report.directions) is None
    floor = [dict(r, swd_ref=0.5, swd_ref_std=0.1, floor_draws=16) for r in rows]
    summary = build_report(floor).summary
    assert "inside the floor" in cannot_separate(summary, "swd", Directions())


# -- the reasons of unsupported cells -------------------------------------------------------------
@pytest.mark.parametrize(
    "sde,step,component,fix",
    [
        ("vp", "langevin_alpha", "the corrector's step size", "--correctors none"),
        ("subvp", "langevin_alpha", "the corrector's step size", "--correctors none"),
        ("vp", "discretize", "the reverse-diffusion predictor", "--predictors euler_maruyama"),
        ("vp", "ancestral_coefficients", "the ancestral-sampling predictor", "euler_maruyama"),
    ],
)
def test_a_discrete_chain_too_short_names_the_step_that_needs_it(
    make_sde, sde, step, component, fix
):
    """N ≤ beta_max on the uniform grid: the reason names the component that cannot run and a
    fix for it (an Euler–Maruyama + Langevin cell used to be told to use euler_maruyama)."""
    import torch

    from bench.errors import Unsupported

    chain = make_sde(sde, N=10)
    x = (torch.zeros(2, 2),) if step == "discretize" else ()
    with pytest.raises(Unsupported) as caught:  # t = 1: β_9 = beta_max/N = 2
        getattr(chain, step)(*x, 1.0)
    reason = str(caught.value)
    assert reason.startswith(component) and fix in reason
    assert "N > beta_max = 20 (got N = 10)" in reason
    if component.startswith("the corrector"):
        assert "use euler_maruyama" not in reason and "non-uniform schedule" in reason
    chain.discrete = False  # another schedule: the one-step β from t to t_next is < 1
    getattr(chain, step)(*x, 1.0, 0.5)
