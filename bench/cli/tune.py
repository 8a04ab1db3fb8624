"""``bench tune-snr``: the Langevin SNR that optimises a metric, per sampler configuration, with
its uncertainty (the search: :mod:`bench.run.tune`)."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import click

from bench.cli.params import CommaList, NumberList, ThreadsParam


@click.command("tune-snr")
@click.option("--model", default="ring8", show_default=True, metavar="NAME[:ARG]")
@click.option(
    "--sdes",
    type=CommaList(),
    default=None,
    help="[default: the model's own SDE, else ve,vp,subvp]",
)
@click.option(
    "--predictors", type=CommaList(), default="reverse_diffusion", show_default=True,
    help="Predictors (none: corrector-only sampling).",
)  # fmt: skip
@click.option("--correctors", type=CommaList(), default="langevin", show_default=True)
@click.option(
    "--steps", type=NumberList(int, 1), default=None,
    help="Numbers of steps N [default: the model's grid, else 100,1000].",
)  # fmt: skip
@click.option("--corrector-steps", type=NumberList(int, 1), default="1", show_default=True)
@click.option(
    "--probability-flow", type=click.Choice(["off", "on", "both"]), default="off",
    is_flag=False, flag_value="on", show_default=True,
)  # fmt: skip
@click.option(
    "--metric", default=None,
    help="Column to optimise [default: fid on image models, logp_gap on exact models].",
)  # fmt: skip
@click.option(
    "--metrics", type=CommaList(), default=None,
    help="Metrics computed [default: the model's, plus the one --metric needs].",
)  # fmt: skip
@click.option(
    "--coarse", type=NumberList(float, 0, inclusive=False), default="0.01,0.02,0.04,0.08,0.16,0.32",
    show_default=True, help="The first grid of SNRs.",
)  # fmt: skip
@click.option(
    "--include", type=NumberList(float, 0, inclusive=False), default="0.16", show_default=True,
    help="SNRs always evaluated and compared with the tuned one (the paper's 0.16).",
)  # fmt: skip
@click.option(
    "--budget", type=click.IntRange(min=1), default=36, show_default=True,
    help="Most corrector cells (SNRs × seeds) per configuration.",
)  # fmt: skip
@click.option(
    "--resolution", type=click.FloatRange(min=0, min_open=True), default=0.01,
    show_default=True, help="Finest SNR step (the paper's grid).",
)  # fmt: skip
@click.option("--confidence", type=click.FloatRange(0.5, 1, max_open=True), default=0.95)
@click.option(
    "--baselines", type=CommaList(), default="same", show_default=True,
    help="Predictors run without a corrector at the same steps and seeds, compared with the "
    "tuned sampler (same: the tuned predictor; none: no baseline).",
)  # fmt: skip
@click.option("--seeds", default="0-2", show_default=True, metavar="SEEDS")
@click.option("--samples", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--fid-weights", default=None, metavar="PATH", envvar="BENCH_FID_WEIGHTS")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:K]")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32")
@click.option("--threads", type=ThreadsParam(), default="auto", show_default=True)
@click.option("--eps", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None)
@click.option("--denoise/--no-denoise", default=True, show_default=True)
@click.option("-o", "--option", "options", multiple=True, metavar="[KIND.]NAME.KEY=VALUE")
@click.option("--out", default=None, metavar="DIR", help="[default: results/tune-<timestamp>]")
@click.option("--fail-fast", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a TTY].")
@click.pass_obj
def tune_snr_command(session: Any, **kw: Any) -> None:
    """Find the Langevin SNR that optimises a metric, for each SDE × predictor × corrector ×
    steps, on common random numbers (paired comparisons between SNRs).

    \b
    A coarse grid, then bisection around the best while a neighbour is significantly worse
    (paired CI over seeds); stops inside the noise, at --resolution or at --budget. Prints the
    curve with CIs, the chosen SNR with the SNRs indistinguishable from it, and comparisons
    with --include SNRs and --baselines; the cells are rows of a run folder (bench report,
    bench compare) and tune.json holds the outcome. Rerun the same command to resume.
    Examples:
      bench tune-snr --model ring8 --sdes ve --steps 100 --samples 2000
      bench tune-snr --model digits-ve --steps 100 --samples 360 --baselines euler_maruyama,same
    """
    from bench.errors import BenchError
    from bench.run import tune
    from bench.run.setup import canonical
    from bench.run.sweep import Sweep

    kw["out"] = kw["out"] or f"results/tune-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    sweep = Sweep.from_cli(session, _sweep_options(kw), set())
    if not sweep.spec.metrics and not kw["metrics"]:
        raise BenchError("tune-snr needs a metric")
    metric, sign = _metric(session.registry, sweep.model, kw["metric"])
    sweep = _with_metric(session.registry, sweep, metric, kw["metrics"])
    search = tune.Search(
        metric=metric,
        sign=sign,
        coarse=tuple(kw["coarse"]),
        budget=kw["budget"],
        resolution=kw["resolution"],
        confidence=kw["confidence"],
    )
    outcomes = []
    with tune.SweepRunner(sweep) as runner:
        for target in _targets(sweep.spec):
            if target.corrector == "none":
                continue
            base = tuple(target.predictor if b == "same" else b for b in kw["baselines"])
            base = canonical(session.registry, "predictors", tuple(b for b in base if b != "none"))
            try:
                outcome = tune.tune_target(
                    runner, target, search, tuple(kw["include"]), base, say=_say
                )
            except tune.TargetUnsupported as exc:
                _say(f"skipped {exc}")
                continue
            outcomes.append(_jsonable(outcome.as_dict()))
        if not outcomes:
            raise BenchError("no configuration could be tuned (every one is unsupported)")
        _finish(sweep, runner, outcomes)
    click.echo(json.dumps(outcomes, indent=2) if kw["as_json"] else render(outcomes))
    _say(f"results: {sweep.store.path} (bench report {sweep.store.path})")


def _jsonable(value: Any) -> Any:
    """NaN (unknown) as null and ±inf (a diverged value) as "inf"/"-inf": strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _sweep_options(kw: dict[str, Any]) -> dict[str, Any]:
    """``bench run``'s options for the cells (the SNRs are set per round)."""
    keep: tuple[str, ...] = ("model", "sdes", "predictors", "correctors", "steps")
    keep += ("corrector_steps", "probability_flow", "seeds", "samples", "batch_size", "metrics")
    keep += ("fid_weights", "device", "dtype", "threads", "eps", "denoise", "options", "out")
    keep += ("fail_fast",)
    out = {k: kw[k] for k in keep}
    out.update(
        samplers=("pc",), schedules=None, snrs=(0.16,), save_samples=False, resume=None,
        new_run=False, dry_run=False, tf32=None, compile_mode=None, progress=kw["progress"],
    )  # fmt: skip
    return out


