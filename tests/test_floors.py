"""Floors: every oracle metric carries what exact samples score at the same n (mean and sd over
independent exact draws); tables mark values and differences inside it (≈floor), the short
report lists it, and the rule is the one docs/reports.md states."""

from __future__ import annotations

import math

import pytest
import torch

from bench.fidelity.gaussian import reference_samples
from bench.results.report import build_report, pivot, render
from bench.results.short_report import short_report
from tests.rows import seeds
from tests.test_oracle_metrics import feed, metric, model_of

# -- the metrics' floors ---------------------------------------------------------------------------
FLOORS = {
    "swd": ("swd",),
    "fd": ("fd",),
    "logp": ("logp", "logp_gap"),
    "coverage": ("coverage_tv", "coverage_min"),
}


@pytest.mark.parametrize("name", list(FLOORS))
def test_every_oracle_metric_carries_its_floor(registry, name):
    """Each column gets ``<column>_ref`` and ``<column>_ref_std``: the mean and sd of the same
    metric on FLOOR_DRAWS independent exact sets of n samples (seeded), against the same
    reference set — recomputed here without the metric's floor machinery."""
    from bench_plugins.metrics import FLOOR_DRAWS, FLOOR_SEED

    model = model_of(registry, "ring8")
    n = 400
    out = feed(metric(registry, name, model, n), reference_samples(model, n, 99))
    assert out["floor_draws"] == FLOOR_DRAWS
    for column in FLOORS[name]:
        values = []
        for i in range(FLOOR_DRAWS):
            x = model.sample_data(n, torch.Generator().manual_seed(FLOOR_SEED + i))
            values.append(feed(metric(registry, name, model, n), x)[column])
        values = torch.tensor(values, dtype=torch.float64)
        assert out[f"{column}_ref_std"] == pytest.approx(float(values.std()), rel=1e-9)
        assert out[f"{column}_ref_std"] > 0
        if column != "logp":  # logp_ref stays the reference set's own value (logp_gap's base)
            assert out[f"{column}_ref"] == pytest.approx(float(values.mean()), rel=1e-9)
    if name == "logp":
        ref = reference_samples(model, n)
        assert out["logp_ref"] == pytest.approx(float(model.log_prob(ref).mean()))


def test_exact_samples_fall_inside_the_floor_and_a_shift_does_not(registry):
    """An exact set the floor never saw lands within its spread; shifted samples do not."""
    model = model_of(registry, "ring8")
    n = 1000
    exact = model.sample_data(n, torch.Generator().manual_seed(123))
    for name in ("swd", "fd", "coverage"):
        out = feed(metric(registry, name, model, n), exact)
        column = FLOORS[name][0]
        assert abs(out[column] - out[f"{column}_ref"]) <= 3 * out[f"{column}_ref_std"], name
        if name != "coverage":  # a shift keeps every sample nearest its own mode
            shifted = feed(metric(registry, name, model, n), exact + 0.5)
            assert shifted[column] > out[f"{column}_ref"] + 5 * out[f"{column}_ref_std"], name


def test_the_floor_shrinks_with_n(registry):
    model = model_of(registry, "ring8")
    small = feed(metric(registry, "swd", model, 250), reference_samples(model, 250, 7))
    large = feed(metric(registry, "swd", model, 4000), reference_samples(model, 4000, 7))
    assert large["swd_ref"] < small["swd_ref"] / 2.5  # about 1/√n: 4× fewer at 16× more n
    assert large["swd_ref_std"] < small["swd_ref_std"]


def test_the_floor_is_computed_once_per_model_and_n(registry, monkeypatch):
    """Every cell of a run shares its floor: the exact draws are made once (16 draws), then
    served from the cache; another n draws again."""
    import bench_plugins.metrics as metrics

    model = model_of(registry, "gauss1d")
    drawn = []
    real = metrics.exact_draw
    monkeypatch.setattr(metrics, "exact_draw", lambda m, n, i: drawn.append(n) or real(m, n, i))
    x = reference_samples(model, 300, 5)
    first = feed(metric(registry, "fd", model, 300), x)
    assert drawn == [300] * metrics.FLOOR_DRAWS
    again = feed(metric(registry, "fd", model, 300), x + 0.1)
    assert len(drawn) == metrics.FLOOR_DRAWS
    assert again["fd_ref"] == first["fd_ref"] and again["fd"] > first["fd"]
    feed(metric(registry, "fd", model, 200), x[:200])
    assert drawn.count(200) == metrics.FLOOR_DRAWS


