"""``bench report`` and ``bench compare``: tables, plots and regression checks from run folders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

FORMATS = ("text", "markdown", "csv")


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeatable options that also accept comma lists: ``--metric a,b --metric c``."""
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- bench report ---------------------------------------------------------------------------------
@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME[,NAME]",
    help="Metric columns to tabulate (repeatable) [default: every metric column].",
)
@click.option(
    "--baseline-sampler",
    default=None,
    metavar="LABEL",
    help="Add paired differences against this sampler, e.g. euler_maruyama+none.",
)
@click.option(
    "--pair-by",
    type=click.Choice(["steps", "nfe"]),
    default="steps",
    show_default=True,
    help="Pair cells with the baseline's at equal steps, or at equal counted NFE (a Heun cell "
    "of N steps, 2N−1 NFE, beside a one-evaluation solver at 2N−1 steps).",
)
@click.option(
    "--confidence",
    type=click.FloatRange(0.5, 1, max_open=True),
    default=0.95,
    show_default=True,
    help="Level of the intervals over seeds.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="What to print: terminal tables, Markdown, or the summary as CSV.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="Where to write the files [default: RUN_DIR/report].",
)
@click.option(
    "--save/--no-save",
    default=True,
    show_default=True,
    help="Write report.txt, report.md, summary.csv (and plots) to --out.",
)
@click.option(
    "--plots/--no-plots",
    default=True,
    show_default=True,
    help="Draw the plots (PNG and SVG) into OUT/plots.",
)
@click.option("--parquet", is_flag=True, help="Also write summary.parquet (needs pyarrow).")
@click.pass_obj
def report_command(
    session: Any,
    run_dir: Path,
    metrics: tuple[str, ...],
    baseline_sampler: str | None,
    pair_by: str,
    confidence: float,
    fmt: str,
    out: Path | None,
    save: bool,
    plots: bool,
    parquet: bool,
) -> None:
    """Tables (and plots) of a run: a metric by sampler × steps per model and SDE.

    Every cell shows the mean ± CI over seeds (Student t), with NFE and wall-clock seconds
    beside it. RUN_DIR is a run folder, a folder of run folders, or a results.csv file.

    \b
    Examples:
      bench report results/my-run
      bench report results/my-run --metric swd,fd --baseline-sampler euler_maruyama+none
      bench report results/my-run --baseline-sampler heun --pair-by nfe
      bench report results/my-run --format markdown --no-save >> "$GITHUB_STEP_SUMMARY"
    """
    from bench.results.frame import Directions, holds_profile, load_frame
    from bench.results.report import build_report, render

    if pair_by != "steps" and not baseline_sampler:
        raise click.UsageError("--pair-by needs --baseline-sampler (the sampler to pair with)")
    if holds_profile(run_dir):
        _profile_report(run_dir, fmt, out, save)
        return
    frame = load_frame(run_dir)
    report = build_report(
        frame,
        metrics=_split(metrics) or None,
        baseline=baseline_sampler,
        pair_by=pair_by,
        confidence=confidence,
        directions=Directions.from_registry(session.registry),
        title=f"sde-bench report: {run_dir}",
    )
    text = {
        "text": lambda: render(report),
        "markdown": lambda: render(report, markdown=True),
        "csv": lambda: report.summary.to_csv(index=False),
    }[fmt]()
    click.echo(text, nl=False)
    if save:
        folder = _folder(run_dir, out)
        written = write_report_files(report, folder)
        if plots:
            written += _plots(session, report, run_dir, folder / "plots")
        try:  # last, so that a missing pyarrow costs nothing else
            written += (
                [write_parquet(report.summary, folder / "summary.parquet")] if parquet else []
            )
        finally:
            click.echo(f"wrote {len(written)} files to {folder}", err=True)


def _folder(run_dir: Path, out: Path | None) -> Path:
    return out or (run_dir if run_dir.is_dir() else run_dir.parent) / "report"


def _profile_report(run_dir: Path, fmt: str, out: Path | None, save: bool) -> None:
    """``bench report`` of a ``bench profile`` folder: its timing tables, no plots."""
    from bench.results.frame import load_profile_frame
    from bench.results.profile_report import render_profile

    frame = load_profile_frame(run_dir)
    title = f"sde-bench profile: {run_dir}"
    click.echo(
        frame.to_csv(index=False)
        if fmt == "csv"
        else render_profile(frame, title, markdown=fmt == "markdown"),
        nl=False,
    )
    if save:
        folder = _folder(run_dir, out)
        _write(folder / "report.txt", render_profile(frame, title))
        _write(folder / "report.md", render_profile(frame, title, markdown=True))
        click.echo(
            f"wrote 2 files to {folder} (a `bench profile` folder: timing tables, no plots)",
            err=True,
        )


def write_report_files(report: Any, folder: Path, *, parquet: bool = False) -> list[Path]:
    """report.txt, report.md, summary.csv, paired.csv (with a baseline), summary.parquet."""
    from bench.results.report import render

    written = [
        _write(folder / "report.txt", render(report)),
        _write(folder / "report.md", render(report, markdown=True)),
        _write(folder / "summary.csv", report.summary.to_csv(index=False)),
    ]
    if not report.paired.empty:
        written.append(_write(folder / "paired.csv", report.paired.to_csv(index=False)))
    if parquet:
        written.append(write_parquet(report.summary, folder / "summary.parquet"))
    return written


