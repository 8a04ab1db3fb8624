"""The exact-model metrics: swd, fd, logp, coverage."""

from __future__ import annotations

import pytest
import torch

from bench.fidelity.gaussian import GaussianStats, reference_samples


def model_of(registry, name, tmp_path=None):
    return registry.get("score-models", name).obj.load(
        None, device=torch.device("cpu"), dtype=torch.float64
    )


def metric(registry, name, model, n):
    cls = registry.get("metrics", name).obj
    return cls(model, n, device=torch.device("cpu"))


def feed(m, x, batch=300):
    for start in range(0, len(x), batch):
        m.update(x[start : start + batch])
    return m.compute()


def test_perfect_samples_score_zero(registry):
    """Feeding the metric its own reference set gives exactly 0 distance."""
    model = model_of(registry, "ring8")
    ref = reference_samples(model, 1000)
    assert feed(metric(registry, "swd", model, 1000), ref)["swd"] == pytest.approx(0, abs=1e-12)
    assert feed(metric(registry, "fd", model, 1000), ref)["fd"] == pytest.approx(0, abs=1e-9)
    out = feed(metric(registry, "logp", model, 1000), ref)
    assert out["logp"] == pytest.approx(out["logp_ref"], abs=1e-12)


def test_shift_is_measured(registry):
    """1-D: a shift δ gives SW₂ = δ exactly (same sorted values) and FD = δ²."""
    model = model_of(registry, "gauss1d")
    ref = reference_samples(model, 2000)
    delta = 0.3
    assert feed(metric(registry, "swd", model, 2000), ref + delta)["swd"] == pytest.approx(delta)
    assert feed(metric(registry, "fd", model, 2000), ref + delta)["fd"] == pytest.approx(delta**2)
    logp = feed(metric(registry, "logp", model, 2000), ref + delta)
    assert logp["logp"] < logp["logp_ref"]


def test_streaming_statistics_equal_batch_statistics():
    """Streaming sums give the mean and unbiased covariance of all the data at once."""
    mix = torch.tensor([[1.0, 0.2, 0], [0, 2.0, 0.1], [0, 0, 0.5]], dtype=torch.float64)
    x = torch.randn(500, 3, dtype=torch.float64) @ mix + 3.0
    stats = GaussianStats()
    for chunk in x.split(77):
        stats.update(chunk)
    s = stats.statistics()
    torch.testing.assert_close(torch.from_numpy(s["mu"]), x.mean(0))
    torch.testing.assert_close(torch.from_numpy(s["sigma"]), torch.cov(x.T))


def test_coverage_detects_a_dropped_mode(registry):
    model = model_of(registry, "ring8")
    ref = reference_samples(model, 800)
    nearest = model.mixture.nearest(ref)
    only_first = ref[nearest == 0]
    out = feed(metric(registry, "coverage", model, len(only_first)), only_first)
    assert out["coverage_min"] == 0.0
    assert out["coverage_tv"] == pytest.approx(1 - 1 / 8)
    full = feed(metric(registry, "coverage", model, 800), ref)
    assert abs(full["coverage_tv"] - full["coverage_tv_ref"]) <= 3 * full["coverage_tv_ref_std"]
    assert full["coverage_min"] > out["coverage_min"]


def test_metrics_refuse_models_without_exact_density(registry):
    from bench.core.model import ScoreModel
    from bench.errors import Unsupported

    class Net(ScoreModel):
        name = "net"

        @classmethod
        def load(cls, arg, *, device, dtype):
            return cls()

        def score_fn(self, sde):
            return lambda x, t: -x

    for name in ("swd", "fd", "logp", "coverage"):
        with pytest.raises(Unsupported):
            registry.get("metrics", name).obj.supports(Net())


def test_frechet_distance_is_torch_fidelitys():
    """The oracles' own Fréchet distance equals torch-fidelity's FID function on the same fits."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    from bench.fidelity.gaussian import frechet_distance

    generator = torch.Generator().manual_seed(0)
    a, b = GaussianStats(), GaussianStats()
    a.update(torch.randn(500, 6, generator=generator, dtype=torch.float64))
    b.update(1.3 * torch.randn(400, 6, generator=generator, dtype=torch.float64) + 0.2)
    theirs = fid_statistics_to_metric(a.statistics(), b.statistics(), verbose=False)
    assert frechet_distance(a.statistics(), b.statistics()) == theirs[KEY_METRIC_FID]
    assert frechet_distance(a.statistics(), a.statistics()) == pytest.approx(0.0, abs=1e-9)


def test_an_oracle_run_imports_neither_torch_fidelity_nor_torchvision(tmp_path):
    """An exact-score run has no use for image feature extractors (seconds of imports)."""
    import subprocess
    import sys

    code = (
        "import sys; from bench.cli import cli; "
        f"cli(['run', '--samples', '20', '--steps', '3', '--sdes', 've', '--out', r'{tmp_path}', "
        "'--no-progress'], standalone_mode=False); "
        "print(sorted(m for m in ('torch_fidelity', 'torchvision') if m in sys.modules))"
    )
    env = {**__import__("os").environ, "BENCH_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
