"""The ``euler``, ``ddim`` and ``heun`` samplers (docs/solvers/euler_ddim_heun.md).

Evidence, all in float64 on the exact Gaussian oracle (tests/oracle.py):

* convergence orders (Euler and DDIM 1, Heun 2) on VE, VP and sub-VP with the edm and logsnr
  schedules;
* counted NFE equals ``nfe_nominal`` for every SDE × schedule;
* DDIM with η = 0 and Euler are the same map (to float rounding);
* every step agrees with diffusers' ``EulerDiscreteScheduler``, ``DDIMScheduler`` (η = 0 and
  η > 0 with the same noise) and ``HeunDiscreteScheduler`` fed the same states and model outputs;
* the stochastic variants (DDIM η > 0, Heun with churn) are deterministic given the noise and
  reproduce the data moments at fine N; Heun's churn step follows Alg. 2 (σ̂ not capped at T;
  ``clamp=true`` caps it) and agrees with k-diffusion's ``sample_heun`` fed the same noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from bench.core.views import ModelView
from bench.errors import Unsupported
from tests import kdiffusion
from tests.oracle import (
    MEAN,
    STD,
    exact_flow,
    flow_limit,
    gaussian_model,
    max_err,
    prior,
    run,
    slope,
)
from tests.sampling import HostReads

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is fastest

SAMPLERS = ("euler", "ddim", "heun")
ORDER = {"euler": 1, "ddim": 1, "heun": 2}
SCHEDULES = ("uniform", "edm", "logsnr", "quadratic")
SDES = ("ve", "vp", "subvp")


@pytest.fixture(scope="module")
def model():
    return gaussian_model(4)


@pytest.fixture
def reg(registry):
    return registry


def make(reg, name: str, **options):
    cls = reg.get("samplers", name).obj
    return cls(cls.Options(**options)) if options else cls()


def sde_of(reg, name: str, **options):
    entry = reg.get("sdes", name).obj
    return entry(1000, entry.Options(**options))


def grid_of(reg, sde, schedule: str, N: int):
    return reg.get("schedules", schedule).obj().grid(sde, N)


# -- convergence orders ------------------------------------------------------------------------

# N = 16 … 128: at N = 8 Heun is pre-asymptotic (its steps span factors of 2–3.5 in σ̃), which
# steepens its slope over 8 … 64 to 2.2–2.3; from N = 16 on the local slopes are 2.0–2.2.
STEPS = [16, 32, 64, 128]


@pytest.mark.parametrize("schedule", ["edm", "logsnr"])
@pytest.mark.parametrize("sde_name", SDES + ("flow",))
@pytest.mark.parametrize("name", SAMPLERS)
def test_convergence_order(reg, model, name, sde_name, schedule):
    sde = sde_of(reg, sde_name)
    x_T = prior(sde, 64, 4)
    target = flow_limit(sde, x_T)
    errors = []
    for N in STEPS:
        x, _ = run(make(reg, name), sde, grid_of(reg, sde, schedule, N), model, x_T)
        errors.append(max_err(x, target))
    observed = slope(STEPS, errors)
    print(f"{name} {sde_name} {schedule}: slope {observed:.2f}, errors {errors}")
    assert abs(observed - ORDER[name]) <= 0.3, (observed, errors)


@pytest.mark.parametrize(
    "sde_name, options",
    [("ve", {"sigma_min": 1e-4}), ("vp", {"eps": 1e-5}), ("subvp", {}), ("flow", {"eps": 1e-4})],
    ids=["ve", "vp", "subvp", "flow"],
)
@pytest.mark.parametrize("name", SAMPLERS)
def test_order_against_the_exact_flow(reg, model, name, sde_name, options):
    """Against the exact flow to t = 0 itself, with σ̃(eps) small enough (≤ 1e-3) that the last
    step's bias (~σ̃(eps)²) lies below the discretisation error at these N."""
    sde = sde_of(reg, sde_name, **options)
    x_T = prior(sde, 64, 4)
    errors = []
    for N in STEPS:
        x, _ = run(make(reg, name), sde, grid_of(reg, sde, "edm", N), model, x_T)
        errors.append(max_err(x, exact_flow(sde, x_T)))
    observed = slope(STEPS, errors)
    print(f"{name} {sde_name} edm vs exact flow: slope {observed:.2f}, errors {errors}")
    assert abs(observed - ORDER[name]) <= 0.3, (observed, errors)


