"""Model views: a sampler asking for ε or D gets the exact closed form, every view call is one
counted evaluation, and conversions between native outputs are exact."""

from __future__ import annotations

import math

import pytest
import torch

from bench.core.sampler import Sampler
from bench.core.views import ModelView
from tests.oracle import MEAN, STD, gaussian_model, run

SDES = ("ve", "vp", "subvp")


def closed_form(sde, x, t):
    """ε and D of Gaussian data N(μ, s²I) with v = a²s² + std²: the score is −(x − aμ)/v, so
    ε = std·(x − aμ)/v and D = E[x₀|x_t] = μ + a·s²·(x − aμ)/v."""
    a, std = sde.marginal_coef(t)
    v = a * a * STD**2 + std**2
    return std * (x - a * MEAN) / v, MEAN + a * STD**2 / v * (x - a * MEAN)


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("t", [0.9, 0.3, 0.01])
def test_views_of_the_gaussian_oracle_are_exact(make_sde, sde_name, t):
    sde = make_sde(sde_name, 10)
    model = gaussian_model(3)
    view = model.view(sde)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps, D = closed_form(sde, x, t)
    torch.testing.assert_close(view.eps(x, t), eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(view.denoise(x, t), D, rtol=1e-12, atol=1e-12)
    assert view.calls == 2


class AskFor(Sampler):
    """A one-step sampler that records what its view returns (test only)."""

    name = "ask_for"

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.seen = kind, []

    def nfe_nominal(self, steps: int) -> int:
        return steps

    def sample(self, x_T, grid, model, noise, callback=None):
        fn = {"eps": model.eps, "x0": model.denoise, "score": model.score}[self.kind]
        for _, t, _ in grid.pairs():
            self.seen.append((t, fn(x_T, t)))
        return x_T


@pytest.mark.parametrize("kind", ["eps", "x0"])
@pytest.mark.parametrize("sde_name", SDES)
def test_a_sampler_asking_for_eps_or_D_gets_the_closed_form(registry, make_sde, kind, sde_name):
    sde = make_sde(sde_name, 4)
    grid = registry.get("schedules", "edm").obj().grid(sde, 4)
    x_T = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sampler = AskFor(kind)
    _, nfe = run(sampler, sde, grid, gaussian_model(2), x_T)
    assert nfe == 4
    for t, got in sampler.seen:
        eps, D = closed_form(sde, x_T, t)
        torch.testing.assert_close(got, eps if kind == "eps" else D, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("native", ["score", "eps", "x0"])
def test_every_native_kind_gives_the_same_three_views(make_sde, native):
    """A model whose network outputs ε (or D) yields the same score, ε and D as the score."""
    sde = make_sde("vp", 10)
    truth = gaussian_model(3).view(sde)
    x = torch.randn(4, 3, dtype=torch.float64)
    t = 0.4

    def fn(x, t):
        return {"score": truth.score, "eps": truth.eps, "x0": truth.denoise}[native](x, t)

    view = ModelView(fn, native, sde)
    for name in ("score", "eps", "denoise"):
        torch.testing.assert_close(
            getattr(view, name)(x, t), getattr(truth, name)(x, t), rtol=1e-12, atol=1e-12
        )
    assert view.calls == 3  # a conversion is never an extra evaluation


def test_a_view_is_a_score_function():
    sde_cls = pytest.importorskip("bench_plugins.sdes").VPSDE
    sde = sde_cls(10)
    view = ModelView(lambda x, t: x * 2, "score", sde)
    assert torch.equal(view(torch.ones(2), 0.5), torch.full((2,), 2.0)) and view.calls == 1
    with pytest.raises(ValueError, match="native output"):
        ModelView(lambda x, t: x, "v", sde)


def test_score_model_with_native_eps_implements_native_fn_only(make_sde):
    """Models with a noise-prediction network implement native_fn; score_fn is derived."""
    from bench.core.model import ScoreModel

    class EpsModel(ScoreModel):
        name = "eps_model"
        native = "eps"
        data_shape = (1,)
        spec = "eps_model"

        @classmethod
        def load(cls, arg, *, device, dtype):
            return cls()

        def native_fn(self, sde):
            return lambda x, t: torch.full_like(x, 0.5)

    sde = make_sde("vp", 10)
    _, std = sde.marginal_coef(0.5)
    score = EpsModel().score_fn(sde)(torch.zeros(3, 1), 0.5)
    assert torch.allclose(score, torch.full((3, 1), -0.5 / std))
    assert math.isclose(std, sde.marginal_coef(0.5)[1])
