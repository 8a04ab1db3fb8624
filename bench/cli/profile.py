"""``bench profile``: the loop's own cost against the bare score function and a minimal loop."""

from __future__ import annotations

import click

from bench.cli.params import ThreadsParam, compile_option, dtype_option


@click.command("profile")
@click.option("--model", default="ring8", show_default=True, metavar="NAME[:ARG]")
@click.option("--sde", default="ve", show_default=True)
@click.option("--predictor", default="reverse_diffusion", show_default=True)
@click.option("--corrector", default="langevin", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--snr", type=click.FloatRange(min=0), default=0.16, show_default=True)
@click.option("--corrector-steps", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="Full runs of each loop variant (interleaved); the median is reported.",
)
@click.option(
    "--calls",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Score calls per bare-forward block.",
)
@click.option("--device", default="auto", show_default=True)
@dtype_option("bf16/fp16: the score function under autocast, sampler state in float32.")
@compile_option("torch.compile the network (bare flag: default; reduce-overhead: CUDA graphs).")
@click.option("--threads", type=ThreadsParam(), default="auto", show_default=True)
@click.option("-o", "--option", "options", multiple=True, metavar="[KIND.]NAME.KEY=VALUE")
@click.option("--out", default=None, metavar="DIR", help="Also write the rows to DIR/results.csv.")
@click.pass_obj
def profile_command(session, **kw) -> None:
    """Time the PC loop against the bare score evaluations it makes.

    \b
    Reports, on the same inputs: the bare batched score call, the suite's loop, a minimal
    hand-written loop doing the same arithmetic, and the reference code's loop structure,
    with the overhead ratios between them (median of --repeats runs, device-synchronised).
    Example:
      bench profile --model ring8 --sde ve --batch-size 64 --steps 2000
    """
    from bench.run.profile_command import run_profile

    run_profile(session, kw)
