"""What the per-sample noise streams cost against one batch generator (docs/performance.md).

Times the draws a sampler makes in one cell — ``SampleNoise`` (each sample its own seeded
generator, read in pages; ``bench.core.noise``) against ``torch.randn`` from one generator for the
whole batch, the layout before per-sample streams — for the shapes of the profiled
configurations: ring8 with reverse diffusion + Langevin (2 draws per step), a digits image, a
CIFAR-size image. Median over ``--repeats`` runs; compare the difference with the loop time
``bench profile`` reports for the same configuration.

Examples::

    python -m tests.benchmarks.noise_cost
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
