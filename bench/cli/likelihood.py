"""``bench likelihood``: negative log-likelihood of data in bits/dim through the probability-flow
ODE (Song et al. 2021, App. D.2, Eq. 39–40)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bench.cli.params import CommaList, ThreadsParam


@click.command("likelihood")
@click.option("--model", default="gauss1d", show_default=True, metavar="NAME[:ARG]")
@click.option(
    "--sdes",
    type=CommaList(),
    default=None,
    help="SDEs [default: the model's own SDE if it was trained for one, else ve,vp,subvp].",
)
@click.option(
    "--data",
    default=None,
    metavar="exact|NAME[:ARG]",
    help="The points: 'exact' (draws from an exact model's p_0, seed 2022) or a dataset "
    "[default: the model's own data].",
)
@click.option("--split", default=None, help="Dataset split [default: test where there is one].")
@click.option(
    "--points",
    type=click.IntRange(min=1),
    default=None,
    help="Data points: the first N of the split [default: all; exact draws: 1000].",
)
@click.option(
    "--probes", type=click.IntRange(min=1), default=1, show_default=True, help="Probes per point."
)
@click.option(
    "--hutchinson",
    type=click.Choice(["rademacher", "gaussian", "exact"]),
    default="rademacher",
    show_default=True,
    help="Trace estimator: Hutchinson's probes, or the exact trace (D VJPs per evaluation).",
)
@click.option(
    "--rtol", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True
)
@click.option(
    "--atol", type=click.FloatRange(min=0, min_open=True), default=1e-5, show_default=True
)
@click.option(
    "--eps",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-5,
    show_default=True,
    help="Start time of the integration (the reference: 1e-5 for every SDE).",
)
@click.option(
    "--method",
    type=click.Choice(["RK45", "RK23", "DOP853"]),
    default="RK45",
    show_default=True,
    help="scipy's adaptive Runge–Kutta method.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Points per ODE solve (one flattened state; they share the solver's steps).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Solves per point with fresh dequantisation noise and probes (the paper: 5).",
)
@click.option(
    "--dequantize/--no-dequantize",
    default=None,
    help="Uniform dequantisation of 8-bit levels [default: on for dataset images, off for "
    "exact draws].",
)
@click.option(
    "--prior",
    type=click.Choice(["sde", "exact"]),
    default="sde",
    show_default=True,
    help="log p_T: the SDE's prior (as the reference) or an exact model's marginal at T.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:K]")
@click.option(
    "--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True
)
@click.option("--threads", type=ThreadsParam(), default="auto", show_default=True)
@click.option("-o", "--option", "options", multiple=True, metavar="[KIND.]NAME.KEY=VALUE")
@click.option("--json", "as_json", is_flag=True, help="Print the summaries as JSON.")
@click.option(
    "--out", default=None, metavar="FILE", help="Also write the summaries to FILE (JSON)."
)
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a TTY].")
@click.pass_obj
def likelihood_command(session: Any, **kw: Any) -> None:
    """Negative log-likelihood of data (not samples) through the probability-flow ODE.

    \b
    Integrates dx/dt = f − ½g²s and d(Δlogp)/dt = ∇·(f − ½g²s) from the data (t = eps) to
    the prior (Eq. 39), the divergence by Hutchinson's estimator (Eq. 40; one forward and one
    vector–Jacobian product per probe per evaluation), with scipy's RK45 over each batch as one
    vector. Reports nats and bits/dim in data space (8-bit images: uniformly dequantised,
    +8 offset) with a 95 % interval over data points, the NFE and the time.
    Examples:
      bench likelihood --model digits-ve
      bench likelihood --model ring8 --sdes vp --points 500 --hutchinson exact --prior exact
    """
    rows = run_likelihood(session, kw)
    text = json.dumps([_no_nan(r) for r in rows], indent=2, default=str)
    click.echo(text if kw["as_json"] else render(rows))
    if kw["out"]:
        from pathlib import Path

        Path(kw["out"]).write_text(text + "\n")


def _no_nan(row: dict[str, Any]) -> dict[str, Any]:
    """NaN (an unknown value) as JSON null."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in row.items()}


