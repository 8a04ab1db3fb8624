"""Model views: a sampler asking for ε, D, v or the velocity gets the exact closed form, every
view call is one counted evaluation, and conversions between native outputs are exact.

The velocity is checked against the probability-flow ODE's drift f·x − ½g²·s built from each
SDE's own f and g (Song et al. 2021, Eq. 13), and v against diffusers' ``get_velocity`` (its
independent implementation of Salimans & Ho's v = α·ε − σ·x₀) on VP."""

from __future__ import annotations

import math

import pytest
import torch

from bench.core.sampler import Sampler
from bench.core.views import ModelView
from tests.oracle import MEAN, STD, gaussian_model, run

SDES = ("ve", "vp", "subvp")
ALL_SDES = ("ve", "vp", "subvp", "edm", "flow")
KINDS = {"score": "score", "eps": "eps", "x0": "denoise", "v": "v", "velocity": "velocity"}


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
        fn = getattr(model, KINDS[self.kind])
        for _, t, _ in grid.pairs():
            self.seen.append((t, fn(x_T, t)))
        return x_T


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "velocity"])
@pytest.mark.parametrize("sde_name", ALL_SDES)
def test_a_sampler_asking_for_a_view_gets_the_closed_form(registry, make_sde, kind, sde_name):
    sde = make_sde(sde_name, 4)
    grid = registry.get("schedules", "edm").obj().grid(sde, 4)
    x_T = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sampler = AskFor(kind)
    _, nfe = run(sampler, sde, grid, gaussian_model(2), x_T)
    assert nfe == 4
    for t, got in sampler.seen:
        eps, D = closed_form(sde, x_T, t)
        a, std = sde.marginal_coef(t)
        da, dstd = sde.marginal_rates(t)
        expected = {
            "eps": eps,
            "x0": D,
            "v": (a * eps - std * D) / math.hypot(a, std),
            "velocity": da * D + dstd * eps,
        }[kind]
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("native", list(KINDS))
@pytest.mark.parametrize("sde_name", ["vp", "ve", "flow"])
def test_every_native_kind_gives_the_same_views(make_sde, native, sde_name):
    """A model whose network outputs ε, D, v or u yields the same five views as the score."""
    sde = make_sde(sde_name, 10)
    truth = gaussian_model(3).view(sde)
    x = torch.randn(4, 3, dtype=torch.float64)
    t = 0.4 * sde.T

    def fn(x, t):
        return getattr(truth, KINDS[native])(x, t)

    view = ModelView(fn, native, sde)
    for name in KINDS.values():
        torch.testing.assert_close(
            getattr(view, name)(x, t), getattr(truth, name)(x, t), rtol=1e-11, atol=1e-11
        )
    assert view.calls == 5  # a conversion is never an extra evaluation


