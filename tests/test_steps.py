"""Every predictor and corrector, one step, against the closed-form vectors of score_sde.md §11.1."""

from __future__ import annotations

import math

import pytest
import torch

from tests import reference as ref

X, T, Z, N, SNR = 0.3, 0.5, 0.7, 1000, 0.16

# (sde, predictor, probability_flow) -> (x_mean, x), copied from §11.1 "Concrete numbers".
PREDICTOR_VECTORS = {
    ("ve", "reverse_diffusion", False): (0.303104324853, 0.367190374664),
    ("ve", "reverse_diffusion", True): (0.301552162426, 0.301552162426),
    ("ve", "ancestral_sampling", False): (0.303104324853, 0.366646317552),
    ("ve", "euler_maruyama", False): (0.303154515997, 0.367756564446),
    ("vp", "reverse_diffusion", False): (0.299777881696, 0.369917881835),
    ("vp", "reverse_diffusion", True): (0.300643843444, 0.300643843444),
    ("vp", "ancestral_sampling", False): (0.299776758190, 0.369916758330),
    ("vp", "euler_maruyama", False): (0.299773858394, 0.369948640189),
    ("subvp", "euler_maruyama", False): (0.299637339552, 0.369592443189),
    ("subvp", "reverse_diffusion", False): (0.299637339552, 0.369592443189),
    ("subvp", "reverse_diffusion", True): (0.300572419776, 0.300572419776),
}

# (sde, corrector) -> (x_mean, x); sub-VP uses alpha = 1 - beta_k (the documented choice).
CORRECTOR_VECTORS = {
    ("ve", "langevin"): (0.3677376, 0.7910976),
    ("ve", "ald"): (0.309481481481, 0.467873400467),
    ("vp", "langevin"): (0.156023898115, 1.06042610539),
    ("vp", "ald"): (0.291947877220, 0.505828579947),
    ("subvp", "langevin"): (0.167368240451, 1.00050967518),
    ("subvp", "ald"): (0.291950242325, 0.497201757438),
}


def exact_score(sde_name):
    def score(x, t):
        m, var = ref.marginal(sde_name, t)
        return -(x - m) / var

    return score


def fixed_noise(x):
    return torch.full_like(x, Z)


def x0():
    return torch.full((1, 1), X, dtype=torch.float64)


@pytest.mark.parametrize("key", sorted(PREDICTOR_VECTORS))
def test_predictor_one_step(key, registry, make_sde):
    sde_name, name, pf = key
    predictor = registry.get("predictors", name).obj(
        make_sde(sde_name, N), exact_score(sde_name), pf, fixed_noise
    )
    x, x_mean = predictor.update(x0(), T)
    expected_mean, expected_x = PREDICTOR_VECTORS[key]
    assert x_mean.item() == pytest.approx(expected_mean, abs=1e-6)
    assert x.item() == pytest.approx(expected_x, abs=1e-6)


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_euler_maruyama_probability_flow_one_step(sde_name, registry, make_sde):
    """Not in the table: EM on the probability-flow ODE, x + (−c·x + ½g²s)/N, no noise."""
    predictor = registry.get("predictors", "euler").obj(
        make_sde(sde_name, N), exact_score(sde_name), True, fixed_noise
    )
    x, x_mean = predictor.update(x0(), T)
    A, b, _ = ref.predictor_affine(sde_name, "em_pf", T, N)
    assert x.item() == x_mean.item() == pytest.approx(A * X + b, abs=1e-12)


@pytest.mark.parametrize("key", sorted(CORRECTOR_VECTORS))
def test_corrector_one_step(key, registry, make_sde):
    sde_name, name = key
    corrector = registry.get("correctors", name).obj(
        make_sde(sde_name, N), exact_score(sde_name), SNR, 1, fixed_noise
    )
    x, x_mean = corrector.update(x0(), T)
    expected_mean, expected_x = CORRECTOR_VECTORS[key]
    assert x_mean.item() == pytest.approx(expected_mean, abs=1e-6)
    assert x.item() == pytest.approx(expected_x, abs=1e-6)


def test_langevin_step_size_uses_batch_mean_norms(registry, make_sde):
    """ε = 2α(r·mean‖z‖/mean‖s‖)², one scalar for the whole batch (Alg. 4)."""
    sde = make_sde("ve", N)
    x = torch.tensor([[0.3, -1.0], [2.0, 0.5]], dtype=torch.float64)
    z = torch.tensor([[0.7, 0.1], [-0.2, 1.5]], dtype=torch.float64)
    corrector = registry.get("correctors", "langevin").obj(
        sde, exact_score("ve"), SNR, 1, lambda _: z
    )
    _, x_mean = corrector.update(x, T)
    s = exact_score("ve")(x, T)
    eps = 2 * (SNR * z.norm(dim=1).mean() / s.norm(dim=1).mean()) ** 2
    torch.testing.assert_close(x_mean, x + eps * s, rtol=0, atol=1e-12)


def test_none_components_do_nothing(registry, make_sde):
    sde = make_sde("vp", N)
    calls = []

    def score(x, t):
        calls.append(t)
        return x

    p = registry.get("predictors", "none").obj(sde, score, False, fixed_noise)
    c = registry.get("correctors", "none").obj(sde, score, SNR, 3, fixed_noise)
    for step in (p, c):
        x, x_mean = step.update(x0(), T)
        assert x.item() == x_mean.item() == X
    assert calls == []


def test_corrector_steps_repeat_at_the_same_time(registry, make_sde):
    times = []

    def score(x, t):
        times.append(t)
        return -x

    c = registry.get("correctors", "ald").obj(make_sde("ve", N), score, SNR, 4, fixed_noise)
    c.update(x0(), T)
    assert times == [T] * 4


def test_derived_quantities_at_t_half(make_sde):
    """The derived numbers of §11.1 (k, σ_k, β_k, g_sub²)."""
    ve, vp, subvp = make_sde("ve"), make_sde("vp"), make_sde("subvp")
    assert ve.index(T) == vp.index(T) == 499
    assert ve.discrete_sigma(499) == pytest.approx(0.7040989000, abs=1e-9)
    assert ve.discrete_sigma(498) == pytest.approx(0.6981214679, abs=1e-9)
    assert vp.discrete_beta(499) == pytest.approx(0.01004004004, abs=1e-11)
    assert subvp.sde(x0(), T)[1] ** 2 == pytest.approx(9.987176581, abs=1e-8)
    assert vp.langevin_alpha(T) == pytest.approx(0.98995995996, abs=1e-11)
    assert math.isclose(ve.langevin_alpha(T), 1.0)
