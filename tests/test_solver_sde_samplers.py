"""``er_sde``, ``restart`` and ``ggf`` against independent references, and what every new
stochastic sampler promises (counted NFE, batch invariance, options).

* ER-SDE-Solver-1 with the noise scale φ(σ) = σ² is Euler ancestral at η = 1, and with φ(σ) = σ
  it is the deterministic ``euler`` sampler (Cui et al. 2023: the family holds the reverse SDE
  and the probability-flow ODE): both equal the suite's own samplers on the same noise. Orders 2 and 3 equal a loop
  written here from the paper's updates in the official code's indexing (QinpengCui/
  ER-SDE-Solver, ``ve_xstart_*``: first order at the first step and into σ = 0), and the two
  quadratures equal a direct sum and scipy's adaptive quadrature.
* Restart with K = 0 is EDM's Heun (``heun``); with restarts it equals a loop written here from
  Xu et al. 2023, Alg. 1 in the official code's form (the interval attached to the grid level
  nearest σ_min, sequential draws for the jumps), and its counted NFE is the nominal one.
* Gotta Go Fast: for one sample the shared step size is the official per-sample one; it equals
  a loop written here from Jolicoeur-Martineau et al. 2021, Alg. 1; every attempted step costs
  two evaluations (counted); tighter tolerances cost more evaluations and land closer to the
  exact distribution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from bench.core.brownian import BrownianPath
from bench.core.noise import SampleNoise
from bench.core.views import ModelView
from tests.oracle import MEAN, STD, gaussian_model, max_err, prior

pytestmark = pytest.mark.usefixtures("one_thread")

SEED, BATCH, DIM = 4, 6, 3


@pytest.fixture(scope="module")
def model():
    return gaussian_model(DIM)


def make(registry, name, **options):
    cls = registry.get("samplers", name).obj
    return cls(cls.Options(**options))


def setup(registry, sde_name, schedule, N):
    sde = registry.get("sdes", sde_name).obj(1000)
    grid = registry.get("schedules", schedule).obj().grid(sde, N)
    sde.discrete = grid.paper
    return sde, grid


def run(sampler, model, sde, grid, x_T, noise=None):
    view = ModelView(model.native_fn(sde), model.native, sde)
    with torch.no_grad():
        x = sampler.sample(x_T, grid, view, noise or SampleNoise(SEED, 0, x_T.shape[0]))
    return x, view.calls


# -- ER-SDE-Solver ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", [("vp", "edm", 9), ("ve", "edm", 14), ("subvp", "logsnr", 7)])
def test_er_sde_special_cases_are_euler_ancestral_and_euler(registry, model, case):
    sde, grid = setup(registry, *case)
    x_T = prior(sde, BATCH, DIM)
    sde_case, _ = run(
        make(registry, "er_sde", order=1, scale="sde", clip=0.0), model, sde, grid, x_T
    )
    ancestral, _ = run(make(registry, "euler_ancestral"), model, sde, grid, x_T)
    ode_case, _ = run(make(registry, "er_sde", order=1, scale="ode"), model, sde, grid, x_T)
    euler, _ = run(make(registry, "euler"), model, sde, grid, x_T)
    assert max_err(sde_case, ancestral) < 1e-10 and max_err(ode_case, euler) < 1e-10
    assert max_err(sde_case, euler) > 1e-3


def er_sde_reference(fn, order, sigmas, alphas, times, denoise, x, normals, clip):
    """ER-SDE-Solver-1/2/3 (Cui et al. 2023) in σ̃ (x̃ = x/a), the official code's branches and
    100-point left Riemann sums, written out step by step."""
    x = x / alphas[0]
    old, old_d = None, None
    for i in range(len(sigmas) - 1):
        s, s1 = sigmas[i], sigmas[i + 1]
        x0 = denoise(x * alphas[i], times[i])
        r = fn(s1) / fn(s) if s1 > 0 else 0.0
        var = s1**2 - s**2 * r**2
        noise = math.sqrt(var) * normals[i] if abs(var) >= clip and var > 0 else 0.0
        grid = [s1 + j / 100 * (s - s1) for j in range(100)] if s1 > 0 else [1.0]
        s_int = sum((s - s1) / 100 / fn(u) for u in grid)
        s_d_int = sum((u - s) * (s - s1) / 100 / fn(u) for u in grid)
        if old is None or s1 == 0 or order == 1:
            x = r * x + (1 - r) * x0 + noise
        elif old_d is None or order == 2:
            d = (x0 - old) / (s - sigmas[i - 1])
            x = r * x + (1 - r) * x0 + (s1 - s + s_int * fn(s1)) * d + noise
            old_d = d
        else:
            d = (x0 - old) / (s - sigmas[i - 1])
            dd = 2 * (d - old_d) / (s - sigmas[i - 2])
            x = r * x + (1 - r) * x0 + (s1 - s + s_int * fn(s1)) * d
            x = x + ((s1 - s) ** 2 / 2 + s_d_int * fn(s1)) * dd + noise
            old_d = d
        old = x0
    return x * alphas[-1]


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("scale", ["sde_5", "sde_4", "sde_1"])
@pytest.mark.parametrize("case", [("ve", "edm", 12), ("vp", "edm", 6)])
def test_er_sde_equals_the_papers_loop(registry, model, order, scale, case):
    from bench_plugins.samplers.er_sde import SCALES

    sde, grid = setup(registry, *case)
    x_T = prior(sde, BATCH, DIM)
    ours, calls = run(make(registry, "er_sde", order=order, scale=scale), model, sde, grid, x_T)
    path = BrownianPath(SEED, 0, BATCH, sde.T)
    normals = [path.normal(t, u, x_T) for t, u in zip(grid.t, grid.t[1:])]
    view = ModelView(model.native_fn(sde), model.native, sde)
    sigmas = [s / a for a, s in zip(grid.alpha, grid.sigma)]
    ref = er_sde_reference(
        SCALES[scale], order, sigmas, grid.alpha, grid.t, view.denoise, x_T, normals, 1e-6
    )
    assert max_err(ours, ref) < 1e-10 and calls == grid.steps


@pytest.mark.parametrize("scale", ["sde_5", "sde_2", "sde"])
def test_er_sde_quadratures(scale):
    from bench_plugins.samplers.er_sde import SCALES, integrals

    fn, lo, hi = SCALES[scale], 0.3, 2.5
    s1, s2 = integrals(fn, lo, hi, "riemann", 100)
    nodes = lo + np.arange(100) / 100 * (hi - lo)
    assert s1 == pytest.approx(sum((hi - lo) / 100 / fn(u) for u in nodes), rel=1e-12)
    assert s2 == pytest.approx(sum((u - hi) * (hi - lo) / 100 / fn(u) for u in nodes), rel=1e-12)
    g1, g2 = integrals(fn, lo, hi, "gauss", 32)
    assert g1 == pytest.approx(integrate.quad(lambda u: 1 / fn(u), lo, hi, epsabs=0)[0], rel=1e-10)
    exact2 = integrate.quad(lambda u: (u - hi) / fn(u), lo, hi, epsabs=0)[0]
    assert g2 == pytest.approx(exact2, rel=1e-10)
    assert abs(s1 - g1) > 1e-4 * abs(g1)  # the official rule is visibly coarser


# -- Restart ------------------------------------------------------------------------------------


def test_restart_without_restarts_is_heun(registry, model):
    sde, grid = setup(registry, "vp", "edm", 10)
    x_T = prior(sde, BATCH, DIM)
    ours, calls = run(
        make(registry, "restart", intervals=[[3, 0, 0.14, 0.3]]), model, sde, grid, x_T
    )
    heun, heun_calls = run(make(registry, "heun"), model, sde, grid, x_T)
    assert max_err(ours, heun) < 1e-12 and calls == heun_calls == 2 * grid.steps - 1


def heun_levels(denoise, x, levels, times, alphas):
    """EDM's Heun over consecutive levels (the last an Euler step into 0), scaled state."""
    for k in range(len(levels) - 1):
        s, s1 = levels[k], levels[k + 1]
        d = (x - denoise(x * alphas[k], times[k])) / s
        x1 = x + (s1 - s) * d
        if s1 > 0:
            d1 = (x1 - denoise(x1 * alphas[k + 1], times[k + 1])) / s1
            x1 = x + (s1 - s) * (d + d1) / 2
        x = x1
    return x