# -- NFE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES + ("file",))
@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize(
    "name, options",
    [("euler", {}), ("ddim", {}), ("ddim", {"eta": 1.0}), ("heun", {}), ("heun", {"s_churn": 5})],
    ids=["euler", "ddim", "ddim-eta1", "heun", "heun-churn"],
)
def test_counted_nfe_is_nominal(reg, model, tmp_path, name, options, sde_name, schedule):
    sde = sde_of(reg, sde_name)
    sampler = make(reg, name, **options)
    cls = reg.get("schedules", schedule).obj
    if schedule == "file":
        path = tmp_path / "grid.txt"
        path.write_text("\n".join(["t", "1.0", "0.6", "0.3", "0.1", "0.02", str(sde.eps)]))
        sched = cls(arg=str(path))
    else:
        sched = cls()
    sampler.supports(sde, sched)
    for N in (2, 7) if schedule != "file" else (6,):
        grid = sched.grid(sde, N)
        x, nfe = run(sampler, sde, grid, model, prior(sde, 8, 4))
        assert nfe == sampler.nfe_nominal(N)
        assert torch.isfinite(x).all()


def test_nominal_formulas(reg):
    assert [make(reg, "euler").nfe_nominal(n) for n in (1, 10)] == [1, 10]
    assert [make(reg, "ddim", eta=0.5).nfe_nominal(n) for n in (1, 10)] == [1, 10]
    assert [make(reg, "heun", s_churn=3).nfe_nominal(n) for n in (1, 10)] == [1, 19]


# -- DDIM(η = 0) is Euler in (x̃, σ̃) ------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sde_name", SDES)
def test_ddim_without_noise_is_euler(reg, model, sde_name, schedule):
    sde = sde_of(reg, sde_name)
    x_T = prior(sde, 64, 4)
    grid = grid_of(reg, sde, schedule, 25)
    x_euler, _ = run(make(reg, "euler"), sde, grid, model, x_T)
    x_ddim, _ = run(make(reg, "ddim"), sde, grid, model, x_T)
    scale = 1.0 + x_euler.abs().max().item()
    assert max_err(x_euler, x_ddim) <= 1e-12 * scale


# -- recorded runs: states, model calls and noise ----------------------------------------------


@dataclass
class Record:
    states: list = field(default_factory=list)  # x_0 = x_T, then x after every step
    calls: list = field(default_factory=list)  # (x, t, score) of every evaluation
    noises: list = field(default_factory=list)  # every z drawn
    steps: list = field(default_factory=list)  # the callback dicts


def run_recorded(sampler, sde, grid, model, x_T, seed: int = 0) -> Record:
    """Run ``sampler`` with a model and a noise source that record what they see and give."""
    rec = Record(states=[x_T])
    sde.discrete = grid.paper
    fn = model.native_fn(sde)

    def recorded_fn(x, t):
        out = fn(x, t)
        rec.calls.append((x.clone(), t, out.clone()))
        return out

    generator = torch.Generator().manual_seed(seed)

    def noise(x):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        rec.noises.append(z.clone())
        return z

    def callback(info):
        rec.states.append(info["x"].clone())
        rec.steps.append(info)

    view = ModelView(recorded_fn, model.native, sde)
    with torch.no_grad():
        sampler.sample(x_T, grid, view, noise, callback)
    return rec


def eps_of(sde, x, t, score):
    """ε = −std·s, the noise prediction diffusers' ``prediction_type="epsilon"`` expects."""
    return score * -sde.marginal_coef(t)[1]


def sigmas_of(grid) -> list[float]:
    """σ̃_i = std_i/a_i, EDM's (and diffusers' Euler/Heun) noise levels; σ̃_N = 0."""
    return [s / a for a, s in zip(grid.alpha, grid.sigma)]


def rel_err(x, y) -> float:
    """max |x − y| / (1 + max |y|): diffusers' Euler rounds its sample to float32 (see below)."""
    return max_err(x, y) / (1.0 + y.abs().max().item())


