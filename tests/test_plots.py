"""Report plots: labels of sample grids, and y limits that do not hide the intervals."""

from __future__ import annotations

import numpy as np
import pytest

import bench.results.plots as plots
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
