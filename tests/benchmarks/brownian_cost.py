"""What a step's Brownian increment costs (docs/performance.md, docs/stochastic.md).

Times, per step of an N-step Karras (``edm``) grid on [0, T = 80], the increment
W(t_{i+1}) − W(t_i) of every sample of a batch from the suite's paths
(:class:`bench.core.brownian.BrownianPath`: per sample, the same at any N) against one
sequential draw of the cell's noise (``SampleNoise``, what ``noise=iid`` costs) and against
torchsde's ``BrownianTree`` (k-diffusion's ``BrownianTreeNoiseSampler``): one tree for the batch
(k-diffusion's default; not per sample) and, at small batches, one tree per sample (what
per-sample paths cost there). Median over ``--repeats`` runs of a whole grid.

``--beside MODEL`` (an image model, e.g. digits-vp) instead times, interleaved in one process,
the Brownian increment of the model's batch against one forward of the model's network at the
same batch: the increment's cost as a share of a one-evaluation step. With ``--sampler NAME``
(a sampler with a ``noise`` option, e.g. dpmpp_2m_sde) it times that sampler's whole loop on
the model, on its Brownian path and with ``noise=iid``, interleaved, the forwards timed apart:
what the path adds to a step inside a sampler, between forwards (more than alone: measured 3.75
against 3.0 ms a step for digits-vp at batch 256).

Examples::

    python -m tests.benchmarks.brownian_cost
    python -m tests.benchmarks.brownian_cost --threads 1 --steps 100 --repeats 5
    python -m tests.benchmarks.brownian_cost --beside digits-vp --batch 256 --threads 1
    python -m tests.benchmarks.brownian_cost --beside digits-vp --sampler dpmpp_2m_sde --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.core.brownian import BrownianPath
from bench.core.noise import SampleNoise

CASES = (
    # name, batch, per-sample shape
    ("ring8", 64, (2,)),
    ("ring8, default sweep batch", 4000, (2,)),
    ("digits 8×8", 256, (1, 8, 8)),
    ("CIFAR 32×32×3", 64, (3, 32, 32)),
)
T = 80.0


def karras(n: int, lo: float = 0.002, hi: float = T, rho: float = 7.0) -> list[float]:
    return [
        (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        for i in range(n)
    ]


def per_step(fn, times: list[float], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(times)
        runs.append((time.perf_counter() - start) / (len(times) - 1))
    return statistics.median(runs)


def ours(batch, shape, horizon: float = T):
    def run(times):
        path, like = BrownianPath(0, 0, batch, horizon), torch.empty(batch, *shape)
        for s, t in zip(times, times[1:]):
            path.increment(s, t, like)

    return run


def iid(batch, shape):
    def run(times):
        noise, like = SampleNoise(0, 0, batch), torch.empty(batch, *shape)
        for _ in times[1:]:
            noise(like)

    return run


def torchsde_tree(batch, shape, per_sample: bool):
    import torchsde

    def run(times):
        if per_sample:
            trees = [
                torchsde.BrownianTree(0.0, torch.zeros(shape), T, entropy=j) for j in range(batch)
            ]
        else:
            trees = [torchsde.BrownianTree(0.0, torch.zeros(batch, *shape), T, entropy=0)]
        for s, t in zip(times, times[1:]):
            torch.stack([tree(t, s) for tree in trees])

    return run


def model_and_sde(model_name: str, steps: int):
    """The registry, the built-in model on the CPU in float32 and its own SDE at ``steps``."""
    from bench.plugin import loading

    registry = loading.load(allow=[]).registry
    model = registry.get("score-models", model_name).obj.load(
        None, device=torch.device("cpu"), dtype=torch.float32
    )
    sde = registry.get("sdes", next(iter(model.sde_defaults), "vp")).obj(steps)
    return registry, model, sde


def beside(model_name: str, batch: int, steps: int, repeats: int) -> None:
    """The Brownian increment of a ``batch`` of the model's shape against one forward, per step
    of an N-step grid of the model's SDE, interleaved; medians of ``repeats`` whole grids."""
    _, model, sde = model_and_sde(model_name, steps)
    fn = model.native_fn(sde)
    x = torch.randn(batch, *model.data_shape, generator=torch.Generator().manual_seed(0))
    times = [sde.T - (sde.T - sde.eps) * i / steps for i in range(steps + 1)]
    found: dict[str, list[float]] = {"forward": [], "Brownian increment": [], "iid draw": []}
    with torch.no_grad():
        for _ in range(repeats):
            for name, run in (
                ("forward", lambda: [fn(x, t) for t in times[:-1]]),
                ("Brownian increment", lambda: ours(batch, model.data_shape, sde.T)(times)),
                ("iid draw", lambda: iid(batch, model.data_shape)(times)),
            ):
                start = time.perf_counter()
                run()
                found[name].append((time.perf_counter() - start) / steps)
    med = {k: statistics.median(v) for k, v in found.items()}
    print(
        f"{model_name}, batch {batch}, N = {steps} ({sde.name}), threads {torch.get_num_threads()}"
        f", {repeats} interleaved repeats, medians per step:"
    )
    for name, value in med.items():
        share = value / med["forward"]
        print(f"  {name}: {value * 1e3:.2f} ms ({share:.1%} of a forward)")


