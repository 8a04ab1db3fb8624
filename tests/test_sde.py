"""SDE classes: marginals, the forward-variance ODE, discrete tables and the time grid (§2, §11.5)."""

from __future__ import annotations

import math

import pytest
import torch

from tests import reference as ref


def test_reference_constants(make_sde):
    """Values quoted in score_sde.md §2.2–2.4."""
    ve, vp, subvp = make_sde("ve"), make_sde("vp"), make_sde("subvp")
    assert ve.sigma(1e-5) == pytest.approx(0.0100008518, abs=1e-10)
    assert vp.marginal_coef(1.0)[0] == pytest.approx(0.0065716, abs=1e-7)
    assert vp.marginal_coef(1.0)[1] == pytest.approx(0.99998, abs=1e-5)
    assert vp.marginal_coef(1e-3)[1] == pytest.approx(0.0104854, abs=1e-7)
    assert subvp.marginal_coef(1.0)[1] == pytest.approx(0.999957, abs=1e-6)
    assert subvp.marginal_coef(1e-3)[1] == pytest.approx(1.0994e-4, rel=1e-4)
    assert 2 * math.log(ve.sigma_max / ve.sigma_min) == pytest.approx(17.0344, abs=1e-4)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("t", [0.01, 0.3, 0.77, 0.999])
def test_marginals_match_closed_form(name, t, make_sde):
    sde = make_sde(name)
    a, std = sde.marginal_coef(t)
    m, var = ref.marginal(name, t)
    assert a * ref.MU == pytest.approx(m, rel=1e-12)
    assert a**2 * ref.S**2 + std**2 == pytest.approx(var, rel=1e-12)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("t", [0.05, 0.5, 0.9])
def test_forward_variance_ode(name, t, make_sde):
    """dS/dt = 2c(t)S + g(t)² — a self-check tying sde() to marginal_coef() (§11)."""
    sde = make_sde(name)

    def S(u):
        a, std = sde.marginal_coef(u)
        return a**2 * ref.S**2 + std**2

    h = 1e-6
    dS = (S(t + h) - S(t - h)) / (2 * h)
    x = torch.ones(1, 1, dtype=torch.float64)
    drift, g = sde.sde(x, t)
    c = drift.item()  # f(1, t) = c(t)
    assert dS == pytest.approx(2 * c * S(t) + g**2, rel=1e-6)


def test_grid_and_indices_n1000():
    """§11.5: t_0 = 1, t_999 = eps, k(t_i) = 999 − i, last step uses β_0 = 1e-4."""
    from bench_plugins.sdes import VPSDE

    sde = VPSDE(1000)
    grid = sde.timesteps()
    assert len(grid) == 1000 and grid[0] == 1.0 and grid[-1] == pytest.approx(1e-3, abs=1e-15)
    assert [sde.index(t) for t in grid] == list(range(999, -1, -1))
    assert sde.discrete_beta(sde.index(grid[-1])) == pytest.approx(1e-4)


def test_index_edge_case_n2000():
    """§11.5: N = 2000, eps = 1e-3 repeats an index and never reaches 0 (reference behaviour)."""
    from bench_plugins.sdes import VPSDE

    sde = VPSDE(2000)
    grid = sde.timesteps()
    assert sde.index(grid[1000]) == sde.index(grid[999]) == 1000
    assert sde.index(grid[1999]) == 1


def test_ddpm_tables():
    """β ∈ [1e-4, 0.02]; sqrt(1 − ᾱ) from 0.0100 to 0.99998; ᾱ_999 = 4.0358e-5."""
    from bench_plugins.sdes import VPSDE

    sde = VPSDE(1000)
    betas = torch.tensor([sde.discrete_beta(k) for k in range(1000)], dtype=torch.float64)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    alphas_bar = torch.cumprod(1 - betas, 0)
    assert (1 - alphas_bar[0]).sqrt().item() == pytest.approx(0.0100, abs=1e-4)
    assert (1 - alphas_bar[-1]).sqrt().item() == pytest.approx(0.99998, abs=1e-5)
    assert alphas_bar[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)


def test_ve_ladder_endpoints():
    from bench_plugins.sdes import VESDE

    sde = VESDE(1000)
    assert sde.discrete_sigma(0) == pytest.approx(0.01)
    assert sde.discrete_sigma(999) == pytest.approx(50.0)
    assert sde.discrete_sigma(-1) == 0.0


def test_single_step_grid_is_valid():
    from bench_plugins.sdes import VESDE, VPSDE

    for cls in (VESDE, VPSDE):
        sde = cls(1)
        assert sde.timesteps() == [1.0] and sde.index(1.0) == 0


def test_prior_logp_and_sampling(make_sde):
    z = torch.randn(5, 3, dtype=torch.float64)
    ve, vp = make_sde("ve"), make_sde("vp")
    assert torch.equal(ve.prior_sampling(z), 50.0 * z)
    normal = torch.distributions.Normal(0.0, 50.0)
    torch.testing.assert_close(
        ve.prior_logp(ve.prior_sampling(z)), normal.log_prob(50.0 * z).sum(1)
    )
    torch.testing.assert_close(
        vp.prior_logp(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    )


def test_options_validated():
    from bench_plugins.sdes import VESDE, VPSDE

    with pytest.raises(ValueError):
        VESDE.Options(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError):
        VPSDE.Options(eps=0.0)
    assert VESDE(10, VESDE.Options(eps=1e-4)).eps == 1e-4
    assert VESDE(10).eps == 1e-5 and VPSDE(10).eps == 1e-3


def test_subvp_reverse_diffusion_equals_euler(make_sde):
    """sub-VP has no discretize override: f_i = f/N, G_i = g/√N (§2.4)."""
    sde = make_sde("subvp")
    x = torch.tensor([[0.4]], dtype=torch.float64)
    f, G = sde.discretize(x, 0.3)
    drift, g = sde.sde(x, 0.3)
    assert f.item() == pytest.approx(drift.item() / 1000)
    assert G == pytest.approx(g / math.sqrt(1000))
