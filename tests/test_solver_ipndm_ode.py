"""The ``ipndm`` and ``ode`` samplers (docs/solvers/ipndm_ode.md).

Evidence, in float64 on the exact Gaussian oracle (tests/oracle.py):

* iPNDM: global order 2 on VE and VP (edm, logsnr) at t_{N−1} = eps, and for the final sample
  (its default last step is diff-sampler's denoising evaluation); order 3 for ``order=3`` on
  steps uniform in σ̃, where the fixed Adams–Bashforth coefficients are exact; order 4 with
  ``variable_step`` (final sample, every SDE); counted NFE = N for every SDE × schedule; with
  ``last_step=multistep`` every step agrees with diffusers' ``IPNDMScheduler`` fed the same states
  and model outputs (all steps for order 4, the warm-up steps only for lower orders, which
  diffusers does not have); the default agrees with it up to its last step. The default against
  diff-sampler's loop: tests/test_solver_ipndm_v.py.
* ODE: the closed-form flow and scipy's nfev of the reference notes (§11.2) for VE, VP and
  sub-VP; counted NFE = nfev (+ 1 with ``denoise``), checked against an independent scipy
  solve; the Tweedie denoising step; the error falls with the tolerance; steps and schedule do
  not change the sample.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.core.schedule import TimeGrid
from bench.core.views import ModelView
from tests.oracle import MEAN, STD, exact_flow, gaussian_model, marginal, max_err, prior, run, slope

SDES = ("ve", "vp", "subvp")
SCHEDULES = ("uniform", "edm", "logsnr", "quadratic")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread is fastest and steady on a shared machine."""


@pytest.fixture(scope="module")
def model():
    return gaussian_model(4)


def make(registry, name: str, **options):
    cls = registry.get("samplers", name).obj
    return cls(cls.Options(**options))


def sde_of(registry, name: str, N: int = 1000):
    return registry.get("sdes", name).obj(N)


def grid_of(registry, sde, schedule: str, N: int, **options) -> TimeGrid:
    cls = registry.get("schedules", schedule).obj
    return cls(cls.Options(**options) if options else None).grid(sde, N)


def view_of(model, sde, grid: TimeGrid) -> ModelView:
    sde.discrete = grid.paper
    return ModelView(model.native_fn(sde), model.native, sde)


def states(sampler, sde, grid, model, x_T) -> tuple[torch.Tensor, dict[int, dict]]:
    """The final sample and every callback state by step index."""
    seen: dict[int, dict] = {}
    view = view_of(model, sde, grid)
    with torch.no_grad():
        x = sampler.sample(x_T, grid, view, None, lambda s: seen.__setitem__(s["i"], s))
    return x, seen


def tweedie(sde, x, t: float):
    """x̂₀ = (x + std²·s)/a with the exact Gaussian score at t."""
    a, std = sde.marginal_coef(t)
    m, v = marginal(sde, t)
    return (x - std**2 * (x - m) / v) / a


# -- iPNDM: convergence ------------------------------------------------------------------------

# The fixed Adams–Bashforth coefficients assume equal steps in σ̃; on the ρ = 7 (edm) and
# geometric (logsnr) σ̃ grids the steps change by O(h) from one to the next, which leaves an
# O(h³) local error (Σ_j c_j·j(j+1) ≠ 0), and the warm-up Euler step alone is O(h²): global
# order 2. N = 64 … 512 is its asymptotic range (local slopes 1.93–2.08 from N = 32 on, for every
# order ≥ 2; below N = 32 the slopes wander between −1.2 and 2.6, see the docs).
#
# VE and VP are measured at t_{N−1} = eps, before the last step: that step spans the fixed
# interval σ̃(eps) ≈ 0.01 → 0 whatever N, so the final sample keeps an N-independent bias
# (7.8e-4 against the exact flow to t = 0) and, against its own N → ∞ limit (the Tweedie
# denoiser at eps), an O(σ̃(eps)·h) error from extrapolating ε over that wide step with the
# history of the narrow ones, which drags the slope to 1 at large N. On sub-VP σ̃(eps) = 1.1e-4
# makes both negligible, so the final sample itself shows the order.
IPNDM_STEPS = [64, 128, 256, 512]