AGREE = [("ve", "edm"), ("vp", "edm"), ("vp", "logsnr"), ("subvp", "quadratic"), ("ve", "uniform")]


# -- diffusers: EulerDiscreteScheduler ---------------------------------------------------------


@pytest.mark.parametrize("sde_name, schedule", AGREE)
def test_euler_agrees_with_diffusers(reg, model, sde_name, schedule):
    """``EulerDiscreteScheduler`` (ε-prediction) works on x̃ = x/a with sigmas σ̃_i and a last σ
    of 0 ("zero" final sigmas): the same update as ours. Its ``step`` casts the sample to float32
    (a relative rounding of 6e-8), so agreement is measured relative to |x|."""
    diffusers = pytest.importorskip("diffusers")
    sde = sde_of(reg, sde_name)
    N = 12
    grid = grid_of(reg, sde, schedule, N)
    rec = run_recorded(make(reg, "euler"), sde, grid, model, prior(sde, 16, 4))
    sigmas = sigmas_of(grid)
    sched = diffusers.EulerDiscreteScheduler(prediction_type="epsilon")
    sched.set_timesteps(sigmas=sigmas)
    sched.sigmas = torch.tensor(sigmas, dtype=torch.float64)  # float64, not its float32 copy
    sched.set_begin_index(0)
    sched.is_scale_input_called = True  # the model input scaling is the view's business here
    worst = 0.0
    for i, (x, t, score) in enumerate(rec.calls):
        assert t == grid.t[i] and torch.equal(x, rec.states[i])
        a, a_next = grid.alpha[i], grid.alpha[i + 1]
        out = sched.step(eps_of(sde, x, t, score), sched.timesteps[i], x / a).prev_sample
        worst = max(worst, rel_err(out.to(torch.float64) * a_next, rec.states[i + 1]))
    print(f"euler vs diffusers {sde_name} {schedule}: max relative step difference {worst:.1e}")
    assert worst <= 1e-5


# -- diffusers: DDIMScheduler ------------------------------------------------------------------


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("sde_name, schedule", AGREE)
def test_ddim_agrees_with_diffusers(reg, model, sde_name, schedule, eta):
    """``DDIMScheduler`` is written for VP, x = sqrt(ᾱ)·x₀ + sqrt(1 − ᾱ)·ε. Any (a, std) kernel is
    that one after scaling x by 1/sqrt(a² + std²), with ᾱ = a²/(a² + std²); DDIM commutes with the
    scaling (ε is unchanged), so VE and sub-VP are compared in the scaled state. Its table
    ``alphas_cumprod`` is replaced by the grid's ᾱ_i (train timestep N − 1 − i; one inference step
    per train step) and ``final_alpha_cumprod`` = 1 is the data end. η > 0 gets our noise as
    ``variance_noise``."""
    diffusers = pytest.importorskip("diffusers")
    sde = sde_of(reg, sde_name)
    N = 12
    grid = grid_of(reg, sde, schedule, N)
    rec = run_recorded(make(reg, "ddim", eta=eta), sde, grid, model, prior(sde, 16, 4), seed=3)
    assert len(rec.noises) == (N - 1 if eta > 0 else 0)
    norm = [math.sqrt(a * a + s * s) for a, s in zip(grid.alpha, grid.sigma)]
    abar = [(a / c) ** 2 for a, c in zip(grid.alpha, norm)]
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=N, clip_sample=False, set_alpha_to_one=True, prediction_type="epsilon"
    )
    sched.set_timesteps(N)
    sched.alphas_cumprod = torch.tensor(abar[N - 1 :: -1], dtype=torch.float64)
    sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    assert sched.timesteps.tolist() == list(range(N - 1, -1, -1))
    worst = 0.0
    for i, (x, t, score) in enumerate(rec.calls):
        assert t == grid.t[i] and torch.equal(x, rec.states[i])
        z = rec.noises[i] if eta > 0 and i < N - 1 else None
        out = sched.step(
            eps_of(sde, x, t, score), sched.timesteps[i], x / norm[i], eta=eta, variance_noise=z
        ).prev_sample
        worst = max(worst, max_err(out * norm[i + 1], rec.states[i + 1]))
    print(f"ddim(eta={eta}) vs diffusers {sde_name} {schedule}: max step difference {worst:.1e}")
    assert worst <= 1e-5


