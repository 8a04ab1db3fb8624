"""Exact-score mixtures: score, samples and density checked against independent computations."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from bench.errors import BenchError

UNEQUAL = {
    "weights": [0.2, 0.5, 0.3],
    "means": [[-1.0, 0.5], [2.0, 0.0], [0.3, -1.5]],
    "stds": [0.1, 0.4, 0.25],
}


def load(registry, spec, tmp_path=None, dtype=torch.float64):
    name, _, arg = spec.partition(":")
    return registry.get("score-models", name).obj.load(
        arg or None, device=torch.device("cpu"), dtype=dtype
    )


def torch_mixture(spec, a=1.0, std=0.0):
    """p_t as a torch.distributions mixture (an independent implementation)."""
    means = a * torch.tensor(spec["means"], dtype=torch.float64)
    s = torch.tensor(spec["stds"], dtype=torch.float64)
    scale = (a**2 * s**2 + std**2).sqrt()[:, None].expand_as(means)
    return MixtureSameFamily(
        Categorical(torch.tensor(spec["weights"], dtype=torch.float64)),
        Independent(Normal(means, scale), 1),
    )


@pytest.fixture
def unequal(registry, tmp_path):
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(UNEQUAL))
    return load(registry, f"gmm:{path}")


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("t", [1e-3, 0.05, 0.4, 1.0])
def test_score_is_the_gradient_of_the_exact_log_density(sde_name, t, unequal, make_sde):
    """Unequal weights and stds: the score equals autograd of log p_t (torch.distributions)."""
    sde = make_sde(sde_name)
    a, std = sde.marginal_coef(t)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = a * x * 1.5 + torch.randn(64, 2, dtype=torch.float64) * std
    x.requires_grad_(True)
    torch_mixture(UNEQUAL, a, std).log_prob(x).sum().backward()
    got = unequal.score_fn(sde)(x.detach(), t)
    torch.testing.assert_close(got, x.grad, rtol=1e-7, atol=1e-9)


def test_float32_score_close_to_float64(registry, make_sde):
    sde = make_sde("ve")
    x = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.3 + 0.4
    m64, m32 = load(registry, "gmm64"), load(registry, "gmm64", dtype=torch.float32)
    for t in (1e-5, 0.1, 1.0):
        s64 = m64.score_fn(sde)(x.double(), t)
        s32 = m32.score_fn(sde)(x, t)
        assert ((s32.double() - s64).norm() / s64.norm()).item() < 1e-4


def test_log_prob_matches_torch_distributions(unequal):
    x = torch.randn(100, 2, dtype=torch.float64)
    torch.testing.assert_close(unequal.log_prob(x), torch_mixture(UNEQUAL).log_prob(x))


def test_exact_samples_have_the_mixture_moments(unequal):
    x = unequal.sample_data(200_000, torch.Generator().manual_seed(3))
    w = torch.tensor(UNEQUAL["weights"], dtype=torch.float64)
    mu = torch.tensor(UNEQUAL["means"], dtype=torch.float64)
    s2 = torch.tensor(UNEQUAL["stds"], dtype=torch.float64) ** 2
    mean = w @ mu
    second = (
        w[:, None, None]
        * (mu[:, :, None] * mu[:, None, :] + s2[:, None, None] * torch.eye(2, dtype=torch.float64))
    ).sum(0)
    cov = second - torch.outer(mean, mean)
    torch.testing.assert_close(x.mean(0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.02, rtol=0)


def test_one_dimensional_density_integrates_to_one(registry):
    model = load(registry, "gauss1d")
    grid = torch.linspace(-3, 4, 20001, dtype=torch.float64)[:, None]
    dens = model.log_prob(grid).exp()
    assert torch.trapezoid(dens, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name,dim,k", [("gauss1d", 1, 1), ("ring8", 2, 8), ("gmm64", 64, 10)])
def test_presets(registry, name, dim, k):
    model = load(registry, name)
    assert model.mixture.dim == dim and model.mixture.weights.numel() == k
    assert math.isclose(float(model.mixture.weights.sum()), 1.0)
    assert model.exact and model.trained_for is None


def test_gmm64_is_image_shaped_with_unequal_components(registry):
    model = load(registry, "gmm64")
    assert model.data_shape == (1, 8, 8)
    assert (
        model.mixture.stds.unique().numel() == 10 and model.mixture.weights.unique().numel() == 10
    )


@pytest.mark.parametrize(
    "content,message",
    [
        ("{", "not a readable JSON"),
        ('{"weights": [1], "means": [[0]]}', "missing key 'stds'"),
        ('{"weights": [1, 2], "means": [[0]], "stds": [1]}', "need K weights"),
        ('{"weights": [1], "means": [[0]], "stds": [-1]}', "must be positive"),
        ('{"weights": [1], "means": [[0]], "stds": [1, 2]}', "one isotropic std"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_mixture_files(registry, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BenchError, match=message):
        load(registry, f"gmm:{path}")


def test_gmm_needs_a_path(registry, tmp_path):
    with pytest.raises(BenchError, match="needs a JSON file"):
        load(registry, "gmm")
    with pytest.raises(BenchError, match="does not exist"):
        load(registry, f"gmm:{tmp_path / 'missing.json'}")


def straightforward_score(spec, x, a, std):
    """∇ log p_t written out per component in float64: (B, K, D) differences, log-weights,
    per-component variances, softmax responsibilities, weighted sum (no expansion of squares)."""
    w = torch.tensor(spec["weights"], dtype=torch.float64)
    w = w / w.sum()
    mu = a * torch.tensor(spec["means"], dtype=torch.float64)
    v = a**2 * torch.tensor(spec["stds"], dtype=torch.float64) ** 2 + std**2
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    diff = xf[:, None, :] - mu[None]  # (B, K, D)
    logits = w.log() - 0.5 * mu.shape[1] * v.log() - diff.square().sum(-1) / (2 * v)
    r = torch.softmax(logits, dim=1)
    return (-(r / v)[:, :, None] * diff).sum(1).reshape(x.shape)


@pytest.mark.parametrize("host", [True, False], ids=["numpy-table", "torch-table"])
@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_score_is_exact_in_float64(registry, tmp_path, make_sde, monkeypatch, sde_name, host):
    """The lean score (per-time constant table, expanded squares) equals a straightforward
    per-component implementation to float64 rounding, for both ways of filling the table, an
    unequal 2-D mixture and the 64-D image-shaped one, from t = eps to t = 1."""
    from importlib import resources

    import bench_plugins.score_models.gmm as gmm

    real = gmm.TimeConstants
    monkeypatch.setattr(gmm, "TimeConstants", lambda *a, **kw: real(*a, **kw, host=host))
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(UNEQUAL))
    gmm64 = json.loads((resources.files("bench_plugins") / "data" / "gmm64.json").read_text())
    sde = make_sde(sde_name)
    generator = torch.Generator().manual_seed(5)
    for spec, model in ((UNEQUAL, load(registry, f"gmm:{path}")), (gmm64, load(registry, "gmm64"))):
        assert gmm.TimeConstants(model.mixture, model.device, model.dtype).on_host == host
        score = model.score_fn(sde)
        for t in (sde.eps, 1e-3, 0.05, 0.3, 1.0):
            a, std = sde.marginal_coef(t)
            x = a * model.sample_data(64, generator) + std * torch.randn(
                64, *model.data_shape, generator=generator, dtype=torch.float64
            )
            x[:4] *= 3  # a few points far out in the tails
            want = straightforward_score(spec, x, a, std)
            got = score(x, t)
            assert got.shape == x.shape and got.dtype == torch.float64
            torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12 * want.abs().max().item())


def test_the_table_is_not_aliased_by_the_result(unequal, make_sde):
    """The returned score is a fresh tensor: the next call, at another time, leaves it alone."""
    sde = make_sde("ve")
    score = unequal.score_fn(sde)
    x = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    first = score(x, 0.5)
    kept = first.clone()
    score(x, 0.01)
    torch.testing.assert_close(first, kept, rtol=0, atol=0)


def test_gradients_through_the_score_survive_the_next_call(unequal, make_sde):
    """Autograd keeps the constants of its call, not the table the next call overwrites."""
    sde = make_sde("vp")
    score = unequal.score_fn(sde)
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x1 = x.clone().requires_grad_(True)
    score(x1, 0.3).square().sum().backward()
    x2 = x.clone().requires_grad_(True)
    out = score(x2, 0.3).square().sum()
    score(x, 0.9)  # refills the table before the backward pass
    out.backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=0, atol=0)