@pytest.mark.parametrize("schedule", ["edm", "logsnr"])
@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_ipndm_is_second_order_at_eps(registry, model, sde_name, schedule):
    sampler = make(registry, "ipndm")
    errors = []
    for N in IPNDM_STEPS:
        sde = sde_of(registry, sde_name, N)
        grid = grid_of(registry, sde, schedule, N)
        x_T = prior(sde, 64, 4)
        _, seen = states(sampler, sde, grid, model, x_T)
        x_eps = seen[N - 2]["x"]  # after step N − 2: the state at t_{N−1} = eps
        errors.append(max_err(x_eps, exact_flow(sde, x_T, grid.t[N - 1])))
    assert slope(IPNDM_STEPS, errors) == pytest.approx(2.0, abs=0.3), errors


@pytest.mark.parametrize("schedule", ["edm", "logsnr"])
@pytest.mark.parametrize("sde_name", SDES + ("flow",))
def test_ipndm_final_sample_is_second_order(registry, model, sde_name, schedule):
    """The default last step is the denoising evaluation x̃ ← D(x_{N−1}; t_{N−1}): the final
    sample converges at the order of x(eps) to the flow to eps followed by Tweedie's denoiser."""
    sampler = make(registry, "ipndm")
    errors = []
    for N in IPNDM_STEPS:
        sde = sde_of(registry, sde_name, N)
        x_T = prior(sde, 64, 4)
        x, nfe = run(sampler, sde, grid_of(registry, sde, schedule, N), model, x_T)
        assert nfe == N
        errors.append(max_err(x, tweedie(sde, exact_flow(sde, x_T, sde.eps), sde.eps)))
    assert slope(IPNDM_STEPS, errors) == pytest.approx(2.0, abs=0.3), errors


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_ipndm_multistep_last_step_is_slower(registry, model, sde_name):
    """``last_step=multistep`` extrapolates ε̂ over the wide last step [σ̃(eps), 0] with the history
    of the narrow ones: an O(σ̃(eps)·h) error that pulls the final sample's slope towards 1 (1.55–1.63
    over N = 64 … 512 on VE and VP, edm), while the default's stays at 2."""
    errors = []
    for N in IPNDM_STEPS:
        sde = sde_of(registry, sde_name, N)
        x_T = prior(sde, 64, 4)
        grid = grid_of(registry, sde, "edm", N)
        x, _ = run(make(registry, "ipndm", last_step="multistep"), sde, grid, model, x_T)
        errors.append(max_err(x, tweedie(sde, exact_flow(sde, x_T, sde.eps), sde.eps)))
    assert slope(IPNDM_STEPS, errors) == pytest.approx(1.6, abs=0.15), errors


# With variable-step weights the body is 4th order on any grid; the warm-up's O(h²) Euler step
# sits at σ̃_max ≫ the data scale, where ε̂ hardly changes along the flow, so its constant is
# negligible (local slopes 3.87–3.96 from N = 128 to 2048 on every SDE). The last step is DDIM,
# the same N → ∞ limit as the flow to eps followed by the Tweedie denoiser, so the final sample
# itself converges at order 4 to that limit.
VARIABLE_STEPS = [128, 256, 512, 1024]


@pytest.mark.parametrize("schedule", ["edm", "logsnr"])
@pytest.mark.parametrize("sde_name", SDES + ("flow",))
def test_ipndm_variable_step_is_fourth_order(registry, model, sde_name, schedule):
    sampler = make(registry, "ipndm", variable_step=True)
    errors = []
    for N in VARIABLE_STEPS:
        sde = sde_of(registry, sde_name, N)
        x_T = prior(sde, 64, 4)
        x, nfe = run(sampler, sde, grid_of(registry, sde, schedule, N), model, x_T)
        assert nfe == N
        errors.append(max_err(x, tweedie(sde, exact_flow(sde, x_T, sde.eps), sde.eps)))
    assert slope(VARIABLE_STEPS, errors) == pytest.approx(4.0, abs=0.3), errors


