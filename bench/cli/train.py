"""``bench train``: train a score network on an image dataset (continuous DSM, EMA, resumable)."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from bench.cli.params import ThreadsParam
from bench.errors import BenchError


@click.command("train")
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    metavar="NAME[:ARG]",
    help="Dataset plugin; its train split is used (all if it has none).",
)
@click.option(
    "--sde",
    "sde_name",
    default="ve",
    show_default=True,
    metavar="NAME",
    help="SDE to train for: ve, vp, subvp or flow.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Total optimisation steps (with --resume: train on up to this many).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Adam learning rate after warm-up.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Linear learning-rate warm-up steps.",
)
@click.option(
    "--grad-clip",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Gradient-norm clipping threshold.",
)
@click.option(
    "--ema",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.999,
    show_default=True,
    help="EMA rate of the saved weights.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--conditional",
    is_flag=True,
    help="Class-conditional network on the dataset's labels, with a null label for guidance.",
)
@click.option(
    "--label-dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="With --conditional: probability of training on the null label (0: no null label).",
)
@click.option(
    "--out", default=None, metavar="DIR", help="Model folder [default: models/<dataset>-<sde>]."
)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Write the checkpoint and the model folder every this many steps.",
)
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:K]")
@click.option(
    "--threads",
    type=ThreadsParam(),
    default="auto",
    show_default=True,
    help="CPU threads (auto: torch's default).",
)
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="SDE.KEY=VALUE",
    help="SDE hyperparameter, e.g. -o ve.sigma_max=5 (repeatable).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a TTY].")
@click.pass_obj
def train_command(session: Any, **kw: Any) -> None:
    """Train a time-conditioned score network with denoising score matching (λ = std²).

    VE networks are conditioned on log σ(t) and output the score times σ; VP and sub-VP networks
    are conditioned on t and predict the noise (Song et al. 2021, §3.3 and App. C; the reference code's get_score_fn). A flow network is
    conditioned on t and trained with the flow-matching loss ‖u − (z − x₀)‖² (a velocity model).
    The folder written to --out
    loads with --model score:DIR. Without -o ve.sigma_max, a VE run uses the max pairwise
    distance of the training data, rounded up (NCSNv2 Technique 1): 5 for digits.

    \b
    Examples:
      bench train --sde vp --steps 10000 --out models/digits-vp
      bench train --sde ve -o ve.sigma_max=5 --threads 2 --out models/digits-ve
      bench train --sde flow --steps 10000 --out models/digits-flow
      bench train --sde ve --steps 20000 --out models/digits-ve --resume
      bench train --sde vp --conditional --label-dropout 0.1 --out models/digits-cond
    """
    import torch

    from bench.run.setup import resolve_device
    from bench.training.train import Trainer

    registry = session.registry
    sde_cls = registry.get("sdes", kw["sde_name"]).obj
    dataset = load_dataset(registry, kw["dataset"])
    device = resolve_device(kw["device"])
    if kw["threads"] != "auto":
        torch.set_num_threads(int(kw["threads"]))
    cfg = build_config(sde_cls, dataset, kw)
    sde = sde_cls(1, sde_options(sde_cls, cfg.sde_options))
    out = Path(kw["out"] or f"models/{dataset.spec.partition(':')[0]}-{sde_cls.name}")
    check_out(out, kw["resume"])
    progress = sys.stderr.isatty() if kw["progress"] is None else kw["progress"]
    command = canonical_command(kw, cfg, out)
    Trainer(cfg, sde, dataset, out, device, command, progress).run(resume=kw["resume"])
    click.echo(f"model: {out}  (use --model score:{out})")


def canonical_command(kw: dict[str, Any], cfg: Any, out: Path) -> str:
    """The command that reproduces this run from scratch, every setting explicit.

    Run with the same --threads on CPU, it gives bit-identical weights (resuming included).
    """
    args = ["bench", "train", "--dataset", cfg.dataset, "--sde", cfg.sde]
    args += ["--conditional"] if kw["conditional"] else []
    for k, v in cfg.sde_options.items():
        args += ["-o", f"{cfg.sde}.{k}={v!r}"]
    for flag in (
        "steps",
        "batch_size",
        "lr",
        "warmup",
        "grad_clip",
        "ema",
        "seed",
        *(("label_dropout",) if kw["conditional"] else ()),
        "checkpoint_every",
        "device",
        "threads",
    ):
        args += ["--" + flag.replace("_", "-"), str(kw[flag])]
    return shlex.join([*args, "--out", str(out)])


def load_dataset(registry: Any, spec: str) -> Any:
    name, _, arg = spec.partition(":")
    return registry.get("datasets", name).obj.load(arg or None)


def parse_sde_options(sde_cls: type, items: tuple[str, ...]) -> dict[str, Any]:
    """``SDE.KEY=VALUE`` (or ``sdes.SDE.KEY=VALUE``) items for the trained SDE, typed."""
    from bench.core import options as opts

    values: dict[str, Any] = {}
    names = {sde_cls.name, *sde_cls.aliases}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if parts[0] in ("sde", "sdes"):
            parts = parts[1:]
        if not sep or len(parts) != 2 or parts[0] not in names:
            raise BenchError(f"option {item!r}: bench train takes {sde_cls.name}.KEY=VALUE only")
        if parts[1] == "eps":
            raise BenchError("eps is a sampling setting; training draws t ~ U(1e-5, 1)")
        values[parts[1]] = opts.coerce(
            sde_cls.Options, parts[1], text.strip(), f"SDE {sde_cls.name!r}"
        )
    return values


def sde_options(sde_cls: type, values: dict[str, Any]) -> Any:
    from bench.core import options as opts

    return opts.build(sde_cls.Options, values, f"SDE {sde_cls.name!r}")


def build_config(sde_cls: type, dataset: Any, kw: dict[str, Any]) -> Any:
    """The TrainConfig: SDE hyperparameters resolved (eps excluded), the recipe's architecture."""
    import dataclasses

    from bench.training.conditional import dataset_classes
    from bench.training.model_format import PARAMETERISATIONS
    from bench.training.train import TrainConfig, default_architecture, max_pairwise_distance

    if sde_cls.name not in PARAMETERISATIONS:
        raise BenchError(
            f"bench train supports the SDEs {', '.join(PARAMETERISATIONS)}, not {sde_cls.name!r}"
        )
    p = PARAMETERISATIONS[sde_cls.name]
    values = parse_sde_options(sde_cls, kw["options"])
    data = dataset.data("train" if "train" in dataset.splits else "all")
    if (
        "sigma_max" in {f.name for f in dataclasses.fields(sde_cls.Options)}
        and "sigma_max" not in values
    ):
        values["sigma_max"] = float(math.ceil(max_pairwise_distance(data)))
        click.echo(
            f"sigma_max = {values['sigma_max']:g} (max pairwise distance of the training "
            f"data{' (sampled)' if len(data) > 2000 else ''}, rounded up; "
            f"set -o {sde_cls.name}.sigma_max=... to override)",
            err=True,
        )
    resolved = dataclasses.asdict(sde_options(sde_cls, values))
    resolved.pop("eps", None)
    return TrainConfig(
        dataset=dataset.spec,
        sde=sde_cls.name,
        sde_options=resolved,
        steps=kw["steps"],
        batch_size=kw["batch_size"],
        lr=kw["lr"],
        warmup=kw["warmup"],
        grad_clip=kw["grad_clip"],
        ema=kw["ema"],
        seed=kw["seed"],
        architecture=default_architecture(
            data.shape[1], p.centered, dataset_classes(dataset) if kw["conditional"] else 0
        ),
        checkpoint_every=kw["checkpoint_every"],
        label_dropout=kw["label_dropout"] if kw["conditional"] else 0.0,
    )


def check_out(out: Path, resume: bool) -> None:
    """Refuse to overwrite a checkpoint silently, and to resume from nothing."""
    has_checkpoint = (out / "checkpoint" / "state.json").is_file()
    if has_checkpoint and not resume:
        raise BenchError(
            f"{out} already holds a training checkpoint: pass --resume to continue "
            f"it, or choose another --out"
        )
    if resume and not has_checkpoint:
        raise BenchError(f"--resume: {out} holds no checkpoint")
