"""Per-NFE time of a diffusers UNet2DModel score model (random weights are enough for speed).

One NFE is one call of the plugin's score function (network + conversion to a score). Each
measurement is device-synchronised before and after; the median over ``--repeats`` calls is
reported after ``--warmup`` untimed calls, per batch size.

Examples::

    python -m tests.benchmarks.diffusers_speed --device cuda --batch 128,256
    python -m tests.benchmarks.diffusers_speed --device cpu --threads 1 --batch 2 --repeats 5
    python -m tests.benchmarks.diffusers_speed --config tiny --batch 4     # smoke test
    python -m tests.benchmarks.diffusers_speed --write-folder /tmp/ddpm    # then bench profile

``--config ddpm-cifar10`` (default) is the google/ddpm-cifar10-32 architecture (35.7M
parameters, 32×32×3), loaded through ``--model diffusers:FOLDER`` from a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

CONFIGS = ("ddpm-cifar10", "tiny")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_folder(folder: Path, config: str) -> Path:
    """A random-weight DDPM pipeline folder of the chosen architecture."""
    from tests.diffusers_models import (
        DDPM_CIFAR10_UNET,
        DDPM_SCHEDULER,
        TINY_DDPM_UNET,
        write_pipeline,
    )

    unet = DDPM_CIFAR10_UNET if config == "ddpm-cifar10" else TINY_DDPM_UNET
    return write_pipeline(folder, unet, DDPM_SCHEDULER)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn, x: torch.Tensor, ts: list[float], warmup: int, device: torch.device
) -> list[float]:
    """Seconds per call of fn(x, t), each call synchronised, after ``warmup`` untimed calls."""
    for t in ts[:warmup]:
        fn(x, t)
    times = []
    for t in ts[warmup:]:
        synchronize(device)
        start = time.perf_counter()
        fn(x, t)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure(model, sde, batch: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Median (and quartiles) of the per-NFE time at one batch size."""
    device = model.device
    x = torch.randn(batch, *model.data_shape, device=device, dtype=model.dtype)
    ts = torch.linspace(1.0, sde.eps, warmup + repeats, dtype=torch.float64).tolist()
    times = time_calls(model.score_fn(sde), x, ts, warmup, device)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    median = statistics.median(times)
    return {
        "batch": batch,
        "s_per_nfe": median,
        "q1": q[0],
        "q3": q[2],
        "images_per_s": batch / median,
        "repeats": len(times),
        "warmup": warmup,
    }


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    import diffusers

    info = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info |= {
            "gpu": torch.cuda.get_device_name(device),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        }
    return info


def run(
    config: str,
    device: torch.device,
    dtype: torch.dtype,
    batches: list[int],
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """Build the folder, load it through the plugin and time each batch size."""
    from bench_plugins.score_models.diffusers_unet import DiffusersUNet
    from bench_plugins.sdes import VPSDE

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp) / "model", config)
        model = DiffusersUNet.load(str(folder), device=device, dtype=dtype)
    sde = VPSDE(1000)
    params = sum(p.numel() for p in model.unet.parameters())
    rows = [measure(model, sde, b, repeats, warmup) for b in batches]
    return {
        "config": config,
        "parameters": params,
        "data_shape": list(model.data_shape),
        "environment": environment(device, dtype),
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    env = result["environment"]
    head = (
        f"{result['config']} ({result['parameters'] / 1e6:.1f}M params, "
        f"{'×'.join(map(str, result['data_shape']))}) on {env.get('gpu', env['device'])}, "
        f"{env['dtype']}, torch {env['torch']}, diffusers {env['diffusers']}"
    )
    lines = [
        head,
        "",
        "| batch | s/NFE (median) | IQR | images/s per NFE | repeats |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch']} | {r['s_per_nfe']:.4g} | {r['q1']:.4g}–{r['q3']:.4g} | "
            f"{r['images_per_s']:.1f} | {r['repeats']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=CONFIGS, default="ddpm-cifar10")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--batch", default="128,256", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads [torch default]")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument(
        "--write-folder",
        type=Path,
        default=None,
        metavar="DIR",
        help="only write the random-weight model folder to DIR (for bench run "
        "or bench profile --model diffusers:DIR) and exit",
    )
    args = parser.parse_args(argv)
    if args.write_folder is not None:
        print(build_folder(args.write_folder, args.config))
        return {}
    batches = [int(b) for b in args.batch.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(
        args.config,
        torch.device(args.device),
        DTYPES[args.dtype],
        batches,
        args.repeats,
        args.warmup,
    )
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