def restart_reference(sde, grid, denoise, x_T, intervals, draws, rho=7.0):
    """Xu et al. 2023, Alg. 1 in the official code's form: Heun down the main grid; after the
    step into the level nearest σ_min, K jumps to σ_max each followed by Heun down a Karras
    grid of N_restart levels."""
    sig = [s / a for a, s in zip(grid.alpha, grid.sigma)]
    attach = {min(range(len(sig)), key=lambda j: abs(sig[j] - iv[2])): iv for iv in intervals}
    x = x_T / grid.alpha[0]
    for i in range(grid.steps):
        x = heun_levels(denoise, x, sig[i : i + 2], grid.t[i : i + 2], grid.alpha[i : i + 2])
        if i + 1 in attach:
            n, k, _, s_max = attach[i + 1]
            hi, lo = s_max ** (1 / rho), sig[i + 1] ** (1 / rho)
            levels = [(hi + j / (n - 1) * (lo - hi)) ** rho for j in range(n)]
            times = [sde.t_of_log_snr(-math.log(s)) for s in levels[:-1]] + [grid.t[i + 1]]
            alphas = [sde.marginal_coef(t)[0] for t in times]
            for _ in range(k):
                x = x + draws(x) * math.sqrt(s_max**2 - sig[i + 1] ** 2)
                x = heun_levels(denoise, x, levels, times, alphas)
    return x


