"""Per-NFE time and memory of the real-size CIFAR-10 networks behind score_sde:/edm: models.

Random weights (enough for speed and memory), the real architectures: NCSN++ deep (VE), DDPM++
deep (VP) and DDPM from the shipped score_sde configs, and EDM's CIFAR-10 DDPM++ network
(EDMPrecond + SongUNet as in edm-cifar10-32x32-uncond-vp.pkl). One NFE is one call of the
model's native function (labels, network, output conversion) under no_grad; the median (and
minimum) wall time of ``--repeats`` calls after ``--warmup`` untimed ones, and the median CPU
time of the process per call (less sensitive to other load on a shared machine). Each network
runs in its own process so that the peak resident memory (ru_maxrss) is its own.

    python -m tests.benchmarks.checkpoint_speed --batch 16 --threads 2              # CPU, all four networks
    python -m tests.benchmarks.checkpoint_speed --device cuda --batch 128 --net edm_ddpmpp
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

NETS = {
    "ncsnpp_deep_ve": "ve/cifar10_ncsnpp_deep_continuous",
    "ddpmpp_deep_vp": "vp/cifar10_ddpmpp_deep_continuous",
    "ddpm": "vp/ddpm/cifar10",
    "edm_ddpmpp": None,
}
EDM_CIFAR10_DDPMPP = dict(  # EDM's train.py: --arch=ddpmpp --precond=edm (--augment=0.12)
    model_type="SongUNet", embedding_type="positional", encoder_type="standard",
    decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], model_channels=128,
    channel_mult=[2, 2, 2], augment_dim=9, dropout=0.13,
)  # fmt: skip


def rss_mb() -> float:
    """Current resident memory in MiB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def build(name: str, device: torch.device, dtype: torch.dtype):
    """(model, sde) through the suite's own classes."""
    from bench_plugins.sdes import EDMSDE, VESDE, VPSDE, SubVPSDE

    if NETS[name] is not None:
        from bench_plugins.score_models.score_sde import build_network, load_config
        from bench_plugins.score_models.score_sde.model import ScoreSdeModel

        config = load_config(NETS[name])
        model = ScoreSdeModel(
            build_network(config), config, Path("random"), f"score_sde:random ({NETS[name]})",
            device=device, dtype=dtype, ema=True, checkpoint_info={},
        )  # fmt: skip
    else:
        from bench_plugins.score_models.edm import EDMPrecond
        from bench_plugins.score_models.edm.model import EdmModel

        net = EDMPrecond(img_resolution=32, img_channels=3, **EDM_CIFAR10_DDPMPP)
        info = dict(
            kind="edm", precond="EDMPrecond", model="SongUNet", sigma_min=0.0,
            sigma_max=float("inf"), sigma_data=0.5, label_dim=0, img_resolution=32,
            img_channels=3, use_fp16=False, path="random",
            num_parameters=sum(p.numel() for p in net.parameters()),
        )  # fmt: skip
        model = EdmModel(
            net.eval().requires_grad_(False).to(device, dtype), info, "edm:random",
            device=device, dtype=dtype, class_label="none", weights_sha256="",
        )  # fmt: skip
    sdes = {"ve": VESDE, "vp": VPSDE, "subvp": SubVPSDE, "edm": EDMSDE}
    cls = sdes[model.trained_for]
    return model, cls(1000, cls.Options(**model.sde_defaults[model.trained_for]))


def measure(args: argparse.Namespace) -> dict:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    base = rss_mb()
    model, sde = build(args.net, device, dtype)
    net = model.net
    params = sum(p.numel() for p in net.parameters())
    after_build = rss_mb()
    fn = model.native_fn(sde)
    x = torch.randn(args.batch, *model.data_shape, device=device, dtype=dtype)
    t = 0.5 * sde.T
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times, cpu = [], []
    for i in range(args.warmup + args.repeats):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(x, t)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    out = {
        "net": args.net,
        "config": NETS[args.net] or "EDMPrecond+SongUNet ddpmpp",
        "parameters": params,
        "weights_mib": params * torch.finfo(dtype).bits / 8 / 2**20,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "batch": args.batch,
        "s_per_nfe_median": statistics.median(times),
        "s_per_nfe_min": min(times),
        "s_per_nfe_all": [round(s, 3) for s in times],
        "cpu_s_per_nfe_median": statistics.median(cpu),
        "load_average": Path("/proc/loadavg").read_text().split()[0],
        "rss_before_mib": round(base),
        "rss_after_build_mib": round(after_build),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=[*NETS, "all"], default="all")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    if args.net != "all":
        print(json.dumps(measure(args)))
        return
    for name in NETS:
        argv = [*sys.argv[1:], "--net", name]
        subprocess.run([sys.executable, __file__, *argv], check=True)


if __name__ == "__main__":
    main()