# -- floors in the tables --------------------------------------------------------------------------
FLOOR = {"swd_ref": 0.15, "swd_ref_std": 0.03, "floor_draws": 16}


def floor_rows():
    """Two samplers × two step counts × two seeds on ring8 with the oracle's floor columns:
    euler_maruyama far above the floor at 10 steps, reverse_diffusion at it."""
    rows = []
    for steps, em, rd in ((10, [0.50, 0.52], [0.16, 0.15]), (100, [0.22, 0.23], [0.14, 0.16])):
        rows += seeds({"swd": em}, steps=steps, **FLOOR)
        rows += seeds({"swd": rd}, steps=steps, predictor="reverse_diffusion", **FLOOR)
    return rows


def test_floor_rule_one_sided_with_seeds_and_draws():
    from bench.results.floors import Floor

    floor = Floor(0.15, 0.03, 16)
    band = 2 * 0.03 * math.sqrt(1 / 4 + 1 / 16)
    assert floor.band(4) == pytest.approx(band)
    assert floor.holds(0.15 + 0.99 * band, "lower", 4)
    assert not floor.holds(0.15 + 1.01 * band, "lower", 4)
    assert floor.holds(0.0, "lower", 4)  # better than exact sampling: noise, not a rank
    assert floor.holds(0.15 - 0.99 * band, "higher", 4)
    assert not floor.holds(0.15 - 1.01 * band, "higher", 4)
    assert not floor.holds(0.15, "info", 4)  # informational columns are never marked
    assert Floor(0.15, 0.03).band(1) == pytest.approx(0.06)  # draws unknown: 1/draws = 0
    assert floor.pair_band(2) == pytest.approx(2 * 0.03 * math.sqrt(2 / 2))


def test_pivot_marks_values_inside_the_floor_and_shows_it():
    report = build_report(floor_rows())
    table = pivot(report.summary, "swd", report.directions).set_index("sampler")
    assert table.loc["reverse_diffusion+none", "N=10 swd↓"].endswith("≈floor")
    assert table.loc["reverse_diffusion+none", "N=100 swd↓"].endswith("≈floor")
    assert "≈floor" not in table.loc["euler_maruyama+none", "N=10 swd↓"]
    # 0.225 vs 0.15 + 2·0.03·√(1/2 + 1/16) = 0.195: outside
    assert "≈floor" not in table.loc["euler_maruyama+none", "N=100 swd↓"]
    assert table.loc["exact samples (floor)", "N=10 swd↓"] == "0.15 (sd 0.03)"
    text = render(report)
    assert "floor 0.15 (sd 0.03) over 16 exact draws" in text
    assert "≈floor marks a value within the floor" in text


def test_paired_differences_inside_the_floor_are_marked():
    def swd_table(rows):
        text = render(build_report(rows, baseline="euler")).split("paired differences")[1]
        return text.split("swd↓ (n=100)")[1].split("coverage_min")[0]

    # rd − em: −0.355 at N=10, −0.075 at N=100, both beyond 2·0.03·√(2/2) = 0.06
    far = swd_table(floor_rows())
    assert "better" in far and "≈floor" not in far
    near = [
        dict(r, swd=0.17) if (r["predictor"], r["steps"]) == ("euler_maruyama", 100) else r
        for r in floor_rows()
    ]
    row_100 = swd_table(near).strip().splitlines()[-1]
    assert row_100.endswith("≈floor")  # N=100: |0.15 − 0.17| = 0.02 ≤ 0.06


def test_short_report_shows_floors_and_marks():
    text = short_report(floor_rows())
    assert (
        "floor at ring8, samples=100 (exact samples, mean ± sd over 16 draws): swd↓ 0.15 ± 0.03"
        in text
    )
    lines = {line.split()[1] + line.split()[2]: line for line in text.splitlines()[1:5]}
    assert "0.155 ± 0.064 ≈" in lines["reverse_diffusion+none10"]
    assert "≈" not in lines["euler_maruyama+none10"]
    assert "≈ : inside the floor" in text
    plain = short_report([{k: v for k, v in r.items() if k not in FLOOR} for r in floor_rows()])
    assert "≈" not in plain and "floor" not in plain


def test_rows_without_a_spread_keep_the_old_reference_note():
    """Older rows: a bare coverage_tv_ref (one exact set, no spread) is a reference value, not a
    floor: no marks, the value in a sentence as before."""
    rows = seeds({"swd": [0.1, 0.2]})
    report = build_report(rows)
    assert "Exact-sample reference values: coverage_tv_ref=-1.5." in render(report)
    assert "≈floor" not in render(report)