@pytest.mark.parametrize("intervals", [[[3, 2, 0.14, 0.30]], [[4, 1, 0.5, 1.5], [2, 3, 0.05, 0.2]]])
@pytest.mark.parametrize("case", [("ve", "edm", 18), ("vp", "edm", 12)])
def test_restart_equals_the_papers_loop(registry, model, intervals, case):
    sde, grid = setup(registry, *case)
    x_T = prior(sde, BATCH, DIM)
    sampler = make(registry, "restart", intervals=intervals)
    ours, calls = run(sampler, model, sde, grid, x_T)
    view = ModelView(model.native_fn(sde), model.native, sde)
    draws = SampleNoise(SEED, 0, BATCH)
    ref = restart_reference(sde, grid, view.denoise, x_T, intervals, draws)
    assert max_err(ours, ref) < 1e-10
    assert calls == sampler.nfe_nominal(grid.steps) > 2 * grid.steps - 1


def test_restart_interval_off_the_grid_is_unsupported(registry, model):
    from bench.errors import Unsupported

    sde, grid = setup(registry, "vp", "edm", 10)
    with pytest.raises(Unsupported, match="lands on grid level"):
        run(
            make(registry, "restart", intervals=[[3, 1, 1e-9, 1e-8]]),
            model,
            sde,
            grid,
            prior(sde, 2, DIM),
        )


# -- Gotta Go Fast ------------------------------------------------------------------------------


def ggf_reference(sde, score, x, eps, opt, normals):
    """Jolicoeur-Martineau et al. 2021, Alg. 1 for one sample, improved Euler with
    extrapolation and the mixed tolerance (the official defaults); returns (x, attempts)."""
    t, h, x_prev, attempts = sde.T, opt["h_init"], x, 0
    while abs(t - eps) > 1e-6:
        z = normals(x)
        attempts += 1
        f, g = sde.sde(x, t)
        k1 = -h * (f - g**2 * score(x, t)) + g * math.sqrt(h) * z
        f2, g2 = sde.sde(x + k1, t - h)
        k2 = -h * (f2 - g2**2 * score(x + k1, t - h)) + g2 * math.sqrt(h) * z
        x_new, x_check = x + (k1 + k2) / 2, x + k1
        tol = torch.maximum(x_prev.abs(), x_check.abs()) * opt["reltol"]
        e = float((((k2 - k1) / 2) / tol.clamp(min=opt["abstol"])).pow(2).mean().sqrt())
        if e <= 1:
            x, x_prev, t = x_new, x_check, t - h
        h = min(t - eps, 0.9 * h * e**-0.9 if e > 0 else t - eps)
    return x, attempts


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_ggf_one_sample_equals_the_papers_loop(registry, model, sde_name):
    sde, grid = setup(registry, sde_name, "uniform", 2)
    x_T = prior(sde, 1, DIM)
    opt = {"h_init": 0.01, "abstol": 0.01, "reltol": 0.01}
    ours, calls = run(make(registry, "ggf", **opt), model, sde, grid, x_T)
    view = ModelView(model.native_fn(sde), model.native, sde)
    x, attempts = ggf_reference(sde, view.score, x_T, grid.t[-2], opt, SampleNoise(SEED, 0, 1))
    assert max_err(ours, view.denoise(x, grid.t[-2])) < 1e-10
    assert calls == 2 * attempts + 1 and attempts > 20


