"""``bench train-classifier``, ``bench fid-floor`` and ``bench fid-weights``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bench.cli.params import NumberList

DEFAULT_CLASSIFIER_DIR = "bench/fidelity/weights/digits-classifier"


@click.command("train-classifier")
@click.option(
    "--out",
    default=DEFAULT_CLASSIFIER_DIR,
    show_default=True,
    metavar="DIR",
    help="Folder for model.safetensors and meta.json.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--threads",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="CPU threads (the shipped weights were trained with 2).",
)
@click.pass_obj
def train_classifier_command(session: Any, out: str, seed: int, epochs: int, threads: int) -> None:
    """Train the digits feature classifier (FID/KID extractor 'digits-classifier').

    Reproduces the shipped weights: bench train-classifier --seed 0 --epochs 40 --threads 2
    """
    import torch

    from bench import fidelity
    from bench.fidelity import digits_classifier as dc

    torch.set_num_threads(threads)
    config = dc.TrainConfig(seed=seed, epochs=epochs)
    digits = fidelity.resolve_dataset("digits", session.registry)
    net, meta = dc.train(config, digits, log=lambda m: click.echo(m, err=True))
    meta["command"] = (
        f"bench train-classifier --out {out} --seed {seed} --epochs {epochs} --threads {threads}"
    )
    dc.save(net, meta, Path(out))
    click.echo(f"test accuracy {meta['test_accuracy']:.4f} → {out}")


@click.command("fid-floor")
@click.option("--dataset", default="digits", show_default=True, metavar="NAME[:ARG]")
@click.option(
    "--split", default="all", show_default=True, help="Split the n real images are drawn from."
)
@click.option(
    "--against",
    default=None,
    metavar="SPLIT",
    help="Compare with this whole split (e.g. --split test --against train, the "
    "metrics' default reference) instead of the disjoint rest of --split.",
)
@click.option(
    "--n",
    "ns",
    type=NumberList(int, 2),
    default="800",
    show_default=True,
    help="Sample sizes, e.g. 200,400,800.",
)
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--extractor",
    default="digits-classifier",
    show_default=True,
    type=click.Choice(["digits-classifier", "inception-v3-compat"]),
)
@click.option("--weights", default=None, metavar="PATH", help="Extractor weights file.")
@click.option("--kid-subsets", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:K]")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def fid_floor_command(
    session,
    dataset: str,
    split: str,
    against: str | None,
    ns: tuple[int, ...],
    repeats: int,
    seed: int,
    extractor: str,
    weights: str | None,
    kid_subsets: int,
    device: str,
    as_json: bool,
) -> None:
    """The data's own FID/KID floor: n real images vs the rest of the split (or another split).

    FID is biased upward at small n, so a model's FID at n is read against this floor at the
    same n (e.g. the shipped digits models aim for 1.5× the floor).

    \b
    Examples:
      bench fid-floor --n 200,400,800                       # digits:all, split-half
      bench fid-floor --split test --against train --n 360  # the default reference
    """
    from bench import fidelity
    from bench.results.textui import table
    from bench.run.setup import resolve_device

    data = fidelity.resolve_dataset(dataset, session.registry)
    settings = {
        "split": split,
        "against": against,
        "extractor": extractor,
        "weights": weights,
        "repeats": repeats,
        "seed": seed,
        "device": resolve_device(device),
        "kid_subsets": kid_subsets,
    }
    rows = [fidelity.noise_floor(data, n, **settings).summary() for n in ns]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        r["fid"] = f"{r['fid_mean']:.3f} ± {r['fid_sd']:.3f}"
        r["kid"] = f"{r['kid_mean']:.4g} ± {r['kid_sd']:.3g}"
    click.echo(
        table(
            rows,
            [
                "dataset",
                "split",
                "extractor",
                "n",
                "ref_n",
                "repeats",
                "fid",
                "kid",
                "kid_subset_size",
            ],
        )
    )


@click.command("fid-weights")
@click.option(
    "--extractor",
    default="inception-v3-compat",
    show_default=True,
    type=click.Choice(["digits-classifier", "inception-v3-compat"]),
)
@click.option(
    "--weights",
    default=None,
    metavar="PATH",
    help="A weights file to check (default: the extra, or BENCH_FID_WEIGHTS).",
)
def fid_weights_command(extractor: str, weights: str | None) -> None:
    """Locate (and convert once, into the cache) an extractor's weights; print what is used."""
    from bench import fidelity

    spec = fidelity.resolve_extractor(extractor, weights)
    click.echo(json.dumps(fidelity.describe(spec), indent=2))