# -- diffusers: HeunDiscreteScheduler ----------------------------------------------------------


@pytest.mark.parametrize("sde_name, schedule", AGREE)
def test_heun_agrees_with_diffusers(reg, model, sde_name, schedule):
    """``HeunDiscreteScheduler`` interleaves its sigmas (σ̃_0, σ̃_1, σ̃_1, …, σ̃_{N−1}, σ̃_{N−1}, 0):
    2N − 1 ``step`` calls, a 1st-order call (Euler to σ̃_{i+1}) then a 2nd-order call (the average
    slope), and a last 1st-order call into σ = 0 — Alg. 1 exactly (it has no churn: γ = 0).
    Both of its calls per step are checked: the Euler predictor against the point where our
    sampler made its second evaluation, the corrected step against our next state."""
    diffusers = pytest.importorskip("diffusers")
    sde = sde_of(reg, sde_name)
    N = 12
    grid = grid_of(reg, sde, schedule, N)
    rec = run_recorded(make(reg, "heun"), sde, grid, model, prior(sde, 16, 4))
    assert len(rec.calls) == 2 * N - 1
    sigmas = sigmas_of(grid)
    sched = diffusers.HeunDiscreteScheduler(prediction_type="epsilon")
    sched.set_timesteps(N)
    interleaved = [sigmas[0], *[s for s in sigmas[1:N] for _ in (0, 1)], 0.0]
    sched.sigmas = torch.tensor(interleaved, dtype=torch.float64)
    sched.set_begin_index(0)
    assert len(sched.timesteps) == 2 * N - 1
    worst = 0.0
    for k, (x, t, score) in enumerate(rec.calls):
        i, second = k // 2, k % 2 == 1  # call k: step i's 1st (even k) or 2nd (odd k) evaluation
        a = grid.alpha[i + 1] if second else grid.alpha[i]
        assert t == (grid.t[i + 1] if second else grid.t[i])
        out = sched.step(eps_of(sde, x, t, score), sched.timesteps[k], x / a).prev_sample
        if second or i == N - 1:  # a completed step: our state after step i
            worst = max(worst, max_err(out * grid.alpha[i + 1], rec.states[i + 1]))
        else:  # the Euler predictor: where we evaluated next
            worst = max(worst, max_err(out * grid.alpha[i + 1], rec.calls[k + 1][0]))
    print(f"heun vs diffusers {sde_name} {schedule}: max step difference {worst:.1e}")
    assert worst <= 1e-5


# -- Heun's churn (Alg. 2) ---------------------------------------------------------------------


def test_heun_without_churn_is_alg1(reg, model):
    """s_churn = 0 (whatever s_tmin, s_tmax, s_noise) and a churn window that excludes every σ̃_i
    draw no noise and give Alg. 1 bit for bit."""
    sde = sde_of(reg, "vp")
    grid = grid_of(reg, sde, "edm", 10)
    x_T = prior(sde, 16, 4)
    base = run_recorded(make(reg, "heun"), sde, grid, model, x_T)
    variants = [
        {"s_churn": 0.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.007},
        {"s_churn": 40.0, "s_tmax": 1e-3},  # every σ̃_i ≥ 0.01 lies above the window
    ]
    for options in variants:
        rec = run_recorded(make(reg, "heun", **options), sde, grid, model, x_T)
        assert rec.noises == []
        assert torch.equal(rec.states[-1], base.states[-1])


