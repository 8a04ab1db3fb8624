"""Every plot of a report (``bench report``): the figures of :mod:`bench.results.plots`, the
guidance trade-off of :mod:`bench.results.guidance_plots` and the sample panels of
:mod:`bench.results.sample_plots`, which all build on the first."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from bench.results.guidance_plots import plot_guidance_tradeoff
from bench.results.notes import unplotted
from bench.results.plots import plot_metric_vs_cost, plot_metric_vs_snr
from bench.results.report import Report
from bench.results.sample_plots import plot_samples


def plot_report(
    report: Report,
    folder: Path,
    *,
    samples_dir: Path | None = None,
    target: Callable[[str, int], np.ndarray | None] | None = None,
) -> list[Path]:
    """Every plot of a report: metric vs NFE and vs wall-clock for each metric, metric vs SNR
    when SNRs were swept, quality vs adherence when guidance scales were swept
    (:mod:`bench.results.guidance_plots`), and sample panels when samples were saved. A metric
    that cannot separate a model's cells (:func:`bench.results.notes.cannot_separate`; the report says
    which) is left out for that model."""
    paths: list[Path] = []
    left_out = unplotted(report.summary, report.metrics, report.directions)
    for metric in report.metrics:
        skip = {model for model, m in left_out if m == metric}
        for cost in ("nfe", "wall_clock_s"):
            if cost in report.summary and cost != metric:
                paths += plot_metric_vs_cost(report, metric, cost, folder, skip)
        paths += plot_metric_vs_snr(report, metric, folder, skip)
    paths += plot_guidance_tradeoff(report, folder)
    if samples_dir is not None and samples_dir.is_dir():
        paths += plot_samples(report, samples_dir, folder, target)
    return paths
