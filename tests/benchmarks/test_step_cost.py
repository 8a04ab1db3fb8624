"""Per-step cost of every built-in predictor (and its probability-flow variant) and corrector,
and of the whole PC loop.

Measured with pytest-benchmark on the exact-score ring (a batch of 1,000 2-D samples), on the
CPU unless ``BENCH_BENCHMARK_DEVICE`` names another device (``cuda``), in which case every timed
call ends with a device synchronisation. The default test run (``--benchmark-disable`` in
pyproject) executes each body once as a smoke test; ``docs/reports.md`` shows how to record and
compare timings (``--benchmark-enable --benchmark-autosave``, then
``--benchmark-compare --benchmark-compare-fail=median:15%``).
"""

from __future__ import annotations

import os

import pytest
import torch

from bench.core.views import ModelView
from bench.errors import Unsupported
from bench.plugin import loading as plugins
from bench.run.setup import synchronize
from tests.sampling import next_time, run_pc

REGISTRY = plugins.load(allow=[]).registry
DEVICE = torch.device(os.environ.get("BENCH_BENCHMARK_DEVICE", "cpu"))
BATCH = 1000
N = 100
SDES = ("ve", "vp", "subvp")
PC_LOOPS = (("euler_maruyama", "none"), ("reverse_diffusion", "langevin"))


def builtin(kind: str) -> list[str]:
    """Names of the built-in components of a kind (third-party plugins are not benchmarked)."""
    return [
        n for n in REGISTRY.names(kind) if REGISTRY.entries[kind][n].provider.source == "builtin"
    ]


@pytest.fixture(scope="module")
def model():
    entry = REGISTRY.get("score-models", "ring8")
    return entry.obj.load(None, device=DEVICE, dtype=torch.float32)


pytestmark = pytest.mark.usefixtures("one_thread")  # as `bench run` for exact-score models


def setup(model, sde_name: str, seed: int = 0):
    """SDE with N steps, counting score, seeded noise and a prior batch at the middle time."""
    sde_cls = REGISTRY.get("sdes", sde_name).obj
    sde = sde_cls(N, sde_cls.Options())
    score = model.view(sde)
    generator = torch.Generator(device=DEVICE).manual_seed(seed)

    def noise(x):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    z = torch.randn(BATCH, *model.data_shape, generator=torch.Generator().manual_seed(seed))
    x = sde.prior_sampling(z.to(DEVICE))
    return sde, score, noise, x, sde.timesteps()[N // 2]


def nfe_of(score: ModelView, step, x, t) -> int:
    """Score evaluations of one untimed step (recorded with the timing)."""
    score.calls = 0
    step.update(x, t, next_time(step.sde, t))
    return score.calls


def timed(fn):
    """``fn`` followed by a device synchronisation (a no-op on the CPU)."""

    def call():
        out = fn()
        synchronize(DEVICE)
        return out

    return call


@pytest.mark.parametrize("probability_flow", [False, True], ids=["sde", "flow"])
@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("name", builtin("predictors"))
def test_predictor_step(benchmark, model, name, sde_name, probability_flow):
    sde, score, noise, x, t = setup(model, sde_name)
    cls = REGISTRY.get("predictors", name).obj
    try:
        cls.supports(sde, probability_flow)
    except Unsupported as exc:
        pytest.skip(exc.reason)
    predictor = cls(sde, score, probability_flow, noise)
    benchmark.extra_info.update(batch=BATCH, device=str(DEVICE), nfe=nfe_of(score, predictor, x, t))
    t_next = next_time(sde, t)
    x_next, _ = benchmark(timed(lambda: predictor.update(x, t, t_next)))
    assert x_next.shape == x.shape and bool(torch.isfinite(x_next).all())


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("name", builtin("correctors"))
def test_corrector_step(benchmark, model, name, sde_name):
    sde, score, noise, x, t = setup(model, sde_name)
    cls = REGISTRY.get("correctors", name).obj
    try:
        cls.supports(sde)
    except Unsupported as exc:
        pytest.skip(exc.reason)
    corrector = cls(sde, score, 0.16, 1, noise)
    benchmark.extra_info.update(batch=BATCH, device=str(DEVICE), nfe=nfe_of(score, corrector, x, t))
    t_next = next_time(sde, t)
    x_next, _ = benchmark(timed(lambda: corrector.update(x, t, t_next)))
    assert x_next.shape == x.shape and bool(torch.isfinite(x_next).all())


@pytest.mark.parametrize("predictor_name, corrector_name", PC_LOOPS)
def test_pc_loop(benchmark, model, predictor_name, corrector_name):
    sde, score, noise, x_T, _ = setup(model, "vp")
    predictor = REGISTRY.get("predictors", predictor_name).obj(sde, score, False, noise)
    corrector = REGISTRY.get("correctors", corrector_name).obj(sde, score, 0.16, 1, noise)
    benchmark.extra_info.update(batch=BATCH, device=str(DEVICE), steps=N)
    x = benchmark(timed(lambda: run_pc(sde, predictor, corrector, x_T)))
    assert x.shape == x_T.shape and bool(torch.isfinite(x).all())