def check_churn_steps(rec, sde, grid, s_churn, s_noise, top: float = math.inf) -> None:
    """Every step i first evaluates at σ̂ = min(σ̃_i(1 + γ), top), γ = min(s_churn/N, √2 − 1), on
    x̂ = a(t̂)·(x̃_i + sqrt(σ̂² − σ̃_i²)·s_noise·z) at t̂ = t(λ = −log σ̂), when σ̂ > σ̃_i."""
    N, sigmas = grid.steps, sigmas_of(grid)
    gamma = min(s_churn / N, math.sqrt(2) - 1)
    noises = iter(rec.noises)
    for i in range(N):
        x_hat, t_hat, _ = rec.calls[2 * i]
        sigma_hat = min(sigmas[i] * (1 + gamma), top)
        assert math.isclose(math.exp(-sde.log_snr(t_hat)), sigma_hat, rel_tol=1e-12)
        assert rec.steps[i]["sigma_hat"] == (sigma_hat if sigma_hat > sigmas[i] else sigmas[i])
        if sigma_hat == sigmas[i]:
            assert torch.equal(x_hat, rec.states[i])
            continue
        a_hat = sde.marginal_coef(t_hat)[0]
        level = s_noise * math.sqrt(sigma_hat**2 - sigmas[i] ** 2)
        expected = a_hat * (rec.states[i] / grid.alpha[i] + level * next(noises))
        assert max_err(x_hat, expected) <= 1e-12 * (1 + expected.abs().max().item())
    assert next(noises, None) is None


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_heun_churn_step_follows_alg2(reg, model, sde_name):
    """As Alg. 2 and EDM's code, σ̂ is not capped: at t_0 = T the churn raises σ̃(T) to
    σ̃(T)(1 + γ) and the model is evaluated above T (VE and VP map that level to a time t̂ > T)."""
    sde = sde_of(reg, sde_name)
    N, s_churn, s_noise = 30, 20.0, 0.9  # γ = √2 − 1 (capped)
    grid = grid_of(reg, sde, "logsnr", N)
    sampler = make(reg, "heun", s_churn=s_churn, s_noise=s_noise)
    rec = run_recorded(sampler, sde, grid, model, prior(sde, 16, 4))
    assert len(rec.calls) == 2 * N - 1 and len(rec.noises) == N  # every step churns, T too
    check_churn_steps(rec, sde, grid, s_churn, s_noise)
    assert rec.calls[0][1] > sde.T and rec.calls[2][1] > sde.T  # steps 0 and 1 go above T


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_heun_clamp_caps_sigma_hat_at_T(reg, model, sde_name):
    """``clamp=true`` caps σ̂ at σ̃(T): no churn at t_0 = T, t̂ = T where σ̃_i(1 + γ) > σ̃(T)."""
    sde = sde_of(reg, sde_name)
    N, s_churn, s_noise = 30, 20.0, 0.9
    grid = grid_of(reg, sde, "logsnr", N)
    sampler = make(reg, "heun", s_churn=s_churn, s_noise=s_noise, clamp=True)
    rec = run_recorded(sampler, sde, grid, model, prior(sde, 16, 4))
    assert len(rec.calls) == 2 * N - 1 and len(rec.noises) == N - 1
    check_churn_steps(rec, sde, grid, s_churn, s_noise, top=sigmas_of(grid)[0])
    assert rec.calls[0][1] == sde.T and rec.calls[2][1] == sde.T  # step 1 is clamped too


def test_heun_churn_above_T_needs_an_sde_that_goes_there(reg, model):
    """An SDE whose σ̃ → t map stops at T (the base class's bisection) cannot serve σ̂ > σ̃(T):
    the cell is unsupported, with the option that caps σ̂ in the reason; with ``clamp=true`` it
    runs, exactly as the same SDE with a closed-form inverse."""
    from bench.core.sde import SDE

    VE = reg.get("sdes", "ve").obj

    class BisectedVE(VE):
        t_of_log_snr = SDE.t_of_log_snr

    grid_sde, sde = sde_of(reg, "ve"), BisectedVE(1000)
    grid = grid_of(reg, grid_sde, "edm", 8)
    x_T = prior(sde, 8, 4)
    with pytest.raises(Unsupported, match=r"above σ̃\(T\).*sampler\.heun\.clamp=true"):
        run(make(reg, "heun", s_churn=10.0), sde, grid, model, x_T)
    bisected, _ = run(make(reg, "heun", s_churn=10.0, clamp=True), sde, grid, model, x_T)
    closed, _ = run(make(reg, "heun", s_churn=10.0, clamp=True), grid_sde, grid, model, x_T)
    assert max_err(bisected, closed) < 1e-12
    # A churn window below σ̃(T)/(1 + γ) never reaches T: no clamp needed.
    run(make(reg, "heun", s_churn=10.0, s_tmax=1.0), sde, grid, model, x_T)