def test_variable_step_weights(registry):
    """Equal steps give the constant-step table; unequal ones integrate cubics exactly."""
    from bench_plugins.samplers.ipndm import ADAMS_BASHFORTH, adams_bashforth

    for k in range(1, 5):
        assert adams_bashforth([-float(j) for j in range(k)]) == pytest.approx(
            ADAMS_BASHFORTH[k - 1], abs=1e-14
        )
    nodes = [0.0, -0.7, -1.9, -2.2]
    for degree in range(4):
        exact = 1.0 / (degree + 1)  # ∫₀¹ u^degree du
        weights = adams_bashforth(nodes)
        assert sum(w * u**degree for w, u in zip(weights, nodes)) == pytest.approx(exact)


def sigma_uniform_errors(registry, model, order: int, steps: list[int]) -> list[float]:
    """Errors at t_{N−1} on steps uniform in σ̃ (edm with ρ = 1) over σ̃ ∈ [0.1, 2] (VE)."""
    sampler = make(registry, "ipndm", order=order)
    errors = []
    for N in steps:
        sde = sde_of(registry, "ve", N)
        grid = grid_of(registry, sde, "edm", N, rho=1.0, sigma_min=0.1, sigma_max=2.0)
        (m0, v0), (m1, v1) = marginal(sde, grid.t[0]), marginal(sde, grid.t[N - 1])
        z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        x_T = m0 + math.sqrt(v0) * z  # a sample of the marginal at t_0
        _, seen = states(sampler, sde, grid, model, x_T)
        errors.append(max_err(seen[N - 2]["x"], m1 + math.sqrt(v1 / v0) * (x_T - m0)))
    return errors


def test_ipndm_body_order_on_uniform_sigma_steps(registry, model):
    """With equal σ̃ steps the Adams–Bashforth body has its full order; only the warm-up (one
    Euler step: O(h²) with a small constant at σ̃ = 2) limits it, at large N. Order 3 shows 3.0
    over N = 64 … 512; order 4 climbs past 4 (local slopes 4.3, 5.1, 5.2 over N = 32 … 256)
    until the warm-up term takes over (2.4 from 256 to 512)."""
    steps = [64, 128, 256, 512]
    assert slope(steps, sigma_uniform_errors(registry, model, 3, steps)) == pytest.approx(
        3.0, abs=0.3
    )
    e4 = sigma_uniform_errors(registry, model, 4, [32, 64, 128, 256])
    assert slope([32, 64, 128, 256], e4) > 3.7, e4


# -- iPNDM: NFE and every SDE × schedule --------------------------------------------------------


@pytest.mark.parametrize("schedule", [*SCHEDULES, "file"])
@pytest.mark.parametrize("sde_name", SDES)
def test_ipndm_counted_nfe_is_nominal(registry, model, sde_name, schedule, tmp_path):
    N = 12
    sde = sde_of(registry, sde_name, N)
    if schedule == "file":
        path = tmp_path / "sigmas.txt"
        path.write_text("sigma\n" + "\n".join(f"{s!r}" for s in (10.0, 3.0, 1.0, 0.3, 0.1, 0.03)))
        # σ̃ from 10 to 0.03 lies inside every SDE's range (VE: 0.01 … 50).
        grid = registry.get("schedules", "file").obj(None, str(path)).grid(sde, 6)
    else:
        grid = grid_of(registry, sde, schedule, N)
    (m0, v0), z = marginal(sde, grid.t[0]), prior(sde_of(registry, "vp"), 8, 4)
    x_T = m0 + math.sqrt(v0) * z  # the marginal at t_0 (the prior, but for the file's σ̃ = 10)
    variants = [{"order": k} for k in (1, 2, 3, 4)]
    variants += [{"last_step": "multistep"}, {"variable_step": True}]
    for options in variants:
        sampler = make(registry, "ipndm", **options)
        x, nfe = run(sampler, sde, grid, model, x_T)
        assert nfe == sampler.nfe_nominal(grid.steps) == grid.steps
        # Even at 6–12 steps the sample lands near the flow's end (σ̃(eps) bias included).
        assert max_err(x, MEAN + STD * z) < 0.3