def test_ggf_tolerance_costs_evaluations_and_samples_the_data(registry):
    """Tighter tolerances cost more evaluations; at each, the samples' mean and standard
    deviation are the data's, N(MEAN, STD²), within 4 Monte-Carlo standard errors (8,000
    samples; on this Gaussian the method's own bias is below that even at tol = 0.1)."""
    sde, grid = setup(registry, "vp", "uniform", 2)
    n, one = 8000, gaussian_model(1)
    x_T = prior(sde, n, 1)
    costs = []
    for tol in (0.1, 0.01):
        x, calls = run(make(registry, "ggf", abstol=tol, reltol=tol), one, sde, grid, x_T)
        assert abs(float(x.mean()) - MEAN) < 4 * STD / math.sqrt(n)
        assert abs(float(x.std()) - STD) < 4 * STD / math.sqrt(2 * n)
        costs.append(calls)
    assert costs[1] > 3 * costs[0]


def test_ggf_brownian_retries_on_the_same_path(registry, model):
    sde, grid = setup(registry, "vp", "uniform", 2)
    x_T = prior(sde, 4, DIM)
    iid, _ = run(make(registry, "ggf"), model, sde, grid, x_T)
    path, n_path = run(make(registry, "ggf", noise="brownian"), model, sde, grid, x_T)
    again, _ = run(make(registry, "ggf", noise="brownian"), model, sde, grid, x_T)
    assert torch.equal(path, again) and max_err(path, iid) > 1e-3 and n_path > 10


# -- every new sampler ---------------------------------------------------------------------------

NEW = ["euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde", "sa_solver", "er_sde", "restart"]


@pytest.mark.parametrize("name", NEW)
def test_counted_nfe_is_nominal_and_noise_is_used(registry, model, name):
    sde, grid = setup(registry, "vp", registry.get("samplers", name).obj.default_schedule, 18)
    x_T = prior(sde, BATCH, DIM)
    sampler = make(registry, name)
    x, calls = run(sampler, model, sde, grid, x_T)
    other, _ = run(sampler, model, sde, grid, x_T, SampleNoise(SEED + 1, 0, BATCH))
    assert calls == sampler.nfe_nominal(grid.steps) and max_err(x, other) > 1e-4


@pytest.mark.parametrize("name", NEW[:5])
def test_new_samplers_do_not_depend_on_the_batch(tmp_path, name):
    from tests.test_batch_invariance import samples_at

    by_size = {b: samples_at(tmp_path, b, name, []) for b in (1, 64)}
    for key, ref in by_size[64].items():
        np.testing.assert_allclose(by_size[1][key], ref, rtol=1e-12, atol=1e-12, err_msg=key)


def test_bad_options_are_refused(registry):
    from bench.core.options import build
    from bench.errors import BenchError

    bad = [
        ("euler_ancestral", {"noise": "gaussian"}),
        ("dpmpp_2m_sde", {"solver_type": "rk4"}),
        ("sa_solver", {"predictor_order": 5}),
        ("er_sde", {"scale": "sde_9"}),
        ("restart", {"intervals": [[3, 2, 0.3, 0.1]]}),
        ("ggf", {"norm": "l1"}),
    ]
    for name, values in bad:
        with pytest.raises(BenchError):
            build(registry.get("samplers", name).obj.Options, values, name)