@pytest.mark.parametrize("N", [5, 10])
@pytest.mark.parametrize("sde_name, schedule", [("edm", "edm"), ("ve", "edm"), ("vp", "logsnr")])
def test_heun_clamp_is_another_method(reg, model, sde_name, schedule, N):
    """With the same noise per step, capping σ̂ at σ̃(T) moves few-step samples far beyond
    round-off (s_churn = 10; RMS over 256 samples of the 4-D oracle, data std 0.2)."""
    sde = sde_of(reg, sde_name)
    grid = grid_of(reg, sde, schedule, N)
    x_T = prior(sde, 256, 4, seed=3)
    zs = [
        torch.randn(x_T.shape, generator=torch.Generator().manual_seed(i), dtype=x_T.dtype)
        for i in range(N)
    ]
    out = []
    for clamp in (False, True):
        draws = iter(zs[1:] if clamp else zs)  # clamped, step 0 (at T) does not churn
        view = ModelView(model.native_fn(sde), model.native, sde)
        with torch.no_grad():
            sampler = make(reg, "heun", s_churn=10.0, clamp=clamp)
            out.append(sampler.sample(x_T, grid, view, lambda x, d=draws: next(d)))
    rms = (out[0] - out[1]).flatten(1).norm(dim=1).pow(2).mean().sqrt().item()
    print(f"heun s_churn=10 clamp vs EDM {sde_name}-{schedule} N={N}: RMS {rms:.3f}")
    assert rms > 0.01


# -- Heun against k-diffusion's sample_heun (EDM's Alg. 2) ------------------------------------


def kdiffusion_heun(sampling, monkeypatch, sde, grid, model, x_T, zs, **options):
    """k-diffusion's ``sample_heun`` on the grid's σ̃ with the oracle's denoiser D(x̃; σ̃), x̃ = x/a,
    and ``zs[i]`` as step i's ``randn_like`` draw (it draws one every step); returns the final
    sample and the evaluations it made."""
    view = ModelView(model.native_fn(sde), model.native, sde)

    def denoiser(x, sigma):
        t = sde.t_of_log_snr(-math.log(float(sigma[0])))
        return view.denoise(x * sde.marginal_coef(t)[0], t)

    draws = iter(zs)
    monkeypatch.setattr(sampling.torch, "randn_like", lambda x: next(draws))
    sigmas = torch.tensor(sigmas_of(grid), dtype=torch.float64)
    x = sampling.sample_heun(denoiser, x_T / grid.alpha[0], sigmas, disable=True, **options)
    return x, view.calls


HEUN_CHURN = [
    {"s_churn": 10.0},
    {"s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 5.0, "s_noise": 1.007},
    {"s_churn": 80.0},  # γ capped at √2 − 1
    {},
]


@pytest.mark.parametrize("N", [5, 10])
@pytest.mark.parametrize("options", HEUN_CHURN, ids=["churn10", "window", "churn80", "alg1"])
@pytest.mark.parametrize("sde_name, schedule", [("edm", "edm"), ("ve", "edm"), ("vp", "logsnr")])
def test_heun_agrees_with_kdiffusion(reg, model, monkeypatch, sde_name, schedule, options, N):
    """The default churn is EDM's Alg. 2 as k-diffusion's ``sample_heun`` implements it (σ̂ not
    capped at σ_max): fed the same σ̃ grid, x_T, exact denoiser and per-step noise, the final
    samples agree to 1e-10 (relative) with 2N − 1 evaluations on both sides."""
    sampling = kdiffusion.sampling()
    sde = sde_of(reg, sde_name)
    grid = grid_of(reg, sde, schedule, N)
    x_T = prior(sde, 16, 4, seed=3)
    zs = [
        torch.randn(x_T.shape, generator=torch.Generator().manual_seed(i), dtype=x_T.dtype)
        for i in range(N)
    ]
    o = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0, **options}
    churns = [i for i, s in enumerate(sigmas_of(grid)[:N]) if o["s_tmin"] <= s <= o["s_tmax"]]
    ours_z = iter([zs[i] for i in churns] if o["s_churn"] > 0 else [])
    sampler = make(reg, "heun", **options)
    sde.discrete = grid.paper
    view = ModelView(model.native_fn(sde), model.native, sde)
    with torch.no_grad():
        ours = sampler.sample(x_T, grid, view, lambda x: next(ours_z))
    theirs, nfe = kdiffusion_heun(sampling, monkeypatch, sde, grid, model, x_T, zs, **options)
    assert view.calls == nfe == 2 * N - 1
    assert next(ours_z, None) is None  # every z handed over was used
    diff = rel_err(ours, theirs)
    print(f"heun {options} vs k-diffusion {sde_name}-{schedule} N={N}: {diff:.1e}")
    assert diff <= 1e-10