def in_sampler(model_name: str, sampler_name: str, batch: int, steps: int, repeats: int) -> None:
    """The sampler's loop on its Brownian path and with ``noise=iid``, interleaved; per step,
    medians of ``repeats`` loops: the forwards, the rest, and what the path adds to the rest."""
    from bench.core.noise import prior_noise
    from bench.core.views import ModelView

    registry, model, sde = model_and_sde(model_name, steps)
    cls = registry.get("samplers", sampler_name).obj
    samplers = {kind: cls(cls.Options(noise=kind)) for kind in ("brownian", "iid")}
    schedule = samplers["iid"].default_schedule
    grid = registry.get("schedules", schedule).obj().grid(sde, steps)
    fn, spent = model.native_fn(sde), [0.0]

    def timed_fn(x, t):
        start = time.perf_counter()
        out = fn(x, t)
        spent[0] += time.perf_counter() - start
        return out

    x_T = sde.prior_sampling(prior_noise(0, 0, batch, model.data_shape))
    found: dict[str, dict[str, list[float]]] = {k: {"forwards": [], "rest": []} for k in samplers}
    with torch.no_grad():
        for _ in range(repeats):
            for kind, sampler in samplers.items():
                spent[0], start = 0.0, time.perf_counter()
                sampler.sample(
                    x_T, grid, ModelView(timed_fn, model.native, sde), SampleNoise(0, 0, batch)
                )
                found[kind]["rest"].append(time.perf_counter() - start - spent[0])
                found[kind]["forwards"].append(spent[0])
    med = {
        k: {part: statistics.median(v) / steps for part, v in d.items()} for k, d in found.items()
    }
    added = med["brownian"]["rest"] - med["iid"]["rest"]
    forward = statistics.median([*found["brownian"]["forwards"], *found["iid"]["forwards"]]) / steps
    print(
        f"{model_name}, {sampler_name} on {sde.name} ({schedule} grid), batch {batch}, "
        f"N = {steps}, threads {torch.get_num_threads()}, {repeats} interleaved loops, "
        "medians per step:"
    )
    for kind, parts in med.items():
        forwards, rest = parts["forwards"] * 1e3, parts["rest"] * 1e3
        print(f"  {kind}: forwards {forwards:.2f} ms, rest {rest:.2f} ms")
    print(
        f"  the Brownian path adds {added * 1e3:.2f} ms a step: {added / forward:.1%} of a forward"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--beside", default=None, metavar="MODEL")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sampler", default=None, help="with --beside: time this sampler's loop")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.beside and args.sampler:
        in_sampler(args.beside, args.sampler, args.batch, args.steps, args.repeats)
        return
    if args.beside:
        beside(args.beside, args.batch, args.steps, args.repeats)
        return
    times = karras(args.steps) + [0.0]
    print(
        f"per step, N = {args.steps} (Karras grid on [0, {T:g}]), threads {torch.get_num_threads()}"
    )
    for name, batch, shape in CASES:
        row = {
            "iid draw": per_step(iid(batch, shape), times, args.repeats),
            "Brownian path": per_step(ours(batch, shape), times, args.repeats),
            "torchsde, one tree": per_step(torchsde_tree(batch, shape, False), times, args.repeats),
        }
        if batch <= 64:
            tree = torchsde_tree(batch, shape, True)
            row["torchsde, tree per sample"] = per_step(tree, times, 1)
        cells = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in row.items())
        print(f"{name} (batch {batch}): {cells}")


if __name__ == "__main__":
    main()