def test_ipndm_options_and_defaults(registry):
    cls = registry.get("samplers", "ipndm").obj
    assert cls.default_schedule == "edm" and not cls.adaptive
    options = cls().options
    assert (options.order, options.last_step, options.variable_step) == (4, "denoise", False)
    for bad in (0, 5, 2.5, True):
        with pytest.raises(ValueError):
            cls.Options(order=bad)
    with pytest.raises(ValueError):
        cls.Options(variable_step=1)
    with pytest.raises(ValueError, match="last_step"):
        cls.Options(last_step="ddim")
    with pytest.raises(ValueError, match="variable_step needs last_step=denoise"):
        cls.Options(variable_step=True, last_step="multistep")


def test_ipndm_order_1_is_ddim(registry, model):
    """order = 1 is the deterministic DDIM step x̃' = x̃ + (σ̃' − σ̃)·ε̂ (Song et al. 2021a)."""
    sde = sde_of(registry, "vp", 10)
    grid = grid_of(registry, sde, "logsnr", 10)
    x_T = prior(sde, 8, 4)
    view = view_of(model, sde, grid)
    x = x_T
    for i, t, _ in grid.pairs():
        a, s, a1, s1 = grid.alpha[i], grid.sigma[i], grid.alpha[i + 1], grid.sigma[i + 1]
        eps = view.eps(x, t)
        x = a1 * ((x - s * eps) / a) + s1 * eps
    for variable_step in (False, True):
        y, _ = run(
            make(registry, "ipndm", order=1, variable_step=variable_step), sde, grid, model, x_T
        )
        assert max_err(y, x) < 1e-12


# -- iPNDM against diffusers' IPNDMScheduler ---------------------------------------------------


class Recorder:
    """An ε-native model that records every (x, ε) our sampler saw."""

    def __init__(self, model, sde) -> None:
        self.inner = ModelView(model.native_fn(sde), model.native, sde)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, t):
        eps = self.inner.eps(x, t)
        self.seen.append((x.clone(), eps.clone()))
        return eps


def diffusers_ipndm(grid: TimeGrid):
    """diffusers' scheduler on our grid: its ``betas``/``alphas`` are σ and α of x = α·x₀ + σ·ε
    at the N visited times and the data end (σ = 0, α = 1), as its own ``set_timesteps`` lays out
    its trigonometric schedule; step() reads nothing else of the schedule."""
    from diffusers import IPNDMScheduler

    scheduler = IPNDMScheduler()
    scheduler.set_timesteps(grid.steps)
    scheduler.betas = torch.tensor(grid.sigma, dtype=torch.float64)
    scheduler.alphas = torch.tensor(grid.alpha, dtype=torch.float64)
    scheduler.set_begin_index(0)  # its timesteps are labels only: the step index drives step()
    return scheduler


def model_output_for(grid: TimeGrid, i: int, x, eps):
    """diffusers forms ε = σ·x + α·output (a v-prediction for α² + σ² = 1): invert that."""
    return (eps - grid.sigma[i] * x) / grid.alpha[i]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("schedule", ["edm", "logsnr", "uniform"])
@pytest.mark.parametrize("sde_name", SDES)
def test_ipndm_steps_agree_with_diffusers(registry, model, sde_name, schedule, order):
    """Open loop, ``last_step=multistep``: each diffusers step from our x_i with our ε_i gives our
    x_{i+1}, to 1e-12 relative (asserted 1e-10). diffusers always climbs to order 4, so a lower
    ``order`` agrees on its warm-up steps i < order only and differs after. The default (order 4,
    the denoising last step) agrees on every step but the last."""
    N = 10
    sde = sde_of(registry, sde_name, N)
    grid = grid_of(registry, sde, schedule, N)
    sde.discrete = grid.paper
    recorder = Recorder(model, sde)
    steps: dict[int, torch.Tensor] = {}
    view = ModelView(recorder, "eps", sde)
    x_T = prior(sde, 8, 4)
    sampler = make(registry, "ipndm", order=order, last_step="multistep")
    x_N = sampler.sample(x_T, grid, view, None, lambda s: steps.__setitem__(s["i"], s["x"]))
    assert view.calls == N and torch.equal(steps[N - 1], x_N)
    scheduler = diffusers_ipndm(grid)
    diffs = []
    for i, (x, eps) in enumerate(recorder.seen):
        out = scheduler.step(model_output_for(grid, i, x, eps), scheduler.timesteps[i], x)
        diffs.append(max_err(out.prev_sample, steps[i]) / (1.0 + steps[i].abs().max().item()))
    agree = N if order == 4 else order
    assert max(diffs[:agree]) < 1e-10, diffs
    if agree < N:  # a different method after the warm-up (AB4 against AB-order)
        assert max(diffs[agree:]) > 1e-4, diffs
    if order == 4:  # the default: the same steps, then x_N = D instead of AB4 into σ̃ = 0
        default: dict[int, torch.Tensor] = {}
        make(registry, "ipndm").sample(
            x_T, grid, view, None, lambda s: default.__setitem__(s["i"], s["x"])
        )
        assert all(torch.equal(default[i], steps[i]) for i in range(N - 1))
        x, eps = recorder.seen[-1]
        denoised = (x - grid.sigma[N - 1] * eps) / grid.alpha[N - 1]
        assert max_err(default[N - 1], denoised) <= 1e-14 * (1 + denoised.abs().max().item())
        assert max_err(default[N - 1], steps[N - 1]) > 1e-7  # ≥ 2.5e-6 here, σ̃(eps)-sized