def run_likelihood(session: Any, kw: dict[str, Any]) -> list[dict[str, Any]]:
    """One summary per SDE (see :meth:`bench.likelihood.Likelihood.summary`)."""
    import torch

    import bench
    from bench.errors import BenchError, Unsupported
    from bench.likelihood import Settings, evaluate, evaluation_points
    from bench.run.components import Components
    from bench.run.setup import Environment

    env = Environment.create(session.registry, {**kw, "eps": None})
    torch.set_num_threads(env.threads)
    settings = Settings(
        **{k: kw[k] for k in ("probes", "hutchinson", "rtol", "atol", "eps", "method", "seed")},
        batch_size=kw["batch_size"],
        repeats=kw["repeats"],
        dequantize=kw["dequantize"],
        prior=kw["prior"],
    )
    points, text = evaluation_points(
        env.model, env.metric_context(), kw["data"], kw["split"], kw["points"]
    )
    progress = sys.stderr.isatty() if kw["progress"] is None else kw["progress"]
    parts, rows = Components(env), []
    for name in env.sdes:
        sde = parts.sde(name, 1000)
        try:
            env.model.check_sde(sde)
        except Unsupported as exc:
            raise BenchError(exc.reason) from None
        result = evaluate(
            env.model,
            sde,
            points,
            settings,
            device=env.device,
            dtype=env.state_dtype,
            data=text,
            progress=progress,
        )
        row = {"model": env.model.spec, **result.summary()}
        row.update(device=str(env.device), threads=env.threads, sde_bench=bench.__version__)
        row["sde_options"] = {k: v for k, v in sde.describe().items() if k != "N"}
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """A terminal table: nats and bits/dim with their intervals, NFE, VJPs and time."""
    from bench.results.textui import table

    shown = []
    for r in rows:
        probe = r["bpd_probe_se"]
        shown.append(
            {
                "model": r["model"],
                "sde": r["sde"],
                "points": r["points"],
                "nll (nats)": f"{r['nll']:.4f} ± {r['nll_ci']:.4f}",
                "bits/dim": f"{r['bpd']:.4f} ± {r['bpd_ci']:.4f}",
                "probe se (bpd)": "-" if probe != probe else f"{probe:.4f}",
                "nfe": f"{r['nfe']:.0f} [{r['nfe_min']}–{r['nfe_max']}]",
                "vjp": f"{r['vjp']:.0f}",
                "time (s)": f"{r['seconds']:.1f}",
            }
        )
    first = rows[0]
    exact = [
        f"{r['sde']}: closed-form nll {r['nll_exact']:.4f}, error {r['nll_error']:+.2e} "
        f"± {r['nll_error_ci']:.1e} (max |error| {r['nll_error_max']:.1e})"
        for r in rows
        if "nll_exact" in r
    ]
    notes = [
        f"data: {first['data']}; "
        + (
            "uniformly dequantised 8-bit levels, bits/dim with the +8 offset"
            if first["dequantized"]
            else "continuous (no dequantisation, no offset)"
        ),
        f"± 95 % interval over data points; probes {first['setting_probes']} "
        f"({first['setting_hutchinson']}), repeats {first['setting_repeats']}, "
        f"{first['setting_method']} rtol {first['setting_rtol']:g} atol {first['setting_atol']:g}, "
        f"eps {first['setting_eps']:g}, prior {first['setting_prior']}",
        "nfe: forward evaluations per point (= solver evaluations) [min–max over solves]; "
        "vjp: vector–Jacobian products per point",
        *exact,
    ]
    return table(shown, list(shown[0])) + "\n" + "\n".join(notes)