@pytest.mark.parametrize(
    "name, options", [("ddim", {"eta": 1.0}), ("heun", {"s_churn": 10.0})], ids=["ddim", "heun"]
)
def test_stochastic_samplers_are_deterministic_given_the_noise(reg, model, name, options):
    sde = sde_of(reg, "vp")
    grid = grid_of(reg, sde, "edm", 10)
    x_T = prior(sde, 16, 4)
    sampler = make(reg, name, **options)
    a, _ = run(sampler, sde, grid, model, x_T, noise_seed=1)
    b, _ = run(sampler, sde, grid, model, x_T, noise_seed=1)
    c, _ = run(sampler, sde, grid, model, x_T, noise_seed=2)
    assert torch.equal(a, b)
    assert max_err(a, c) > 1e-3


@pytest.mark.parametrize(
    "name, options, sde_name, schedule, N",
    [
        ("ddim", {"eta": 1.0}, "vp", "quadratic", 1000),
        ("ddim", {"eta": 0.5}, "ve", "edm", 1000),
        ("heun", {"s_churn": 40.0}, "vp", "edm", 200),
        ("heun", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0}, "ve", "edm", 200),
    ],
    ids=["ddim-eta1-vp", "ddim-eta0.5-ve", "heun-churn-vp", "heun-churn-window-ve"],
)
def test_stochastic_samplers_reproduce_the_data_moments(
    reg, model, name, options, sde_name, schedule, N
):
    """Mean and std of 20 000 values (5 000 samples × 4) at fine N match N(0.5, 0.2²) to within
    4 standard errors (mean: 4·0.2/√20000 = 0.0057; std: 4·0.2/√40000 = 0.004). DDIM with η > 0
    has a first-order bias in the variance (its chain's std is 0.190 at N = 100, 0.1987 at
    N = 1000 on VP-quadratic, see test_ddim_noise_gives_the_chain_moments), hence N = 1000."""
    sde = sde_of(reg, sde_name)
    grid = grid_of(reg, sde, schedule, N)
    x, _ = run(make(reg, name, **options), sde, grid, model, prior(sde, 5000, 4, seed=7))
    n = x.numel()
    mean, std = x.mean().item(), x.std().item()
    print(f"{name} {options} {sde_name} N={N}: mean {mean:.4f}, std {std:.4f}")
    assert abs(mean - MEAN) <= 4 * STD / math.sqrt(n)
    assert abs(std - STD) <= 4 * STD / math.sqrt(2 * n)


def ddim_chain_moments(sde, grid, eta: float, prior_var: float) -> tuple[float, float]:
    """Mean and std of DDIM's discrete chain for N(μ, s²) data, in closed form: the denoiser is
    affine, D = k·x + c₀, so each step is x' = A·x + B + c·z (means and variances propagate)."""
    m, v = 0.0, prior_var
    for i in range(grid.steps):
        a, std, a_next, std_next = (
            grid.alpha[i],
            grid.sigma[i],
            grid.alpha[i + 1],
            grid.sigma[i + 1],
        )
        V = a * a * STD**2 + std * std
        k, c0 = a * STD**2 / V, std * std * MEAN / V  # D = k·x + c₀
        r2 = ((std_next * a) / (std * a_next)) ** 2
        c = eta * std_next * math.sqrt(1 - r2)
        direction = std_next * math.sqrt(1 - eta * eta * (1 - r2))
        A = a_next * k + direction * (1 - a * k) / std
        B = a_next * c0 - direction * a * c0 / std
        m, v = A * m + B, A * A * v + c * c
    return m, math.sqrt(v)