@pytest.mark.parametrize("sde_name", SDES)
def test_ipndm_trajectory_agrees_with_diffusers(registry, model, sde_name):
    """Closed loop: diffusers' own trajectory, the model evaluated on its samples, ends where
    ours with ``last_step=multistep`` does (edm, N = 16)."""
    N = 16
    sde = sde_of(registry, sde_name, N)
    grid = grid_of(registry, sde, "edm", N)
    x_T = prior(sde, 8, 4)
    ours, _ = run(make(registry, "ipndm", last_step="multistep"), sde, grid, model, x_T)
    view = view_of(model, sde, grid)
    scheduler = diffusers_ipndm(grid)
    x = x_T
    for i, t, _ in grid.pairs():
        output = model_output_for(grid, i, x, view.eps(x, t))
        x = scheduler.step(output, scheduler.timesteps[i], x).prev_sample
    assert max_err(x, ours) < 1e-10


# -- ODE: the reference notes' closed forms (§11.2) --------------------------------------------

# x_T = m(1) + 1.3·sqrt(S(1)) in 1-D; closed-form x(eps); the notes' RK45 result and nfev
# (scipy 1.17, rtol = atol = 1e-5).
REFERENCE_ODE = {
    "ve": (0.7603248524, 0.76032967, 110),
    "vp": (0.7603153124, 0.7603166062, 68),
    "subvp": (0.7599582594, 0.7599791548, 74),
}


def one_d_start(sde) -> torch.Tensor:
    m, v = marginal(sde, sde.T)
    return torch.tensor([[m + 1.3 * math.sqrt(v)]], dtype=torch.float64)


@pytest.mark.parametrize("sde_name", SDES)
def test_ode_reproduces_the_reference_run(registry, sde_name):
    closed, rk45, nfev = REFERENCE_ODE[sde_name]
    sde = sde_of(registry, sde_name)
    grid = grid_of(registry, sde, "uniform", 1000)
    x_T, model1 = one_d_start(sde), gaussian_model(1)
    assert exact_flow(sde, x_T, sde.eps).item() == pytest.approx(closed, abs=1e-10)
    x, seen = states(make(registry, "ode", denoise=False), sde, grid, model1, x_T)
    assert x.item() == pytest.approx(rk45, abs=1e-8)
    assert abs(x.item() - closed) < 3e-5  # RK45 at tol 1e-5 (sub-VP's 2.1e-5 is the largest)
    # The nfev of the notes is indicative (scipy version); scipy 1.17 gives it exactly.
    assert abs(seen[0]["nfev"] - nfev) <= 6, seen[0]["nfev"]


