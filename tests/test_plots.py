"""Report plots: labels of sample grids, and y limits that do not hide the intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bench.results.plot_axes as plot_axes
import bench.results.plots as plots
import bench.results.report_plots as report_plots
import bench.results.sample_plots as sample_plots
from bench.results.report import build_report
from tests.rows import row, seeds


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would save, kept open for inspection."""
    kept = []

    def keep(fig, folder, name):
        kept.append(fig)
        return [folder / f"{name}.png"]

    monkeypatch.setattr(plots, "save", keep)
    monkeypatch.setattr(sample_plots, "save", keep)
    yield kept
    for fig in kept:
        plots._pyplot().close(fig)


def test_sample_grid_labels_every_row_and_column_even_over_empty_cells(tmp_path, figures):
    # Row 0 lacks N=10 (unsupported), column 0 lacks reverse_diffusion: the N=10 title and the
    # reverse_diffusion label used to be set only on those very cells, so they were lost.
    rows = [
        row(predictor="euler_maruyama", steps=10, status="unsupported"),
        row(predictor="euler_maruyama", steps=30),
        row(predictor="reverse_diffusion", steps=10),
        row(predictor="reverse_diffusion", steps=30),
    ]
    samples = tmp_path / "samples"
    samples.mkdir()
    rng = np.random.default_rng(0)
    for r in rows:
        if r["status"] == "ok":
            np.savez(samples / f"{r['cell_id']}.npz", samples=rng.random((4, 1, 8, 8)))
    report = build_report(rows)
    sample_plots.plot_samples(report, samples, tmp_path / "plots")
    (fig,) = figures
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["N=10", "N=30"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [
        "euler_maruyama+none",
        "reverse_diffusion+none",
    ]
    assert [t.get_text() for t in axes[0][0].texts] == ["unsupported"]
    assert axes[0][0].yaxis.label.get_visible()


def snr_rows():
    rows = []
    for snr, values in ((0.1, [0.1, 0.9]), (0.2, [0.3, 0.35]), (0.4, [0.2, 1.6])):
        rows += seeds({"swd": values}, corrector="langevin", snr=snr)
    return rows


def test_snr_plot_limits_hold_every_interval(tmp_path, figures):
    report = build_report(snr_rows())
    assert plots.plot_metric_vs_snr(report, "swd", tmp_path)
    (fig,) = figures
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    s = report.summary
    assert low <= (s["swd"] - s["swd_ci"]).min() and high >= (s["swd"] + s["swd_ci"]).max()


def test_cost_plot_marks_intervals_cut_by_the_axes(tmp_path, figures):
    rows = snr_rows()[:2] + seeds({"swd": [0.3, 0.31]}, steps=20)
    rows += seeds({"swd": [0.25, 0.26]}, steps=40)
    report = build_report(rows)
    plots.plot_metric_vs_cost(report, "swd", "nfe", tmp_path)
    ax = figures[0].axes[0]
    low, high = ax.get_ylim()
    s = report.summary
    assert (s["swd"] + s["swd_ci"]).max() > high  # the means stay readable ...
    notes = [t.get_text() for t in ax.texts]
    assert "▲▼ interval continues beyond the axes" in notes  # ... and the cut is visible


@pytest.mark.parametrize("metric,judged", [("swd", True), ("logp", False)])
def test_no_best_or_frontier_for_informational_metrics(tmp_path, figures, metric, judged):
    """logp has no better direction (over-concentrated samples score high): no ★, no frontier."""
    rows = []
    for snr, values in ((0.1, [0.1, 0.2]), (0.2, [0.3, 0.35])):
        rows += seeds({metric: values}, corrector="langevin", snr=snr, metrics=metric)
    rows += seeds({metric: [0.5, 0.6]}, steps=20, metrics=metric)
    report = build_report(rows)
    plots.plot_metric_vs_snr(report, metric, tmp_path)
    plots.plot_metric_vs_cost(report, metric, "nfe", tmp_path)
    snr_fig, cost_fig = figures
    stars = [
        c
        for c in snr_fig.axes[0].collections
        if hasattr(c, "get_sizes") and c.get_sizes().tolist() == [180.0]
    ]
    assert bool(stars) is judged and ("best SNR" in snr_fig._suptitle.get_text()) is judged
    labels = [line.get_label() for line in cost_fig.axes[0].get_lines()]
    assert ("Pareto frontier" in labels) is judged


def tick_label_boxes(fig, ax):
    """The rendered bounding boxes of the visible x tick labels of ``ax`` (display pixels)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    low, high = ax.get_xlim()
    return [
        (label.get_text(), label.get_window_extent(renderer))
        for tick, label in zip(ax.get_xticks(), ax.get_xticklabels())
        if low <= tick <= high and label.get_visible() and label.get_text()
    ]


@pytest.mark.parametrize("width", [4.6, 2.5, 1.6])
def test_log_nfe_tick_labels_never_overlap(tmp_path, figures, monkeypatch, width):
    """NFE 100, 200, 300, 1000, 2000 used to print "200300" on a log axis: every rendered
    label now keeps clear of its neighbours, at the standard panel width and narrower."""
    figure = plots._figure
    monkeypatch.setattr(plots, "_figure", lambda n, panel=None: figure(n, (width, 3.5)))
    rows = []
    for n in (100, 200, 300, 1000, 2000):
        rows += seeds({"swd": [0.3 / n**0.3, 0.31 / n**0.3]}, steps=n)
    plots.plot_metric_vs_cost(build_report(rows), "swd", "nfe", tmp_path)
    fig = figures[0]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    boxes = tick_label_boxes(fig, ax)
    assert len(boxes) >= 2
    for (left, a), (right, b) in zip(boxes, boxes[1:]):
        assert a.x1 < b.x0, f"{left!r} and {right!r} overlap at panel width {width}"
    if width == 4.6:  # room for every NFE that was run: they are the ticks
        assert [t for t, _ in boxes] == ["100", "200", "300", "1000", "2000"]


def test_fitting_ticks_fall_back_to_fewer_round_values():
    """Too close for their labels, the NFEs give way to 1-2-5 ticks, then to fewer."""
    wide = plot_axes.fitting_ticks([100, 200, 300, 1000, 2000], 80, 2500, 400, lambda s: 8 * len(s))
    assert wide == [100, 200, 300, 1000, 2000]
    narrow = plot_axes.fitting_ticks(
        [100, 200, 300, 1000, 2000], 80, 2500, 90, lambda s: 8 * len(s)
    )
    assert narrow and narrow != wide and all(80 <= t <= 2500 for t in narrow)
    xs = [np.log10(t) * 90 / (np.log10(2500) - np.log10(80)) for t in narrow]
    half = [4 * len(plot_axes.fmt(float(t), 3)) for t in narrow]
    assert all(xs[i + 1] - xs[i] >= half[i] + half[i + 1] for i in range(len(xs) - 1))


def floor_rows(**kw):
    """Two samplers at two step counts, with the floor columns an oracle run writes."""
    floor = {"swd_ref": 0.15, "swd_ref_std": 0.03, "floor_draws": 16}
    rows = []
    for steps, a, b in ((10, [0.5, 0.52], [0.16, 0.15]), (100, [0.2, 0.21], [0.14, 0.16])):
        rows += seeds({"swd": a}, steps=steps, **floor, **kw)
        rows += seeds({"swd": b}, steps=steps, predictor="reverse_diffusion", **floor, **kw)
    return rows


def test_every_metric_plot_draws_the_floor_band(tmp_path, figures):
    """The floor (exact samples at this n) is a grey band of ± 2 sd·√(1/seeds + 1/draws)."""
    report = build_report(floor_rows())
    plots.plot_metric_vs_cost(report, "swd", "nfe", tmp_path)
    plots.plot_metric_vs_cost(report, "swd", "wall_clock_s", tmp_path)
    for fig in figures:
        ax = fig.axes[0]
        (band,) = [p for p in ax.patches if p.get_label().startswith("floor: exact samples")]
        y = [band.get_y(), band.get_y() + band.get_height()]
        half = 2 * 0.03 * np.sqrt(1 / 2 + 1 / 16)
        assert y == pytest.approx([0.15 - half, 0.15 + half])
        low, high = ax.get_ylim()
        assert low <= y[0] and high >= y[1]


def test_fid_plots_say_when_the_rows_carry_no_floor(tmp_path, figures):
    rows = []
    for n in (10, 100):
        rows += seeds({"fid": [30.0 / n, 31.0 / n]}, steps=n, metrics="fid", fid_n=64)
    plots.plot_metric_vs_cost(build_report(rows), "fid", "nfe", tmp_path)
    notes = [t.get_text() for t in figures[0].axes[0].texts]
    assert "no fid floor in these rows (bench fid-floor)" in notes
    rows = [dict(r, fid_floor=2.5, fid_floor_std=0.4) for r in rows]
    plots.plot_metric_vs_cost(build_report(rows), "fid", "nfe", tmp_path)
    labels = [p.get_label() for p in figures[1].axes[0].patches]
    assert "floor: real data ± 2 sd" in labels  # FID's floor is the data's, not exact samples'


def test_a_few_step_blow_up_gets_a_log_axis_that_holds_every_mean(tmp_path, figures):
    """FID 400 at 5 NFE beside 12 at 50 would flatten every other point on a linear axis."""
    rows = []
    for n, values in ((5, [400.0, 420.0]), (10, [40.0, 41.0]), (50, [12.0, 12.5])):
        rows += seeds({"fid": values}, steps=n, metrics="fid", fid_n=64)
    report = build_report(rows)
    plots.plot_metric_vs_cost(report, "fid", "nfe", tmp_path)
    ax = figures[0].axes[0]
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    assert low <= report.summary["fid"].min() and high >= report.summary["fid"].max()


def test_means_within_a_factor_of_twenty_keep_a_linear_axis():
    assert not plot_axes.wide_positive(pd.Series([1.0, 19.0]))
    assert plot_axes.wide_positive(pd.Series([1.0, 21.0, float("nan")]))
    assert not plot_axes.wide_positive(pd.Series([-1.0, 30.0]))  # KID can be negative
    assert not plot_axes.wide_positive(pd.Series([float("nan")]))


# -- colours, ticks and scales shared by a figure, metrics left out -------------------------------
def solver_rows():
    """heun (2N − 1 NFE) and dpmpp_2m (N NFE) at 5, 10 and 20 steps, on VE and VP, two seeds."""
    rows = []
    for sde, blow_up in (("ve", 1.0), ("vp", 40.0)):
        for sampler, nfe in (("heun", lambda n: 2 * n - 1), ("dpmpp_2m", lambda n: n)):
            for n in (5, 10, 20):
                scale = blow_up if n == 5 else 1.0
                for seed, value in enumerate([0.1 * scale, 0.11 * scale]):
                    r = row(sde=sde, predictor=None, corrector=None, steps=n, seed=seed)
                    r.update(sampler=sampler, schedule="edm", nfe=nfe(n), swd=value + 0.1 / n)
                    rows.append(r)
    return rows


def line_colors(ax):
    """Sampler label → colour of its line (an errorbar container per sampler)."""
    return {c.get_label(): c.lines[0].get_color() for c in ax.containers}


def test_one_colour_per_sampler_in_every_plot_and_every_report(tmp_path, figures):
    from bench.results.plot_colors import sampler_colors

    labels = ["heun", "dpmpp_2m", "my_solver", "another_one", "euler_maruyama+none"]
    colors = sampler_colors(labels)
    assert colors == sampler_colors(reversed(labels))  # not the order of appearance
    assert len(set(colors.values())) == len(labels)  # distinct inside one plot
    assert sampler_colors(["heun", "unipc"])["heun"] == colors["heun"]  # across reports
    report = build_report(solver_rows())
    plots.plot_metric_vs_cost(report, "swd", "nfe", tmp_path)
    plots.plot_metric_vs_cost(report, "swd", "wall_clock_s", tmp_path)
    first = [line_colors(ax) for ax in figures[0].axes[:2]]
    second = [line_colors(ax) for ax in figures[1].axes[:2]]
    assert first[0] == first[1] == second[0] == second[1]
    assert first[0] == {k: colors[k] for k in ("heun", "dpmpp_2m")}


def test_the_rightmost_nfe_has_a_tick(tmp_path, figures):
    """Heun's 39 NFE beside 5, 9, 10, 19, 20: too close for every label, but the last point
    run is always named (it used to get none: the ticks fell back to 5, 10, 20)."""
    plots.plot_metric_vs_cost(build_report(solver_rows()), "swd", "nfe", tmp_path)
    fig = figures[0]
    for ax in fig.axes[:2]:
        labels = [text for text, _ in tick_label_boxes(fig, ax)]
        assert "39" in labels and "5" in labels, labels
        boxes = [box for _, box in tick_label_boxes(fig, ax)]
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))


def test_every_panel_of_a_figure_follows_one_scale_rule(tmp_path, figures):
    """VP's 5-step blow-up makes its panel logarithmic: VE's panel, within a factor 20 on its
    own, takes the same log axis instead of a linear one."""
    report = build_report(solver_rows())
    ve, vp = (report.summary[report.summary["sde"] == s] for s in ("ve", "vp"))
    assert not plot_axes.wide_positive(ve["swd"]) and plot_axes.wide_positive(vp["swd"])
    plots.plot_metric_vs_cost(report, "swd", "nfe", tmp_path)
    assert [ax.get_yscale() for ax in figures[0].axes[:2]] == ["log", "log"]
    assert [ax.get_xscale() for ax in figures[0].axes[:2]] == ["log", "log"]


def test_a_metric_that_cannot_separate_the_cells_is_not_plotted(tmp_path, figures):
    rows = [dict(r, coverage_min=0.9) for r in solver_rows()]  # one value everywhere
    paths = report_plots.plot_report(build_report(rows), tmp_path)
    names = {p.name for p in paths}
    assert "swd_vs_nfe_ring8.png" in names
    assert not any(name.startswith("coverage_min") for name in names)
