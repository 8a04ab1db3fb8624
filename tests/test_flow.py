"""The flow (rectified-flow) SDE: its coefficients and marginals, T and eps, the paper's predictors
and correctors on it, Heun's churn above T, and Euler against diffusers' flow-matching Euler.

Closed forms: a = 1 − t, std = t, f = −1/(1 − t), g² = 2t/(1 − t), λ = log((1 − t)/t).
Independent implementation: diffusers' ``FlowMatchEulerDiscreteScheduler`` (x ← x + (σ' − σ)·u),
driven here directly with the exact Gaussian oracle's velocity on the same σ's and x_T.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.core.pc import PCSampler
from bench.errors import Unsupported
from tests.oracle import MEAN, STD, exact_flow, gaussian_model, prior, run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def flow(make_sde):
    return make_sde("flow")


def test_coefficients_are_the_closed_forms(flow, registry):
    assert registry.get("sdes", "rectified_flow").obj is type(flow)
    assert flow.T == 1 - 1e-3 and flow.eps == 1e-3
    x = torch.ones(1, dtype=torch.float64)
    for t in (1e-3, 0.1, 0.5, 0.9, flow.T):
        drift, g = flow.sde(x, t)
        assert flow.marginal_coef(t) == (1 - t, t)
        assert float(drift) == pytest.approx(-1 / (1 - t), rel=1e-14)
        assert g**2 == pytest.approx(2 * t / (1 - t), rel=1e-14)
        assert flow.log_snr(t) == pytest.approx(math.log((1 - t) / t), rel=1e-14, abs=1e-15)
        assert flow.marginal_rates(t) == (-1.0, 1.0)


@pytest.mark.parametrize("t", [0.05, 0.5, 0.9, 0.99])
def test_forward_variance_ode(flow, t):
    """dS/dt = 2f·S + g² for S = a²s² + std²: sde() and marginal_coef() describe one process."""

    def S(u):
        a, std = flow.marginal_coef(u)
        return a * a * STD**2 + std * std

    h = 1e-6
    drift, g = flow.sde(torch.ones(1, dtype=torch.float64), t)
    dS = (S(t + h) - S(t - h)) / (2 * h)
    assert dS == pytest.approx(2 * float(drift) * S(t) + g**2, rel=1e-7)


def test_t_of_log_snr_inverts_lambda_everywhere(flow):
    """t(λ) = 1/(1 + e^λ) for every λ, also below λ(T) (t ∈ (T, 1)) and at extremes (below
    λ = −15, 1 − t has fewer than 9 significant digits in float64, so the round trip stops)."""
    for lam in np.linspace(-15, 30, 91):
        t = flow.t_of_log_snr(float(lam))
        assert 0 < t < 1
        assert flow.log_snr(t) == pytest.approx(lam, abs=1e-9)
    above = flow.t_of_log_snr(flow.log_snr(flow.T) - 0.5)
    assert flow.T < above < 1
    assert flow.t_of_log_snr(800.0) == 0.0 and flow.t_of_log_snr(-800.0) == 1.0  # no overflow


def test_t_and_eps_keep_every_coefficient_finite(flow):
    """At T: f, g, σ̃ and λ finite; the reverse drift and the score view finite on the prior."""
    x_T = flow.prior_sampling(torch.randn(8, 3, dtype=torch.float64))
    view = gaussian_model(3).view(flow)
    for t in (flow.T, flow.eps):
        drift, g = flow.reverse(view.score).sde(x_T, t)
        assert torch.isfinite(drift).all() and math.isfinite(g)
        assert math.isfinite(flow.log_snr(t))
    a, std = flow.marginal_coef(flow.T)
    assert std / a == pytest.approx(999.0)
    z = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(flow.prior_sampling(z), z)
    expected = -0.5 * 3 * math.log(2 * math.pi) - 0.5 * z.pow(2).sum(1)
    torch.testing.assert_close(flow.prior_logp(z), expected)


def test_heun_churn_above_t_evaluates_below_one(flow, registry):
    """Churn at t_0 = T raises σ̂ above σ̃(T): the flow SDE has a time for it, t̂ ∈ (T, 1)."""
    from bench_plugins.samplers.heun import time_of_level

    a, std = flow.marginal_coef(flow.T)
    top = std / a
    t_hat = time_of_level(flow, 1.3 * top, top)
    a_hat, std_hat = flow.marginal_coef(t_hat)
    assert flow.T < t_hat < 1 and std_hat / a_hat == pytest.approx(1.3 * top, rel=1e-9)
    cls = registry.get("samplers", "heun").obj
    sampler = cls(cls.Options(s_churn=40.0))
    grid = registry.get("schedules", "edm").obj().grid(flow, 10)
    x, nfe = run(sampler, flow, grid, gaussian_model(2), prior(flow, 16, 2))
    assert nfe == sampler.nfe_nominal(10) and torch.isfinite(x).all()


# -- the paper's predictors and correctors ----------------------------------------------------


def pc(registry, predictor: str, corrector: str, **kw):
    P = registry.get("predictors", predictor).obj
    C = registry.get("correctors", corrector).obj
    return PCSampler(P, C, **kw)


def test_ancestral_sampling_is_refused_with_a_reason(flow, registry):
    sampler = pc(registry, "ancestral_sampling", "none")
    with pytest.raises(Unsupported, match="ancestral sampling is not defined for the flow SDE"):
        sampler.supports(flow, registry.get("schedules", "uniform").obj())


@pytest.mark.parametrize(
    "predictor, corrector",
    [("euler_maruyama", "none"), ("reverse_diffusion", "none"), ("euler_maruyama", "langevin")],
)
def test_reverse_sde_samplers_reach_the_data_moments(registry, make_sde, predictor, corrector):
    """1-D Gaussian data N(0.5, 0.2²): 20,000 samples of the reverse SDE (Eq. 6) on flow's
    uniform grid have the data's mean and std (sampling error ~0.002)."""
    sde = make_sde("flow", 500)
    sampler = pc(registry, predictor, corrector, snr=0.05, corrector_steps=1)
    grid = registry.get("schedules", "uniform").obj().grid(sde, 500)
    x, nfe = run(sampler, sde, grid, gaussian_model(1), prior(sde, 20_000, 1))
    assert nfe == sampler.nfe_nominal(500)
    assert float(x.mean()) == pytest.approx(MEAN, abs=0.01)
    assert float(x.std()) == pytest.approx(STD, abs=0.01)


