"""The pc sampler: bit-identical to the loop before time grids on the uniform schedule, older
update(x, t) plugins keep working there, and off the paper's grid a step spans t → t_next."""

from __future__ import annotations

import pytest
import torch

from bench.core.noise import SampleNoise
from bench.core.pc import PCSampler, Predictor, takes_t_next
from bench.errors import Unsupported
from tests.oracle import exact_flow, gaussian_model, prior, run
from tests.sampling import paper_grid

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none")
CORRECTORS = ("langevin", "ald", "none")


def previous_loop(sde, predictor, corrector, x_T):
    """The PC loop as it was before time grids: t over linspace(T, eps, N), update(x, t)."""
    x = x_mean = x_T
    for t in sde.timesteps():
        x, x_mean = corrector.update(x, t)
        x, x_mean = predictor.update(x, t)
    return x_mean


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("predictor", PREDICTORS)
@pytest.mark.parametrize("corrector", CORRECTORS)
@pytest.mark.parametrize("pf", [False, True])
def test_uniform_schedule_is_bit_identical_to_the_previous_loop(
    registry, make_sde, sde_name, predictor, corrector, pf
):
    P = registry.get("predictors", predictor).obj
    C = registry.get("correctors", corrector).obj
    sde = make_sde(sde_name, 40)
    try:
        P.supports(sde, pf)
        C.supports(sde)
    except Unsupported:
        pytest.skip("an unsupported pairing is a table row")
    model = registry.get("score-models", "ring8").obj.load(
        None, device=torch.device("cpu"), dtype=torch.float32
    )
    x_T = sde.prior_sampling(torch.randn(32, 2, generator=torch.Generator().manual_seed(3)))
    sampler = PCSampler(P, C, snr=0.16, corrector_steps=2, probability_flow=pf)
    grid = registry.get("schedules", "uniform").obj().grid(sde, 40)
    sde.discrete = grid.paper
    with torch.no_grad():
        new = sampler.sample(x_T, grid, model.view(sde), SampleNoise(5, 0, x_T.shape[0]))
        score, noise = model.score_fn(sde), SampleNoise(5, 0, x_T.shape[0])
        old = previous_loop(sde, P(sde, score, pf, noise), C(sde, score, 0.16, 2, noise), x_T)
    assert torch.equal(new, old)


class OldStyle(Predictor):
    """A predictor written before time grids: update(x, t), dt = −1/N (test only)."""

    name = "old_style"

    def update(self, x, t):
        drift, _ = self.rsde.sde(x, t)
        x_mean = x - drift / self.sde.N
        return x_mean, x_mean


def test_an_update_x_t_predictor_runs_on_uniform_and_is_unsupported_elsewhere(registry, make_sde):
    assert not takes_t_next(OldStyle) and takes_t_next(registry.get("predictors", "euler").obj)
    none = registry.get("correctors", "none").obj
    sampler = PCSampler(OldStyle, none, probability_flow=True)
    sde = make_sde("vp", 20)
    sampler.supports(sde, registry.get("schedules", "uniform").obj())
    x_T = prior(sde, 8, 2)
    x, nfe = run(sampler, sde, paper_grid(sde), gaussian_model(2), x_T)
    assert nfe == 20 and bool(torch.isfinite(x).all())
    with pytest.raises(Unsupported, match="uniform schedule only"):
        sampler.supports(sde, registry.get("schedules", "edm").obj())


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
@pytest.mark.parametrize("schedule", ["edm", "logsnr", "quadratic"])
def test_off_the_paper_grid_probability_flow_euler_converges_at_first_order(
    registry, make_sde, sde_name, schedule
):
    """dt = t_next − t: the error of the PF Euler predictor halves when N doubles."""
    P = registry.get("predictors", "euler").obj
    C = registry.get("correctors", "none").obj
    errors = []
    for N in (200, 400):
        sde = make_sde(sde_name, N)
        grid = registry.get("schedules", schedule).obj().grid(sde, N)
        x_T = prior(sde, 16, 2)
        x, _ = run(PCSampler(P, C, probability_flow=True), sde, grid, gaussian_model(2), x_T)
        target = exact_flow(sde, x_T, 1e-300)  # the t-flow's end (VE: σ(0) = σ_min)
        errors.append(float((x - target).abs().max()))
    assert 1.6 < errors[0] / errors[1] < 2.4, errors
