"""``sa_solver`` and ``dpmpp_2m_sde`` against diffusers' schedulers, fed the same noise.

diffusers is an independent implementation. Its ``SASolverScheduler`` (data prediction) and
``EDMDPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")`` run on their own σ̃ grid;
the suite runs on the same grid (a = 1/sqrt(σ̃² + 1), std = σ̃·a for the VP scheduler, a = 1 for
EDM's) with the exact Gaussian denoiser, and diffusers' noise (``randn_tensor``) is replaced by
the suite's: the step's normalised Brownian increment. diffusers ends its grid at its last σ̃
(> 0 for SA-Solver), the suite at σ = 0, so the states after every step but the last are
compared: they agree to 1e-9 in float64. diffusers' ``DPMSolverSDEScheduler`` is k-diffusion's
``sample_dpmpp_sde`` (a single-step method with 2 evaluations per step), which the suite does
not have: nothing to compare.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.core.brownian import BrownianPath
from bench.core.noise import SampleNoise
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView
from tests.oracle import MEAN, STD

pytestmark = pytest.mark.usefixtures("one_thread")

SEED, BATCH, DIM = 2, 5, 3


def denoiser_on(grid: TimeGrid):
    """The exact denoiser of N(MEAN, STD²) at the grid's (a_i, std_i), keyed by t_i."""
    coef = {t: (a, s) for t, a, s in zip(grid.t, grid.alpha, grid.sigma)}

    def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
        a, s = coef[t]
        v = a * a * STD**2 + s * s
        return (x - a * MEAN) * (a * STD**2 / v) + MEAN

    return denoise


def run_ours(registry, name, sde, grid, x_T, **options):
    """The suite's sampler on ``grid``; the state after each step (the callback's x)."""
    cls = registry.get("samplers", name).obj
    view = ModelView(denoiser_on(grid), "x0", sde)
    states: list[torch.Tensor] = []
    with torch.no_grad():
        cls(cls.Options(**options)).sample(
            x_T, grid, view, SampleNoise(SEED, 0, BATCH), lambda s: states.append(s["x"].clone())
        )
    return states


def patched_noise(monkeypatch, module, grid: TimeGrid, T: float):
    """Make ``module.randn_tensor`` return the suite's noise of step i at its i-th call."""
    path, calls = BrownianPath(SEED, 0, BATCH, T), iter(range(grid.steps))
    like = torch.empty(BATCH, DIM, dtype=torch.float64)

    def randn_tensor(shape, **kwargs):
        i = next(calls)
        return path.normal(grid.t[i], grid.t[i + 1], like)

    monkeypatch.setattr(module, "randn_tensor", randn_tensor)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"predictor_order": 3, "corrector_order": 3},
        {"predictor_order": 1, "corrector_order": 1, "tau": 0.7, "tau_start": 0.0},
        {"predictor_order": 4, "corrector_order": 4, "tau": 1.0, "tau_start": 0.0},
        {"predictor_order": 2, "corrector_order": 3, "lower_order_final": False},
    ],
    ids=str,
)
@pytest.mark.parametrize("N", [6, 15])
def test_sa_solver_equals_diffusers(registry, monkeypatch, options, N):
    diffusers = pytest.importorskip("diffusers")
    from diffusers.schedulers import scheduling_sasolver

    defaults = {"predictor_order": 2, "corrector_order": 2, "tau": 1.0, "tau_start": 0.2}
    o = defaults | options
    tau_end = o.get("tau_end", 0.8)

    def tau_func(k):
        return o["tau"] if o["tau_start"] * 1000 <= k <= tau_end * 1000 else 0.0

    sched = diffusers.SASolverScheduler(
        predictor_order=o["predictor_order"],
        corrector_order=o["corrector_order"],
        prediction_type="sample",
        tau_func=tau_func,
        lower_order_final=o.get("lower_order_final", True),
    )
    sched.set_timesteps(N)
    sched.sigmas = sched.sigmas.double()
    sig = [float(s) for s in sched.sigmas]  # σ̃ at the N timesteps, then diffusers' last σ̃
    a = [1 / math.sqrt(s * s + 1) for s in sig]
    times = [int(k) / 1000 for k in sched.timesteps]
    grid = TimeGrid(
        tuple(times) + (0.0,),
        tuple(a[:N]) + (1.0,),
        tuple(s * b for s, b in zip(sig, a))[:N] + (0.0,),
    )
    sde = registry.get("sdes", "vp").obj(1000)
    x_T = torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = run_ours(registry, "sa_solver", sde, grid, x_T, **options)
    patched_noise(monkeypatch, scheduling_sasolver, grid, sde.T)
    denoise, x, theirs = denoiser_on(grid), x_T.clone(), []
    for i, k in enumerate(sched.timesteps):
        x = sched.step(denoise(x, grid.t[i]), k, x).prev_sample
        theirs.append(x)
    for i in range(N - 1):
        assert (ours[i] - theirs[i]).abs().max() < 1e-9, f"step {i}"


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("N", [5, 12, 20])
def test_dpmpp_2m_sde_equals_diffusers_edm_sde_dpmsolver(registry, monkeypatch, solver_type, N):
    """diffusers' ``sde-dpmsolver++`` is η = 1; with ``lower_order_final`` (N < 15) its step
    before the last is second order anyway, and its last, into σ = 0, is x = D: the whole run is
    ``dpmpp_2m_sde`` on the same Karras σ's (the suite's ``edm`` SDE: a = 1, t = σ)."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.schedulers import scheduling_edm_dpmsolver_multistep as module

    sched = diffusers.EDMDPMSolverMultistepScheduler(
        algorithm_type="sde-dpmsolver++", solver_type=solver_type, solver_order=2
    )
    sched.set_timesteps(N)
    sched.sigmas = sched.sigmas.double()
    sde = registry.get("sdes", "edm").obj(1000)
    grid = TimeGrid.build(sde, [float(s) for s in sched.sigmas[:N]])
    x_T = torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_T = x_T * grid.t[0]
    ours = run_ours(registry, "dpmpp_2m_sde", sde, grid, x_T, solver_type=solver_type)
    patched_noise(monkeypatch, module, grid, sde.T)
    denoise, x = denoiser_on(grid), x_T.clone()
    for i, k in enumerate(sched.timesteps):
        sigma = grid.t[i]
        c_skip, c_out = 0.25 / (sigma**2 + 0.25), sigma * 0.5 / math.sqrt(sigma**2 + 0.25)
        output = (denoise(x, sigma) - c_skip * x) / c_out  # so that its x0_pred is D
        x = sched.step(output, k, x).prev_sample
    assert (ours[-1] - x).abs().max() < 1e-9