def _metric(registry: Any, model: Any, name: str | None) -> tuple[str, int]:
    """The column to optimise and its sign (+1: minimise)."""
    from bench.errors import BenchError
    from bench.results.frame import Directions

    name = name or ("logp_gap" if model.exact else "fid")
    direction = Directions.from_registry(registry)(name)
    if direction == "info":
        raise BenchError(f"{name!r} is informational (no better direction); choose a distance")
    return name, 1 if direction == "lower" else -1


def _with_metric(registry: Any, sweep: Any, metric: str, asked: tuple[str, ...] | None) -> Any:
    """The sweep with the metric that returns ``metric`` among its metrics."""
    import dataclasses

    from bench.errors import BenchError
    from bench.results.frame import Directions

    owner = Directions.from_registry(registry).owner(metric)
    if owner is None:
        raise BenchError(f"no registered metric returns the column {metric!r}")
    metrics = tuple(sweep.spec.metrics)
    if owner.name not in metrics:
        if asked:
            raise BenchError(f"--metrics must include {owner.name!r} to optimise {metric!r}")
        metrics = (*metrics, owner.name)
    return dataclasses.replace(sweep, spec=dataclasses.replace(sweep.spec, metrics=metrics))


def _targets(spec: Any) -> list[Any]:
    import itertools

    from bench.run.tune import Target

    product = itertools.product(
        spec.sdes, spec.predictors, spec.correctors, spec.steps, spec.corrector_steps,
        spec.probability_flow,
    )  # fmt: skip
    return [Target(*p) for p in product]


def _finish(sweep: Any, runner: Any, outcomes: list[dict[str, Any]]) -> None:
    """tune.json, and run.json with the tuning and every SNR evaluated."""
    from bench.run.store import atomic_write

    meta = sweep.store.read_meta()
    snrs = sorted(runner.snrs)
    meta["grid"]["snrs"] = snrs
    meta["invocation"]["options"]["snrs"] = snrs
    meta["invocation"]["argv"] = sys.argv
    meta["tune"] = outcomes
    sweep.store.write_meta(meta)
    text = json.dumps(outcomes, indent=2) + "\n"
    atomic_write(sweep.store.path / "tune.json", text)


def render(outcomes: list[dict[str, Any]]) -> str:
    """The curves, choices and comparisons as text."""
    lines = []
    for o in outcomes:
        t = o["target"]
        pf = "(pf)" if t["probability_flow"] else ""
        lines.append(
            f"\n{t['sde']} {t['predictor']}{pf}+{t['corrector']} N={t['steps']} "
            f"(corrector steps {t['corrector_steps']}) — {o['metric']}"
        )
        lines.append(f"  {'snr':>6}  {'mean ± ci':>22}  {'Δ vs chosen ± paired ci':>26}")
        for row in o["curve"]:
            mark = " ←" if row["snr"] == o["chosen"] else ("" if row["worse"] else " ~")
            lines.append(
                f"  {row['snr']:6.3g}  {_pm(row['mean'], row['ci']):>22}  "
                f"{_pm(row['diff_vs_best'], row['diff_ci'], signed=True):>26}{mark}"
            )
        lo, hi = o["plausible"]
        left, right = o["bracket"]
        lines.append(
            f"  chosen snr {o['chosen']:g}; not significantly worse: {lo:g}–{hi:g}; "
            f"bracket ({_g(left)}, {_g(right)}); stopped: {o['stop']}; cells {o['cells']}"
        )
        for c in o["comparisons"]:
            if "diff" not in c:
                lines.append(f"  vs {c['against']}: {c['verdict']}")
                continue
            lines.append(
                f"  vs {c['against']}: {_pm(c['value'], c['value_ci'])}; tuned − it = "
                f"{_pm(c['diff'], c['diff_ci'], signed=True)} → {c['verdict']}"
            )
    lines.append("\n~ : not significantly worse than the chosen SNR (paired interval over seeds)")
    return "\n".join(lines)


def _pm(mean: Any, ci: Any, signed: bool = False) -> str:
    """``mean ± ci`` from JSON-ready values (null: unknown; "inf": diverged)."""
    if mean in ("inf", "-inf"):
        return "diverged" if mean == "inf" else "-inf"
    if mean is None:
        return "–"
    text = f"{mean:+.4g}" if signed else f"{mean:.4g}"
    return text if ci is None or ci == "inf" else f"{text} ± {ci:.2g}"


def _g(value: float | None) -> str:
    return "edge" if value is None else f"{value:g}"


def _say(message: str) -> None:
    print(message, file=sys.stderr)