@pytest.mark.parametrize("sde_name", ALL_SDES)
@pytest.mark.parametrize("frac", [0.999, 0.5, 0.02])
def test_velocity_is_the_probability_flow_drift(make_sde, sde_name, frac):
    """u = a'·D + std'·ε equals dx/dt = f·x − ½g²·s of Eq. 13 from the SDE's own f and g; on
    flow it is also E[z − x₀ | x_t] = ε − D."""
    sde = make_sde(sde_name, 10)
    t = frac * sde.T
    view = gaussian_model(3).view(sde)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    drift, _ = sde.reverse(view.score, probability_flow=True).sde(x, t)
    u = view.velocity(x, t)
    torch.testing.assert_close(u, drift, rtol=1e-9, atol=1e-9 * float(drift.abs().max()))
    if sde_name == "flow":
        eps, D = closed_form(sde, x, t)
        torch.testing.assert_close(u, eps - D, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde_name", ALL_SDES)
def test_marginal_rates_are_the_derivatives_of_the_marginals(make_sde, sde_name):
    """(a', std') from f and g (or the SDE's closed form) against central differences."""
    sde = make_sde(sde_name, 10)
    for t in (0.05 * sde.T, 0.5 * sde.T, 0.9 * sde.T):
        h = 1e-6 * sde.T
        (a_hi, s_hi), (a_lo, s_lo) = sde.marginal_coef(t + h), sde.marginal_coef(t - h)
        da, dstd = sde.marginal_rates(t)
        assert da == pytest.approx((a_hi - a_lo) / (2 * h), rel=1e-6, abs=1e-9)
        assert dstd == pytest.approx((s_hi - s_lo) / (2 * h), rel=1e-6)


@pytest.mark.parametrize("sde_name", ALL_SDES)
@pytest.mark.parametrize("frac", [0.9, 0.3, 0.01])
def test_v_closed_form(make_sde, sde_name, frac):
    """v = (a·ε − std·x₀)/r, r = sqrt(a² + std²), from the Gaussian's closed-form ε and D; it
    inverts as x₀ = (a·x − r·std·v)/r² and ε = (std·x + r·a·v)/r² (Salimans & Ho 2022, §4)."""
    sde = make_sde(sde_name, 10)
    t = frac * sde.T
    a, std = sde.marginal_coef(t)
    r = math.hypot(a, std)
    view = gaussian_model(3).view(sde)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    eps, D = closed_form(sde, x, t)
    v = view.v(x, t)
    torch.testing.assert_close(v, (a * eps - std * D) / r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close((a * x - r * std * v) / r**2, D, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close((std * x + r * a * v) / r**2, eps, rtol=1e-10, atol=1e-10)


def test_v_on_vp_is_diffusers_get_velocity(make_sde):
    """On VP (a² + std² = 1) v is Salimans & Ho's α·ε − σ·x₀: diffusers' DDPMScheduler
    ``get_velocity`` at a table entry ᾱ = a(t)² gives the same from the same (x₀, ε)."""
    diffusers = pytest.importorskip("diffusers")
    sde = make_sde("vp", 10)
    gen = torch.Generator().manual_seed(4)
    x0, z = (torch.randn(5, 3, dtype=torch.float64, generator=gen) for _ in range(2))
    sched = diffusers.DDPMScheduler()
    for t in (0.9, 0.3, 0.01):
        a, std = sde.marginal_coef(t)
        sched.alphas_cumprod = torch.tensor([a * a], dtype=torch.float64)
        expected = sched.get_velocity(x0, z, torch.tensor([0]))
        x = a * x0 + std * z
        # A model that predicts exactly this (x₀, z): its D and ε views return them.
        view = ModelView(lambda x, t: x0, "x0", sde)
        got = view.v(x, t)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_a_view_is_a_score_function():
    sde_cls = pytest.importorskip("bench_plugins.sdes").VPSDE
    sde = sde_cls(10)
    view = ModelView(lambda x, t: x * 2, "score", sde)
    assert torch.equal(view(torch.ones(2), 0.5), torch.full((2,), 2.0)) and view.calls == 1
    with pytest.raises(ValueError, match="native output"):
        ModelView(lambda x, t: x, "noise", sde)


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


def test_a_velocity_model_converts_where_a_is_zero(make_sde):
    """On flow at t = 1 (a = 0, x = z): ε = x, s = −x and x̂₀ = x − u from the velocity u alone;
    the conversion divides by nothing that vanishes there."""
    sde = make_sde("flow", 10)
    gen = torch.Generator().manual_seed(6)
    u, x = (torch.randn(4, 3, dtype=torch.float64, generator=gen) for _ in range(2))
    view = ModelView(lambda x, t: u, "velocity", sde)
    torch.testing.assert_close(view.eps(x, 1.0), x, rtol=0, atol=1e-15)
    torch.testing.assert_close(view.score(x, 1.0), -x, rtol=0, atol=1e-15)
    torch.testing.assert_close(view.denoise(x, 1.0), x - u, rtol=0, atol=1e-15)
    assert view.calls == 3