@pytest.mark.parametrize("schedule", ["uniform", "edm", "logsnr", "shift"])
def test_probability_flow_euler_predictor_is_first_order(registry, make_sde, schedule):
    """dt = t_next − t on every grid (no paper grid): the PF Euler error halves as N doubles."""
    errors = []
    for N in (200, 400):
        sde = make_sde("flow", N)
        grid = registry.get("schedules", schedule).obj().grid(sde, N)
        x_T = prior(sde, 16, 2)
        sampler = pc(registry, "euler", "none", probability_flow=True)
        x, _ = run(sampler, sde, grid, gaussian_model(2), x_T)
        errors.append(float((x - exact_flow(sde, x_T, 1e-300)).abs().max()))
    assert 1.6 < errors[0] / errors[1] < 2.4, errors


# -- euler is diffusers' FlowMatchEulerDiscreteScheduler ---------------------------------------


@pytest.mark.parametrize("schedule", ["shift", "uniform", "edm"])
def test_euler_is_flow_match_euler_step_for_step(registry, flow, schedule):
    """Same σ's (t = σ on flow; float32 values, as diffusers holds them), same x_T, the oracle's
    exact velocity: every state of ``euler`` equals diffusers' x + (σ_{i+1} − σ_i)·u."""
    diffusers = pytest.importorskip("diffusers")
    from bench.core.schedule import TimeGrid

    N = 12
    times = registry.get("schedules", schedule).obj().times(flow, N)
    times = [float(np.float32(t)) for t in times]  # diffusers' float32 σ table, exactly
    grid = TimeGrid.build(flow, times)
    model = gaussian_model(3)
    x_T = prior(flow, 32, 3)

    ours = []
    euler = registry.get("samplers", "euler").obj()
    with torch.no_grad():
        euler.sample(x_T, grid, model.view(flow), None, callback=lambda s: ours.append(s["x"]))

    def scheduler():
        sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
        sched.set_timesteps(sigmas=times)
        assert sched.sigmas.tolist() == [*times, 0.0]
        return sched

    velocity = model.view(flow).velocity
    chain, from_ours = scheduler(), scheduler()
    x = x_T.to(torch.float32)
    for i, timestep in enumerate(chain.timesteps):
        # diffusers' own chain, in its float32, fed the exact velocity at its own state
        u = velocity(x.to(torch.float64), times[i]).to(torch.float32)
        x = chain.step(u, timestep, x).prev_sample
        torch.testing.assert_close(ours[i], x.to(torch.float64), rtol=1e-5, atol=1e-5)
        # one diffusers step from our state: equal to float32 rounding
        start = x_T if i == 0 else ours[i - 1]
        u = velocity(start, times[i]).to(torch.float32)
        step = from_ours.step(u, timestep, start.to(torch.float32)).prev_sample
        torch.testing.assert_close(ours[i], step.to(torch.float64), rtol=2e-6, atol=2e-6)
    assert len(ours) == N