def write_parquet(frame: Any, path: Path) -> Path:
    """Write a frame as parquet; a clear error when no parquet engine is installed."""
    from bench.errors import BenchError

    try:
        _parquet_safe(frame).to_parquet(path, index=False)
    except ImportError as exc:
        raise BenchError(
            f"summary.parquet not written: parquet output needs pyarrow "
            f"(pip install 'sde-bench[parquet]', or pip install pyarrow): {exc}"
        ) from None
    return path


def _parquet_safe(frame: Any) -> Any:
    """Columns mixing numbers and text (``fid_n`` = ``64`` in one group, ``64–360`` in
    another) as text, since a parquet column has one type."""
    from pandas.api.types import is_object_dtype

    out = frame.copy()
    for col in out.columns:
        kinds = {type(v) for v in out[col].dropna()} if is_object_dtype(out[col]) else set()
        if len(kinds) > 1:
            out[col] = out[col].map(lambda v: v if v is None else str(v))
    return out


def _plots(session: Any, report: Any, run_dir: Path, folder: Path) -> list[Path]:
    from bench.results.report_plots import plot_report

    base = run_dir if run_dir.is_dir() else run_dir.parent
    samples = [p / "samples" for p in _runs(base) if (p / "samples").is_dir()]
    return plot_report(
        report, folder, samples_dir=samples[0] if samples else None, target=_target_sampler(session)
    )


def _runs(path: Path) -> list[Path]:
    from bench.results.frame import run_folders

    return [p for p in run_folders(path) if p.is_dir()]


def _target_sampler(session: Any):
    """``(model spec, n) → exact samples`` for exact models (None when unavailable)."""

    def target(spec: str, n: int):
        import torch

        from bench.errors import BenchError, Unsupported
        from bench.run.setup import load_model

        try:
            model = load_model(session.registry, spec, torch.device("cpu"), torch.float64)
            data = model.sample_data(n, torch.Generator().manual_seed(2021))
        except (BenchError, Unsupported):
            return None
        return data.reshape(n, -1).numpy()

    return target


# -- bench compare --------------------------------------------------------------------------------
@click.command("compare")
@click.argument("baseline", type=click.Path(exists=True, path_type=Path))
@click.argument("current", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME[,NAME]",
    help="Columns to gate (repeatable) [default: pyproject, else every metric + nfe].",
)
@click.option(
    "--max-regression",
    multiple=True,
    metavar="[METRIC=]TOL",
    help="Tolerated worsening: 5% (of the baseline value), 0.01 (absolute) or 5%+0.01; "
    "METRIC=TOL for one metric (repeatable) [default: pyproject, else 0].",
)
@click.option(
    "--confidence",
    type=click.FloatRange(0.5, 1, max_open=True),
    default=None,
    help="Level of the noise intervals [default: pyproject, else 0.95].",
)
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Do not fail when baseline cells are missing from CURRENT (they are listed).",
)
@click.option(
    "--rename",
    "renames",
    multiple=True,
    metavar="COLUMN.NEW=OLD",
    help="Map a config value of CURRENT before matching, e.g. "
    "predictor.my_rd=reverse_diffusion (repeatable).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown"]),
    default="text",
    show_default=True,
    help="What to print.",
)
@click.option(
    "--markdown",
    "markdown_file",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Also append the Markdown report to FILE (e.g. $GITHUB_STEP_SUMMARY).",
)
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(path_type=Path),
    default=None,
    metavar="FILE",
    help="Write every comparison row to FILE as CSV.",
)
@click.option("--all", "show_all", is_flag=True, help="List identical values too.")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="pyproject.toml with [tool.sde-bench.compare] "
    "[default: the nearest one above the working directory].",
)
@click.option("--no-config", is_flag=True, help="Ignore pyproject.toml.")
@click.pass_obj
def compare_command(
    session: Any,
    baseline: Path,
    current: Path,
    metrics: tuple[str, ...],
    max_regression: tuple[str, ...],
    confidence: float | None,
    allow_missing: bool,
    renames: tuple[str, ...],
    fmt: str,
    markdown_file: Path | None,
    csv_file: Path | None,
    show_all: bool,
    config: Path | None,
    no_config: bool,
) -> None:
    """Compare CURRENT against BASELINE cell by cell; exit 1 on a regression.

    Cells are matched by config (seeds are replicates, averaged on each side). A change for the
    worse fails when it exceeds both its tolerance and its noise (the CI of the change over
    seeds); a status that turns non-ok and a baseline cell missing from CURRENT fail too.
    Exit status: 0 pass, 1 regression, 2 usage error.

    \b
    Examples:
      bench compare results/baseline results/new
      bench compare old new --metric fid --max-regression 5%
      bench compare old new --max-regression 2% --max-regression nfe=0 --format markdown
    """
    from bench.results.compare import compare
    from bench.results.compare_settings import find_pyproject, read_pyproject, settings_from
    from bench.results.compare_text import render_comparison
    from bench.results.frame import Directions, load_frame

    table = {} if no_config else read_pyproject(config or find_pyproject())
    settings = settings_from(
        table,
        metrics=_split(metrics),
        max_regression=max_regression,
        confidence=confidence,
        allow_missing=allow_missing,
        renames=renames,
    )
    result = compare(
        load_frame(baseline),
        load_frame(current),
        settings,
        Directions.from_registry(session.registry),
    )
    names = (str(baseline), str(current))
    click.echo(
        render_comparison(result, *names, markdown=fmt == "markdown", show_all=show_all), nl=False
    )
    if markdown_file is not None:
        with open(markdown_file, "a", encoding="utf-8") as f:
            f.write(render_comparison(result, *names, markdown=True, show_all=show_all))
    if csv_file is not None:
        _write(csv_file, result.table.to_csv(index=False))
    sys.exit(1 if result.failed else 0)
