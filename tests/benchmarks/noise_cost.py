"""What the per-sample noise streams cost against one batch generator (docs/performance.md).

Times the draws a sampler makes in one cell — ``SampleNoise`` (counter-based: a hash of (seed,
sample, draw, element) per number; ``bench.core.noise``) against ``torch.randn`` from one
generator for the whole batch (not batch-invariant) — for the shapes of the profiled
configurations: ring8 with reverse diffusion + Langevin (2 draws per step), ring8 at the default
sweep's 4,000 samples, a digits image, a CIFAR-size image. Median over ``--repeats`` runs; compare the difference with the loop time
``bench profile`` reports for the same configuration.

``--twin`` instead times a whole cell's loop — the PC sampler's Euler–Maruyama on ring8 (VE) at
batch 4,000 — against its probability-flow twin (the same loop and NFE, no noise), interleaved,
in CPU time of the thread (unaffected by other jobs taking the core) and in wall time: the
noise's share of a cell where the score is cheapest.

Examples::

    python -m tests.benchmarks.noise_cost
    python -m tests.benchmarks.noise_cost --twin --repeats 15
    python -m tests.benchmarks.noise_cost --threads 2 --repeats 11
    python -m tests.benchmarks.noise_cost --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.core.noise import SampleNoise

CASES = (
    # name, batch, per-sample shape, draws per cell
    ("ring8, RD + Langevin, N = 2000", 64, (2,), 4000),
    ("ring8, RD + Langevin, N = 2000", 1000, (2,), 4000),
    ("ring8, Euler–Maruyama, N = 100", 4000, (2,), 100),
    ("digits 8×8, Euler–Maruyama, N = 100", 256, (1, 8, 8), 100),
    ("CIFAR 32×32×3, Euler–Maruyama, N = 100", 256, (3, 32, 32), 100),
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_sample(batch: int, shape: tuple[int, ...], draws: int, device: torch.device) -> float:
    """Seconds for ``draws`` draws of a batch from the per-sample streams."""
    x = torch.empty(batch, *shape, device=device)
    sync(device)
    start = time.perf_counter()
    noise = SampleNoise(0, 0, batch)
    for _ in range(draws):
        noise(x)
    sync(device)
    return time.perf_counter() - start


def one_generator(batch: int, shape: tuple[int, ...], draws: int, device: torch.device) -> float:
    """Seconds for the same draws from one generator for the batch."""
    sync(device)
    start = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(draws):
        torch.randn(batch, *shape, generator=generator, device=device)
    sync(device)
    return time.perf_counter() - start


def twin(repeats: int) -> None:
    """Euler–Maruyama against its probability-flow twin, per NFE (see the module docstring)."""
    from bench.core.pc import pc_sample
    from bench.plugin import loading
    from tests.sampling import paper_grid

    registry = loading.load(allow=[]).registry
    model = registry.get("score-models", "ring8").obj.load(
        None, device=torch.device("cpu"), dtype=torch.float32
    )
    em, none = (
        registry.get(k, n).obj for k, n in (("predictors", "euler"), ("correctors", "none"))
    )
    VE = registry.get("sdes", "ve").obj
    print(
        f"{'steps':>5} {'EM cpu':>9} {'twin cpu':>9} {'ratio':>6} {'EM wall':>9} {'twin wall':>9}"
    )
    for steps in (10, 100):
        sde = VE(steps, VE.Options())
        view, grid = model.view(sde), paper_grid(sde)
        x_T = sde.prior_sampling(torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)))
        cpu: dict[bool, list[float]] = {False: [], True: []}
        wall: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeats + 1):  # the first round warms up
            for flow in (False, True):
                noise = SampleNoise(0, 0, 4000)
                start, start_cpu = time.perf_counter(), time.thread_time()
                pc_sample(em(sde, view, flow, noise), none(sde, view, 0.16, 1, noise), x_T, grid)
                cpu[flow].append((time.thread_time() - start_cpu) / steps)
                wall[flow].append((time.perf_counter() - start) / steps)
        c, w = ({k: statistics.median(v[1:]) * 1e6 for k, v in d.items()} for d in (cpu, wall))
        print(
            f"{steps:5d} {c[False]:7.0f}us {c[True]:7.0f}us {c[False] / c[True]:6.2f} "
            f"{w[False]:7.0f}us {w[True]:7.0f}us  (per NFE, medians of {repeats})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--twin", action="store_true", help="EM vs its probability-flow twin")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.twin:
        return twin(args.repeats)
    device = torch.device(args.device)
    print(
        f"device {device}, {args.threads} thread(s), torch {torch.__version__}, median of "
        f"{args.repeats} runs"
    )
    print(
        f"{'configuration':42} {'batch':>5} {'draws':>5} {'per-sample':>11} {'one gen.':>9} "
        f"{'difference':>10}"
    )
    for name, batch, shape, draws in CASES:
        a, b = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            a.append(per_sample(batch, shape, draws, device))
            b.append(one_generator(batch, shape, draws, device))
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"{name:42} {batch:5d} {draws:5d} {ma * 1e3:9.1f}ms {mb * 1e3:7.1f}ms "
            f"{(ma - mb) * 1e3:+8.1f}ms"
        )


if __name__ == "__main__":
    main()