@pytest.mark.parametrize("sde_name", SDES)
def test_ode_counts_nfev_plus_the_denoising_evaluation(registry, model, sde_name):
    """Counted NFE = scipy's nfev of an independent solve of the same ODE (+ 1 with denoise)."""
    from scipy.integrate import solve_ivp

    sde = sde_of(registry, sde_name)
    grid = grid_of(registry, sde, "uniform", 1000)
    x_T = prior(sde, 8, 4)

    def drift(t, y):  # f − ½g²·s with the closed-form score, on the flattened batch
        x = torch.from_numpy(y).reshape(x_T.shape)
        f, g = sde.sde(x, t)
        m, v = marginal(sde, t)
        return (f + 0.5 * g * g * (x - m) / v).numpy().reshape(-1)

    y0 = x_T.numpy().reshape(-1).copy()
    ref = solve_ivp(drift, (sde.T, sde.eps), y0, method="RK45", rtol=1e-5, atol=1e-5)
    x_eps = torch.from_numpy(ref.y[:, -1]).reshape(x_T.shape)
    for denoise in (False, True):
        sampler = make(registry, "ode", denoise=denoise)
        x, nfe = run(sampler, sde, grid, model, x_T)
        assert nfe == ref.nfev + denoise
        assert sampler.nfe_nominal(1000) is None
        want = tweedie(sde, x_eps, sde.eps) if denoise else x_eps
        assert max_err(x, want) < 1e-9


def test_ode_denoising_is_tweedie_at_eps(registry, model):
    sde = sde_of(registry, "ve")
    grid = grid_of(registry, sde, "uniform", 1000)
    x_T = prior(sde, 8, 4)
    x, seen = states(make(registry, "ode"), sde, grid, model, x_T)
    state = seen[0]
    assert torch.equal(x, state["denoised"])
    assert max_err(x, tweedie(sde, state["x"], sde.eps)) < 1e-12
    assert state["t"] == sde.T and state["nfev"] > 0


@pytest.mark.parametrize("sde_name", SDES + ("flow",))
def test_ode_error_falls_with_the_tolerance(registry, model, sde_name):
    sde = sde_of(registry, sde_name)
    grid = grid_of(registry, sde, "uniform", 1000)
    x_T = prior(sde, 8, 4)
    target = exact_flow(sde, x_T, sde.eps)
    errors, nfes = [], []
    for tol in (1e-3, 1e-5, 1e-7):
        x, nfe = run(
            make(registry, "ode", rtol=tol, atol=tol, denoise=False), sde, grid, model, x_T
        )
        errors.append(max_err(x, target))
        nfes.append(nfe)
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert all(b > a for a, b in zip(nfes, nfes[1:])), nfes
    assert errors[-1] < 1e-6, errors


def test_ode_ignores_steps_and_schedule(registry, model):
    x_T = prior(sde_of(registry, "vp"), 8, 4)
    results = []
    for schedule, N in (("uniform", 1000), ("uniform", 7), ("uniform", 1), ("edm", 30)):
        sde = sde_of(registry, "vp", N)
        results.append(
            run(make(registry, "ode"), sde, grid_of(registry, sde, schedule, N), model, x_T)
        )
    for x, nfe in results[1:]:
        assert torch.equal(x, results[0][0]) and nfe == results[0][1]


def test_ode_keeps_the_batch_dtype(registry):
    sde = sde_of(registry, "vp")
    grid = grid_of(registry, sde, "uniform", 1000)
    x_T = prior(sde, 8, 4).float()
    model32 = gaussian_model(4, dtype=torch.float32)
    x, _ = run(make(registry, "ode"), sde, grid, model32, x_T)
    assert x.dtype == torch.float32
    x64, _ = run(make(registry, "ode"), sde, grid, gaussian_model(4), x_T.double())
    assert max_err(x.double(), x64) < 1e-4


def test_ode_options_and_defaults(registry):
    cls = registry.get("samplers", "ode").obj
    assert cls.adaptive and cls.default_schedule == "uniform"
    options = cls().options
    assert (options.rtol, options.atol, options.denoise) == (1e-5, 1e-5, True)
    for bad in ({"rtol": 0.0}, {"atol": -1e-5}, {"rtol": math.inf}, {"denoise": 1}):
        with pytest.raises(ValueError):
            cls.Options(**bad)


def test_ode_diverged_model_gives_nan(registry):
    """A model that returns NaN makes RK45 give up: the batch comes back non-finite."""
    sde = sde_of(registry, "vp")
    grid = grid_of(registry, sde, "uniform", 1000)
    view = ModelView(lambda x, t: torch.full_like(x, math.nan), "score", sde)
    x = make(registry, "ode", denoise=False).sample(prior(sde, 2, 3), grid, view, None)
    assert bool(torch.isnan(x).all()) and view.calls > 0
