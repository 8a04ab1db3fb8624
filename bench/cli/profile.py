"""``bench profile``: the loop's own cost against the bare score function and a minimal loop."""

from __future__ import annotations

import click

from bench.cli.params import ThreadsParam, compile_option, dtype_option, guidance_batch_option


@click.command("profile")
@click.option("--model", default="ring8", show_default=True, metavar="NAME[:ARG]")
@click.option("--sde", default=None, help="[default: the model's own SDE, else ve]")
@click.option("--sampler", default="pc", show_default=True, help="Any registered sampler.")
@click.option("--schedule", default=None, metavar="NAME[:ARG]", help="[default: the sampler's own]")
@click.option("--predictor", default="reverse_diffusion", show_default=True, help="PC only.")
@click.option("--corrector", default="langevin", show_default=True, help="PC only.")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--snr", type=click.FloatRange(min=0), default=0.16, show_default=True)
@click.option("--corrector-steps", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--guidance",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Guidance scale of a class-conditional model's loop; such a model also times a guided "
    "evaluation as one forward of 2B against two forwards of B.",
)
@guidance_batch_option()
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
@click.option(
    "--tf32/--no-tf32", default=None, help="Allow TF32 on CUDA [default: torch's setting]."
)
@compile_option("torch.compile the network (bare flag: default; reduce-overhead: CUDA graphs).")
@click.option("--threads", type=ThreadsParam(), default="auto", show_default=True)
@click.option(
    "--eps",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Smallest time [default: 1e-5 VE, 1e-3 VP and sub-VP].",
)
@click.option("-o", "--option", "options", multiple=True, metavar="[KIND.]NAME.KEY=VALUE")
@click.option("--out", default=None, metavar="DIR", help="Also write the rows to DIR/results.csv.")
@click.pass_obj
def profile_command(session, **kw) -> None:
    """Time a sampler's loop against the bare model evaluations it makes.

    \b
    Reports, on the same inputs: the bare batched model call, the suite's loop and, for the
    paper's PC samplers on the uniform grid, a minimal hand-written loop doing the same
    arithmetic and the reference code's loop structure, with the overhead ratios between them
    (median of --repeats runs, device-synchronised).
    Examples:
      bench profile --model ring8 --sde ve --batch-size 64 --steps 2000
      bench profile --model digits-vp --sampler heun --steps 18
      bench profile --model digits-cond --sampler dpmpp_2m --steps 20 --guidance 4
    """
    from bench.run.profile_command import run_profile

    run_profile(session, kw)