# -- the commands on flow -------------------------------------------------------------------------


def invoke(*args: str):
    from click.testing import CliRunner

    from bench.cli import cli

    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_ring8_on_flow_and_vp_lies_inside_the_floor(tmp_path):
    """`bench run --model ring8 --sdes flow,vp`: the second- and third-order ODE samplers at 25
    steps score like exact samples (within 3 sd of the floor) under both SDEs."""
    import json

    invoke(
        "run", "--model", "ring8", "--sdes", "flow,vp", "--samplers", "heun,dpmpp_2m,unipc",
        "--steps", "25", "--seeds", "0", "--samples", "2000", "--metrics", "swd,fd",
        "--no-progress", "--out", str(tmp_path),
    )  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert sorted({r["sde"] for r in rows}) == ["flow", "vp"] and len(rows) == 6
    for r in rows:
        assert r["status"] == "ok" and r["nfe"] == r["nfe_nominal"], r
        for m in ("swd", "fd"):
            assert r[m] <= r[f"{m}_ref"] + 3 * r[f"{m}_ref_std"], (r["sampler"], r["sde"], m)


def test_order_and_likelihood_commands_take_flow(tmp_path):
    import json

    out = invoke(
        "order", "--samplers", "euler,heun", "--sdes", "flow", "--steps", "64,96,128,192,256",
        "--json", "--no-plot",
    )  # fmt: skip
    orders = {r["sampler"]: r["order"] for r in json.loads(out.stdout)}
    assert orders["euler"] == pytest.approx(1, abs=0.05) and orders["heun"] == pytest.approx(
        2, abs=0.05
    )
    path = tmp_path / "nll.json"
    invoke(
        "likelihood", "--sdes", "flow", "--points", "200", "--prior", "exact", "--hutchinson",
        "exact", "--json", "--out", str(path),
    )  # fmt: skip
    (row,) = json.loads(path.read_text())
    assert row["sde"] == "flow" and abs(row["nll_error"]) < 1e-4


@pytest.mark.parametrize(
    "name", ["euler", "ddim", "heun", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm"]
)
def test_samplers_in_sigma_tilde_do_not_see_the_sde(registry, make_sde, name):
    """The whole-loop samplers step in EDM's (x̃ = x/a, σ̃) or in λ = −log σ̃: on the same σ̃ grid
    from the same x̃, flow and VP give the same x̃ at the end (exact oracle, float64) — a flow
    model can only need fewer steps through its network or its grid, not through the ODE."""
    from bench.core.schedule import TimeGrid, times_of_sigmas

    sigmas = list(np.geomspace(80.0, 0.02, 12))
    x_tilde = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ends = []
    for sde_name in ("flow", "vp"):
        sde = make_sde(sde_name, 12)
        grid = TimeGrid.build(sde, times_of_sigmas(sde, sigmas))
        x, _ = run(registry.get("samplers", name).obj(), sde, grid, gaussian_model(3),
                   x_tilde * grid.alpha[0])  # fmt: skip
        ends.append(x)
    torch.testing.assert_close(ends[0], ends[1], rtol=1e-9, atol=1e-9)
