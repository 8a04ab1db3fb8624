"""``bench run``: the sweep command."""

from __future__ import annotations

import click

from bench.cli.params import (
    CommaList,
    IntervalParam,
    NumberList,
    ThreadsParam,
    compile_option,
    dtype_option,
    guidance_batch_option,
)
from bench.run.defaults import DEFAULTS


def _default(key: str) -> str:
    value = DEFAULTS[key]
    text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return f"[default: the model's, else {text}]"


@click.command("run")
@click.option(
    "--model",
    default="ring8",
    show_default=True,
    metavar="NAME[:ARG]",
    help="Score model: ring8, gauss1d, gmm64, gmm:PATH.json, digits-ve|vp|subvp, "
    "ring8-cond and digits-cond (class-conditional), "
    "score:DIR (bench train output), diffusers:PATH_OR_ID.",
)
@click.option(
    "--sdes",
    type=CommaList(),
    default=None,
    help="SDEs to sweep [default: the model's own SDE if it was trained for one, "
    "else ve,vp,subvp].",
)
@click.option(
    "--samplers",
    type=CommaList(),
    default=None,
    help="Samplers to sweep: pc (the predictor–corrector family) and whole samplers "
    "[default: pc]. Giving --predictors or another PC option adds pc.",
)
@click.option(
    "--schedules",
    type=CommaList(),
    default=None,
    metavar="LIST",
    help="Time schedules: uniform, edm, logsnr, quadratic, file:PATH "
    "[default: each sampler's own; uniform for pc].",
)
@click.option(
    "--predictors",
    type=CommaList(),
    default=None,
    help=f"Predictors of the PC cells (aliases: euler, rd, ancestral) {_default('predictors')}.",
)
@click.option(
    "--correctors",
    type=CommaList(),
    default=None,
    help=f"Correctors of the PC cells {_default('correctors')}.",
)
@click.option(
    "--steps",
    type=NumberList(int, 1),
    default=None,
    help=f"Numbers of steps N {_default('steps')}.",
)
@click.option(
    "--snr",
    "snrs",
    type=NumberList(float, 0),
    default=None,
    help=f"Langevin signal-to-noise ratios r (corrector cells only) {_default('snrs')}.",
)
@click.option(
    "--corrector-steps",
    type=NumberList(int, 1),
    default="1",
    show_default=True,
    help="Corrector iterations per noise level.",
)
@click.option(
    "--probability-flow",
    type=click.Choice(["off", "on", "both"]),
    default="off",
    is_flag=False,
    flag_value="on",
    show_default=True,
    help="Use the predictors' probability-flow variants (bare flag = on).",
)
@click.option(
    "--guidance",
    type=NumberList(float, 0),
    default=None,
    metavar="LIST",
    help="Classifier-free guidance scales s of eps(null) + s*(eps(c) - eps(null)), diffusers' "
    "guidance_scale (1: the conditional model; papers' w = s - 1); class-conditional models "
    "only [default: 1].",
)
@click.option(
    "--labels",
    default=None,
    metavar="balanced|random|K",
    help="Class of each sample of a conditional model: i mod C, a seeded draw, or class K "
    "[default: balanced].",
)
@click.option(
    "--guidance-interval",
    type=IntervalParam(),
    default=None,
    help="Guide only at noise levels sigma = std/a in (LO, HI] (Kynkäänniemi et al. 2024); "
    "one network pass outside it [default: everywhere].",
)
@guidance_batch_option()
@click.option(
    "--seeds",
    default=None,
    metavar="SEEDS",
    help=f"Seeds, e.g. 0-3 or 1,2,5-10; a seed fixes every sample's prior noise "
    f"{_default('seeds')}.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=None,
    help=f"Samples per cell (the metrics' n) {_default('samples')}.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help=f"Samples per sampling batch {_default('batch_size')}.",
)
@click.option(
    "--metrics",
    type=CommaList(),
    default=None,
    help="Metrics, or none [default: the model's: swd,fd,logp,coverage for mixtures, "
    "fid,kid for image models].",
)
@click.option(
    "--fid-weights",
    default=None,
    metavar="PATH",
    envvar="BENCH_FID_WEIGHTS",
    show_envvar=True,
    help="Inception weights file: FID/KID with the standard inception-v3-compat "
    "extractor instead of the digits classifier.",
)
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:K]")
@dtype_option("Sampler state dtype; bf16/fp16 run the network under autocast, state in float32.")
@click.option(
    "--tf32/--no-tf32",
    default=None,
    help="Allow TF32 matmuls/convolutions on CUDA [default: torch's setting]; recorded.",
)
@compile_option(
    "torch.compile the score network (bare flag: default; reduce-overhead = CUDA graphs)."
)
@click.option(
    "--threads",
    type=ThreadsParam(),
    default="auto",
    show_default=True,
    help="CPU threads (auto: 1 for exact-score models, else torch's default).",
)
@click.option(
    "--eps",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Smallest time for every SDE [default: 1e-5 VE, 1e-3 VP and sub-VP].",
)
@click.option(
    "--denoise/--no-denoise",
    default=True,
    show_default=True,
    help="Return the last step's x_mean (noise removal).",
)
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="[KIND.]NAME.KEY=VALUE",
    help="Component option, e.g. -o ve.sigma_max=90 (repeatable).",
)
@click.option(
    "--out", default=None, metavar="DIR", help="Run folder [default: results/<UTC timestamp>]."
)
@click.option(
    "--save-samples", is_flag=True, help="Write each cell's samples to samples/<cell>.npz."
)
@click.option(
    "--resume",
    default=None,
    metavar="DIR",
    help="Continue the run in DIR with its stored options (skips finished cells).",
)
@click.option(
    "--new-run",
    is_flag=True,
    help="If --out holds a run with other options, archive it and start again.",
)
@click.option("--fail-fast", is_flag=True, help="Stop at the first cell that ends in error.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the cells, their nominal NFE and an estimated run time, then exit.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bars [default: on a TTY].")
@click.pass_context
def run_command(ctx: click.Context, **kwargs) -> None:
    """Run a sweep: SDE × sampler × schedule × steps × seed, one row per cell.

    The predictor–corrector sampler (pc) expands over predictor × corrector × SNR × corrector
    steps; other samplers run as they are.

    \b
    Examples:
      bench run
      bench run --predictors euler,reverse_diffusion --correctors langevin
      bench run --samplers heun,ddim --schedules edm --steps 10,20 --dry-run
      bench run --model gauss1d --sdes vp --steps 10,100,1000 --seeds 0-3
      bench run --model gmm:my_mixture.json --snr 0.05,0.1,0.16,0.2 -o ve.sigma_max=10
      bench run --model ring8-cond --guidance 1,3 --labels balanced
      bench run --resume results/20261122-101500     # after a crash or Ctrl-C
    """
    from bench.run.sweep import Sweep

    given = {
        name
        for name in kwargs
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }
    if kwargs["resume"]:
        _add_stored_plugins(ctx.obj, kwargs["resume"])
    sweep = Sweep.from_cli(ctx.obj, kwargs, given)
    if sweep.dry_run:
        sweep.plan()
    else:
        sweep.run()  # Ctrl-C: exit 130 (bench.cli.BenchGroup)


def _add_stored_plugins(session, folder: str) -> None:
    """A resumed run loads the same -p modules and --plugins-dir folders as the original."""
    import json
    from pathlib import Path

    meta = Path(folder) / "run.json"
    if meta.is_file():
        stored = json.loads(meta.read_text()).get("invocation", {}).get("plugins", {})
        session.modules += [m for m in stored.get("modules", []) if m not in session.modules]
        session.dirs += [d for d in stored.get("dirs", []) if d not in session.dirs]