@pytest.mark.parametrize("eta", [0.5, 1.0])
@pytest.mark.parametrize("sde_name, schedule", [("vp", "quadratic"), ("ve", "edm")])
def test_ddim_noise_gives_the_chain_moments(reg, model, sde_name, schedule, eta):
    """At coarse N (= 10) DDIM(η)'s moments are far from the data's, which makes them a sharp check
    of the noise level c_i: the Monte-Carlo moments equal the chain's exact ones to 4 SE."""
    sde = sde_of(reg, sde_name)
    grid = grid_of(reg, sde, schedule, 10)
    x, _ = run(make(reg, "ddim", eta=eta), sde, grid, model, prior(sde, 5000, 4, seed=5))
    prior_var = sde.sigma_max**2 if sde_name == "ve" else 1.0
    mean, std = ddim_chain_moments(sde, grid, eta, prior_var)
    n = x.numel()
    print(
        f"ddim eta={eta} {sde_name} N=10: MC {x.mean().item():.4f} {x.std().item():.4f}, "
        f"chain {mean:.4f} {std:.4f}"
    )
    assert abs(std - STD) > 0.01  # the check is not vacuous: the chain is visibly off N(μ, s²)
    assert abs(x.mean().item() - mean) <= 4 * std / math.sqrt(n)
    assert abs(x.std().item() - std) <= 4 * std / math.sqrt(2 * n)


# -- the API -----------------------------------------------------------------------------------


def test_registered_with_their_options(reg):
    assert reg.get("samplers", "euler").obj.default_schedule == "edm"
    assert reg.get("samplers", "ddim").obj.default_schedule == "quadratic"
    assert reg.get("samplers", "heun").obj.default_schedule == "edm"
    assert make(reg, "ddim").options.eta == 0.0
    heun = make(reg, "heun").options
    assert (heun.s_churn, heun.s_tmin, heun.s_tmax, heun.s_noise) == (0.0, 0.0, math.inf, 1.0)
    assert heun.clamp is False  # EDM's Alg. 2: σ̂ is not capped at σ̃(T)
    for name in SAMPLERS:
        assert not reg.get("samplers", name).obj.adaptive


@pytest.mark.parametrize(
    "name, options",
    [
        ("ddim", {"eta": -0.1}),
        ("ddim", {"eta": 1.5}),
        ("heun", {"s_churn": -1.0}),
        ("heun", {"s_tmin": 2.0, "s_tmax": 1.0}),
        ("heun", {"s_noise": -1.0}),
        ("heun", {"clamp": 1}),
    ],
)
def test_invalid_options_are_refused(reg, name, options):
    with pytest.raises(ValueError):
        reg.get("samplers", name).obj.Options(**options)


@pytest.mark.parametrize(
    "name, options",
    [("euler", {}), ("ddim", {"eta": 1.0}), ("heun", {"s_churn": 10.0})],
    ids=["euler", "ddim", "heun"],
)
def test_callback_once_per_step(reg, model, name, options):
    sde = sde_of(reg, "subvp")
    N = 6
    grid = grid_of(reg, sde, "logsnr", N)
    rec = run_recorded(make(reg, name, **options), sde, grid, model, prior(sde, 4, 4))
    assert [s["i"] for s in rec.steps] == list(range(N))
    assert [s["t"] for s in rec.steps] == list(grid.t[:N])
    assert all({"i", "t", "x", "denoised"} <= set(s) for s in rec.steps)


@pytest.mark.parametrize(
    "name, options",
    [("euler", {}), ("ddim", {"eta": 1.0}), ("heun", {"s_churn": 10.0})],
    ids=["euler", "ddim", "heun"],
)
def test_no_host_reads(reg, model, name, options):
    sde = sde_of(reg, "vp")
    grid = grid_of(reg, sde, "edm", 8)
    sampler, x_T = make(reg, name, **options), prior(sde, 8, 4)
    view = ModelView(model.native_fn(sde), model.native, sde)
    generator = torch.Generator().manual_seed(0)

    def noise(x):
        return torch.randn(x.shape, generator=generator, dtype=x.dtype)

    with torch.no_grad(), HostReads() as mode:
        sampler.sample(x_T, grid, view, noise)
    assert mode.seen == []
