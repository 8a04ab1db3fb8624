"""``bench order``: a sampler's convergence order on an exact Gaussian oracle: deterministic
(against the probability flow), weak and strong (stochastic samplers)."""

from __future__ import annotations

import click

from bench.cli.params import CommaList, NumberList


@click.command("order")
@click.option(
    "--samplers",
    type=CommaList(),
    required=True,
    help="Samplers: built-ins, plugins (-p FILE) and diffusers:CLASS.",
)
@click.option(
    "--kind",
    type=CommaList(),
    default=None,
    metavar="LIST",
    help="flow (deterministic samplers), weak, strong (stochastic samplers) [default: flow].",
)
@click.option("--sdes", type=CommaList(), default=None, help="SDEs [default: ve,vp,subvp].")
@click.option(
    "--schedules",
    type=CommaList(),
    default=None,
    metavar="LIST",
    help="Time schedules: uniform, edm, logsnr, quadratic [default: each sampler's own].",
)
@click.option(
    "--steps",
    type=NumberList(int, 2),
    default=None,
    help="Numbers of steps N [default: flow 8,12,16,…,512,768 (stops below 1e-11, "
    "round-off); weak 8,…,384; strong 8,…,256].",
)
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="[KIND.]NAME.KEY=VALUE",
    help="Component option, e.g. -o unipc.order=3 (repeatable).",
)
@click.option(
    "--plot",
    default=None,
    metavar="PATH",
    help="Error against NFE, PNG [default: results/order-<UTC timestamp>.png].",
)
@click.option("--no-plot", is_flag=True, help="Draw no plot.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable rows on stdout.")
@click.pass_obj
def order_command(session, **kw) -> None:
    """Measure each sampler's convergence order on an exact Gaussian oracle.

    Every sampler runs from the same x_T (32 samples, float64) on data N(0.5, 0.2²·I), whose
    probability-flow map is closed form. The error at each N is the RMS distance to the exact
    limit: the flow from the sampler's first model evaluation to its last, then the exact
    denoiser (every sampler's last step into σ = 0). The order is the least-squares slope of
    log(error) against log(N) over the upper half of the points above 1e-11; the interval holds
    the regression's 95% confidence interval, the local slopes there and their extrapolation
    to N → ∞. The counted NFE stands beside the nominal one. With --kind flow (the default) a
    sampler that draws noise is refused with exit status 2.

    --kind weak: the exact mean and variance of the final sample (the sampler is affine in its
    noise on Gaussian data, so they are read off a design run: no Monte-Carlo error) started
    from the exact marginal at T, against the denoised marginal at its last evaluation time.
    --kind strong: the RMS distance per sample to the same sampler's solution at 16 times the
    largest N on the same Brownian path (64 samples, seed 0); a sampler that draws per-step
    noise instead of the path does not converge, and its row says so.

    \b
    Examples:
      bench order --samplers euler,heun,dpmpp_2m --sdes vp
      bench -p my_heun.py order --samplers my_heun,heun --sdes vp,ve
      bench order --samplers unipc -o unipc.order=3 --schedules edm,logsnr --json
      bench order --samplers diffusers:EulerDiscreteScheduler --sdes vp
      bench order --samplers euler_ancestral,dpmpp_2m_sde --kind weak,strong --sdes vp
    """
    import json
    import time
    from pathlib import Path

    from bench.results.order_report import plot, report
    from bench.run.order_command import order_rows
    from bench.run.sweep import say

    rows = order_rows(session.registry, kw)
    if as_json := kw["as_json"]:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(report(rows))
    if not kw["no_plot"] and any(r["status"] == "ok" for r in rows):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        path = plot(rows, Path(kw["plot"] or f"results/order-{stamp}.png"))
        if as_json:
            say(f"plot: {path}")  # stdout stays JSON
        else:
            click.echo(f"\nplot: {path}")
