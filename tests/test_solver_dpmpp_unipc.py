"""The ``dpmpp_2m``, ``dpmpp_3m`` and ``unipc`` samplers (docs/solvers/dpmpp_unipc.md).

Evidence, all in float64 on the exact Gaussian oracle (tests/oracle.py):

* convergence orders on VE, VP and sub-VP with the edm and logsnr schedules: DPM-Solver++(2M) 2,
  DPM-Solver++(3M) 2 (the published φ₃ weight, the default) and 3 (``variant="taylor"``), UniPC-p
  p + 1 (the corrected order the paper claims) without the last-step rules, and 2 with UniPC's
  official ``lower_order_final`` (its uncorrected first-order step before the data end);
* counted NFE equals ``nfe_nominal`` (N) for every SDE × schedule, and the loop reads nothing back
  from the device;
* the warm-up / final orders, and the last step lands exactly on the denoiser output;
* every step agrees with diffusers' ``DPMSolverMultistepScheduler`` (``dpmsolver++``, midpoint and
  heun forms) and ``UniPCMultistepScheduler`` (``predict_x0``, ``bh1``/``bh2``) fed the same
  states and model outputs, with ``lower_order_final=diffusers`` or ``off``, except where they
  differ by design (checked to be exactly that difference): the Taylor 3M differs from diffusers'
  3M by half its second-difference term (diffusers' is second order) and equals diffusers' UniP-3
  instead.

The official rules, k-diffusion and the update formulas: tests/test_solver_dpmpp_unipc_official.py.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from bench.core.options import build, coerce
from bench.core.views import ModelView
from bench.errors import BenchError
from tests.oracle import (
    flow_limit,
    gaussian_model,
    max_err,
    prior,
    run,
    slope,
)
from tests.sampling import HostReads

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is fastest

SCHEDULES = ("uniform", "edm", "logsnr", "quadratic")
SDES = ("ve", "vp", "subvp")
CONFIGS = [
    ("dpmpp_2m", {}),
    ("dpmpp_2m", {"lower_order_final": "diffusers", "solver_type": "taylor"}),
    ("dpmpp_3m", {}),
    ("dpmpp_3m", {"variant": "taylor"}),
    ("dpmpp_3m", {"lower_order_final": "off"}),
    ("unipc", {}),
    ("unipc", {"order": 1}),
    ("unipc", {"order": 3}),
    ("unipc", {"order": 3, "lower_order_final": "off"}),
    ("unipc", {"variant": "bh2", "lower_order_final": "diffusers"}),
]


def config_id(config) -> str:
    name, options = config
    return name + "".join(f"-{k}={v}" for k, v in options.items())


@pytest.fixture(scope="module")
def model():
    return gaussian_model(4)


def make(registry, name: str, **options):
    cls = registry.get("samplers", name).obj
    return cls(cls.Options(**options)) if options else cls()


def sde_of(registry, name: str):
    return registry.get("sdes", name).obj(1000)


def grid_of(registry, sde, schedule: str, N: int):
    return registry.get("schedules", schedule).obj().grid(sde, N)


def trajectory(sampler, sde, grid, model, x_T):
    """(states x_0 = x_T … x_N, model outputs D_0 … D_{N−1}, counted NFE) of one run."""
    sde.discrete = grid.paper
    view = ModelView(model.native_fn(sde), model.native, sde)
    xs, Ds = [x_T], []

    def record(info):
        xs.append(info["x"])
        Ds.append(info["denoised"])

    def no_noise(x):
        raise AssertionError("a deterministic sampler drew noise")

    with torch.no_grad():
        final = sampler.sample(x_T, grid, view, no_noise, record)
    assert final is xs[-1]
    return xs, Ds, view.calls


def observed_order(registry, model, name, options, sde_name, schedule, steps) -> float:
    sde = sde_of(registry, sde_name)
    x_T = prior(sde, 8, 4)
    target = flow_limit(sde, x_T)
    sampler = make(registry, name, **options)
    errors = []
    for N in steps:
        x, _ = run(sampler, sde, grid_of(registry, sde, schedule, N), model, x_T)
        errors.append(max_err(x, target))
    observed = slope(steps, errors)
    label = config_id((name, options))
    print(f"\n{label} {sde_name}/{schedule} N={steps}: slope {observed:.2f}", end="")
    return observed


# -- convergence orders ------------------------------------------------------------------------

# (name, options, order, schedules, N): N where every SDE is in its asymptotic range (local
# slopes within 0.15 of the order). Below N ≈ 32 the few-step regime dominates (on edm the first
# steps span λ by 1–2; the multistep extrapolation is not yet accurate).
ORDERS = [
    ("dpmpp_2m", {}, 2, ("edm", "logsnr"), (32, 48, 64, 96, 128)),
    # Taylor 3M on logsnr: see test_dpmpp_3m_on_logsnr_is_at_least_third_order
    ("dpmpp_3m", {"variant": "taylor"}, 3, ("edm",), (64, 96, 128, 192, 256)),
    ("dpmpp_3m", {}, 2, ("edm", "logsnr"), (128, 192, 256, 384)),
    ("unipc", {"order": 1, "variant": "bh2"}, 2, ("edm", "logsnr"), (32, 48, 64, 96, 128)),
    # UniPC-p with the official lower_order_final: see test_unipc_official_last_steps_are_second_order
    (
        "unipc",
        {"variant": "bh2", "lower_order_final": "diffusers"},
        3,
        ("edm", "logsnr"),
        (32, 48, 64, 96, 128),
    ),
    ("unipc", {"lower_order_final": "diffusers"}, 3, ("edm", "logsnr"), (48, 64, 96, 128, 192)),
    # UniPC-3 with diffusers' rule: see test_unipc_3_with_diffusers_lower_order_final. Without a
    # rule, sub-VP on logsnr is the last to reach the asymptotic slope (3.6 at N = 64…256, 3.8
    # at 96…384).
    (
        "unipc",
        {"order": 3, "variant": "bh2", "lower_order_final": "off"},
        4,
        ("edm", "logsnr"),
        (96, 128, 192, 384),
    ),
]


@pytest.mark.parametrize("sde_name", SDES + ("flow",))
@pytest.mark.parametrize(
    "name, options, order, schedules, steps", ORDERS, ids=[config_id(c[:2]) for c in ORDERS]
)
def test_convergence_order(registry, model, name, options, order, schedules, steps, sde_name):
    for schedule in schedules:
        observed = observed_order(registry, model, name, options, sde_name, schedule, steps)
        assert abs(observed - order) <= 0.3, (schedule, observed)


@pytest.mark.parametrize("sde_name", ["ve", "vp"])
def test_dpmpp_3m_on_logsnr_is_at_least_third_order(registry, model, sde_name):
    """On uniform λ steps the Gaussian's h³ error term nearly cancels (D''' integrates to almost
    nothing between λ(T) and λ(eps)), so the observed slope is 3.5–4 at every N we could afford
    (up to 2048): pre-asymptotic, not a lower order. At least third order is what is checked."""
    steps = (64, 96, 128, 192, 256)
    taylor = {"variant": "taylor"}
    observed = observed_order(registry, model, "dpmpp_3m", taylor, sde_name, "logsnr", steps)
    assert observed >= 2.7


@pytest.mark.parametrize("sde_name, schedule", [("ve", "edm"), ("vp", "logsnr")])
def test_unipc_3_with_diffusers_lower_order_final(registry, model, sde_name, schedule):
    """With diffusers' ``lower_order_final`` the last finite step, to t_{N−1}, is UniP-2: its
    O(h³) local error is never corrected (the final step into std = 0 discards the corrector's
    value), so UniPC-3 is third order, not fourth. D hardly varies there (σ̃ ≪ s), so that term
    is tiny and crosses the bulk's h⁴ term near N ≈ 200 on VE and VP: the local slopes swing from
    1.6 to 7 for N = 32…512 and settle at 2.8–2.9 only for N = 1024…4096, where this checks them.
    (On sub-VP, σ̃(eps) = 1e-4 makes the term negligible: 4.0 at every N.)"""
    steps = (1024, 2048, 4096)
    options = {"order": 3, "variant": "bh2", "lower_order_final": "diffusers"}
    observed = observed_order(registry, model, "unipc", options, sde_name, schedule, steps)
    assert abs(observed - 3) <= 0.3


@pytest.mark.parametrize("sde_name, schedule", [("ve", "edm"), ("vp", "logsnr")])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_official_last_steps_are_second_order(registry, model, sde_name, schedule, variant):
    """UniPC's official ``lower_order_final`` makes the last finite step, to t_{N−1}, UniP-1
    (DDIM), and the official code runs no corrector after it: one O(h²) local error, so UniPC-3
    (and UniPC-2) converge at order 2 on VE and VP. D hardly varies there (σ̃ ≪ s), so it shows
    only at large N: UniPC-3 2.01 for N = 1024…4096 (3.8–3.9 on sub-VP, where σ̃(eps) = 1e-4
    hides it)."""
    steps = (1024, 2048, 4096)
    options = {"order": 3, "variant": variant}
    observed = observed_order(registry, model, "unipc", options, sde_name, schedule, steps)
    assert abs(observed - 2) <= 0.3


def test_third_order_needs_the_taylor_weight(registry, model):
    """At equal N the Taylor 3M beats the published (reference) coefficient by a factor that grows ~N
    (here 13× at N = 64, 140× at N = 256; VP, logsnr). At small N on edm it need not: at N = 32
    the reference one is ahead (1.4e-3 against 3.1e-3), before either is asymptotic."""
    sde = sde_of(registry, "vp")
    x_T = prior(sde, 8, 4)
    target = flow_limit(sde, x_T)
    ratios = []
    for N in (64, 256):
        grid = grid_of(registry, sde, "logsnr", N)
        taylor, _ = run(make(registry, "dpmpp_3m", variant="taylor"), sde, grid, model, x_T)
        reference, _ = run(make(registry, "dpmpp_3m"), sde, grid, model, x_T)
        ratios.append(max_err(reference, target) / max_err(taylor, target))
    assert ratios[0] > 5 and ratios[1] > 4 * ratios[0]


# -- NFE, orders per step, the last step, host reads ------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sde_name", SDES)
def test_counted_nfe_is_nominal_and_the_last_step_is_the_denoiser(
    registry, model, config, schedule, sde_name
):
    name, options = config
    sampler = make(registry, name, **options)
    sde = sde_of(registry, sde_name)
    x_T = prior(sde, 4, 4)
    for N in (1, 2, 3, 7, 20):
        xs, Ds, calls = trajectory(sampler, sde, grid_of(registry, sde, schedule, N), model, x_T)
        assert calls == sampler.nfe_nominal(N) == N
        assert len(xs) == N + 1 and len(Ds) == N
        assert torch.equal(xs[-1], Ds[-1])  # h = ∞: x_N = a_N·D_{N−1}, a_N = 1
        assert torch.isfinite(xs[-1]).all()


def orders(sampler, registry, N: int) -> list[int]:
    grid = grid_of(registry, sde_of(registry, "vp"), "logsnr", N)
    return [sampler.step_order(i, grid) for i in range(N)]


def test_step_orders_diffusers_and_off(registry):
    """Warm-up, diffusers' lower_order_final rules (DPM-Solver: N < 15, UniPC: always) and none,
    and the first-order step into std = 0. The official rules: test_solver_dpmpp_unipc_official."""
    diffusers = {"lower_order_final": "diffusers"}
    assert orders(make(registry, "dpmpp_2m", **diffusers), registry, 6) == [1, 2, 2, 2, 2, 1]
    assert orders(make(registry, "dpmpp_3m", **diffusers), registry, 6) == [1, 2, 3, 3, 2, 1]
    assert orders(make(registry, "dpmpp_3m", **diffusers), registry, 16) == [1, 2] + [3] * 13 + [1]
    no_lof = make(registry, "dpmpp_3m", lower_order_final="off")
    assert orders(no_lof, registry, 6) == [1, 2, 3, 3, 3, 1]
    assert orders(make(registry, "unipc", **diffusers), registry, 5) == [1, 2, 2, 2, 1]
    unipc_3 = make(registry, "unipc", order=3, **diffusers)
    assert orders(unipc_3, registry, 20) == [1, 2] + [3] * 16 + [2, 1]
    no_lof = make(registry, "unipc", order=3, lower_order_final="off")
    assert orders(no_lof, registry, 6) == [1, 2, 3, 3, 3, 1]
    assert orders(make(registry, "unipc"), registry, 1) == [1]


def test_options_are_validated(registry):
    for name, bad in [
        ("dpmpp_3m", {"variant": "midpoint"}),
        ("dpmpp_2m", {"solver_type": "midpoint"}),
        ("dpmpp_2m", {"lower_order_final": "on"}),
        ("dpmpp_3m", {"lower_order_final": "yes"}),
        ("unipc", {"order": 4}),
        ("unipc", {"order": 0}),
        ("unipc", {"variant": "bh3"}),
        ("unipc", {"lower_order_final": "diffuser"}),
    ]:
        with pytest.raises(ValueError, match="|".join(bad)):
            registry.get("samplers", name).obj.Options(**bad)


@pytest.mark.parametrize("name", ["dpmpp_2m", "dpmpp_3m", "unipc"])
def test_lower_order_final_booleans_are_the_official_codes(registry, name):
    """true/false (the official codes' boolean, on the command line or from Python) are stored as
    ``official``/``off``, so rows record the rule by its name."""
    options = registry.get("samplers", name).obj.Options
    assert options().lower_order_final == "official"
    for value, rule in [(True, "official"), ("true", "official"), ("False", "off"), (False, "off")]:
        assert options(lower_order_final=value).lower_order_final == rule
    assert options(lower_order_final="Diffusers").lower_order_final == "diffusers"
    owner = f"sampler {name}"
    text = coerce(options, "lower_order_final", "true", owner)  # -o …lower_order_final=true
    assert build(options, {"lower_order_final": text}, owner).lower_order_final == "official"
    with pytest.raises(BenchError, match=f"{owner}: lower_order_final is one of official"):
        build(options, {"lower_order_final": "sometimes"}, owner)


def test_registered_with_the_logsnr_default(registry):
    for name in ("dpmpp_2m", "dpmpp_3m", "unipc"):
        cls = registry.get("samplers", name).obj
        assert cls.default_schedule == "logsnr" and not cls.adaptive
    assert registry.get("samplers", "dpmpp2m").obj.name == "dpmpp_2m"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_the_loop_has_no_host_reads(registry, model, config):
    name, options = config
    sde = sde_of(registry, "vp")
    grid = grid_of(registry, sde, "logsnr", 12)
    view = ModelView(model.native_fn(sde), model.native, sde)
    x_T = prior(sde, 4, 4)
    sampler = make(registry, name, **options)
    with HostReads() as mode:
        sampler.sample(x_T, grid, view, torch.randn_like)
    assert mode.seen == []


# -- agreement with diffusers ------------------------------------------------------------------
#
# diffusers' schedulers are VP-parameterised: for a noise level σ̃ = std/a (``scheduler.sigmas``)
# they use α̂ = 1/sqrt(1 + σ̃²), σ̂ = σ̃·α̂, and the same λ = log(α̂/σ̂) = log(a/std). Their state
# is y = x·α̂/a = x/sqrt(a² + std²) (x itself on VP); the data prediction D is the same in both.
# After set_timesteps(N) the scheduler's sigmas are replaced by the grid's σ̃_0 … σ̃_{N−1}, 0 in
# float64; timesteps keep their N (distinct) values, used only to count steps. Each step i gets
# OUR state x_i and OUR model output D_i (prediction_type="sample"), and its x_{i+1} is compared
# with ours: every step is checked on its own.


def diffusers_steps(scheduler, grid, xs, Ds, steps: int | None = None) -> list[torch.Tensor]:
    """diffusers' y_{i+1} from our (y_i, D_i), minus our y_{i+1}, for i < ``steps`` (default N)."""
    N = grid.steps
    scale = [1.0 / math.sqrt(a * a + s * s) for a, s in zip(grid.alpha, grid.sigma)]
    out = []
    with warnings.catch_warnings():  # diffusers' own deprecation and numpy-2 warnings
        warnings.simplefilter("ignore")
        scheduler.set_timesteps(N)
        sigmas = [s / a for a, s in zip(grid.alpha, grid.sigma)]
        scheduler.sigmas = torch.tensor(sigmas, dtype=torch.float64)
        assert len(scheduler.timesteps) == N
        for i in range(N if steps is None else steps):
            y = scheduler.step(Ds[i], scheduler.timesteps[i], xs[i] * scale[i]).prev_sample
            out.append(y - xs[i + 1] * scale[i + 1])
    return out


AGREEMENT = [(sde, schedule, N) for sde in SDES for schedule in ("edm", "logsnr") for N in (10, 20)]


def case_id(case) -> str:
    return "-".join(map(str, case))


@pytest.mark.parametrize("solver_type", ["dpmsolver", "taylor"])
@pytest.mark.parametrize("lower_order_final", ["diffusers", "off"])
@pytest.mark.parametrize("case", AGREEMENT, ids=case_id)
def test_dpmpp_agrees_with_diffusers(registry, model, case, lower_order_final, solver_type):
    """2M and 3M (the published ``variant="reference"``), with diffusers' ``lower_order_final``
    rule or none, agree on every step, the last (into σ̃ = 0, first order in both) included, to
    1e-5 (2.3e-7 measured); ``solver_type`` dpmsolver/taylor is diffusers' midpoint/heun. That
    difference is diffusers' float32: ``step`` casts the state to float32, and (σ̂_t/σ̂_s)·y, a
    0-d float64 times a float32 tensor, stays float32. Modelled, the residual is float64 rounding
    (< 1e-12)."""
    diffusers = pytest.importorskip("diffusers")
    sde_name, schedule, N = case
    sde = sde_of(registry, sde_name)
    grid = grid_of(registry, sde, schedule, N)
    x_T = prior(sde, 8, 4)
    options = {"lower_order_final": lower_order_final, "solver_type": solver_type}
    for order in (2, 3):
        name = f"dpmpp_{order}m"
        xs, Ds, _ = trajectory(make(registry, name, **options), sde, grid, model, x_T)
        scheduler = diffusers.DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++",
            solver_order=order,
            solver_type="midpoint" if solver_type == "dpmsolver" else "heun",
            prediction_type="sample",
            lower_order_final=lower_order_final == "diffusers",
            final_sigmas_type="zero",
        )
        diffs = diffusers_steps(scheduler, grid, xs, Ds)
        worst = max(d.abs().max().item() for d in diffs)
        print(f"\n{name} {options} vs DPMSolverMultistepScheduler: max |Δy| {worst:.1e}", end="")
        assert worst < 1e-5, name
        y = [x / math.sqrt(a * a + s * s) for x, a, s in zip(xs, grid.alpha, grid.sigma)]
        for i, diff in enumerate(diffs):
            c_y = grid.sigma[i + 1] / grid.sigma[i] * math.hypot(grid.alpha[i], grid.sigma[i])
            c_y /= math.hypot(grid.alpha[i + 1], grid.sigma[i + 1])  # σ̂_{i+1}/σ̂_i
            float32 = (c_y * y[i].float()).double() - c_y * y[i]
            assert max_err(diff, float32) < 1e-12, (name, i)


@pytest.mark.parametrize("case", AGREEMENT, ids=case_id)
def test_dpmpp_3m_taylor_differs_from_diffusers_by_the_second_difference(registry, model, case):
    """The Taylor 3M agrees with diffusers on its first- and second-order steps; on each
    third-order step diffusers' − ours = α̂_t·φ₃·D2 (in y; φ₃ < 0), the half of the Taylor term
    −2·α̂_t·φ₃·D2 that the published coefficient leaves out."""
    diffusers = pytest.importorskip("diffusers")
    sde_name, schedule, N = case
    sde = sde_of(registry, sde_name)
    grid = grid_of(registry, sde, schedule, N)
    sampler = make(registry, "dpmpp_3m", variant="taylor", lower_order_final="diffusers")
    xs, Ds, _ = trajectory(sampler, sde, grid, model, prior(sde, 8, 4))
    scheduler = diffusers.DPMSolverMultistepScheduler(solver_order=3, prediction_type="sample")
    diffs = diffusers_steps(scheduler, grid, xs, Ds)
    lam = grid.lambdas()
    third = 0
    for i, diff in enumerate(diffs):
        if sampler.step_order(i, grid) < 3:
            assert diff.abs().max().item() < 1e-5, i
            continue
        third += 1
        h, h0, h1 = lam[i + 1] - lam[i], lam[i] - lam[i - 1], lam[i - 1] - lam[i - 2]
        D1_0 = (Ds[i] - Ds[i - 1]) * (h / h0)
        D1_1 = (Ds[i - 1] - Ds[i - 2]) * (h / h1)
        D2 = (D1_0 - D1_1) / ((h0 + h1) / h)
        phi_3 = (math.expm1(-h) + h) / h**2 - 0.5
        alpha_hat = 1.0 / math.sqrt(1.0 + (grid.sigma[i + 1] / grid.alpha[i + 1]) ** 2)
        assert max_err(diff, alpha_hat * phi_3 * D2) < 1e-5, i
    assert third == N - 3 - (N < 15)


@pytest.mark.parametrize("case", AGREEMENT, ids=case_id)
def test_dpmpp_equals_diffusers_unip(registry, model, case):
    """An independent check of the Taylor weight: the exponential integrator of the quadratic
    through the last three D's is unique, so the Taylor DPM-Solver++(3M) must equal UniP-3
    (UniPC's predictor, B(h) = bh2, ρ from the order conditions), and 2M must equal UniP-2 (ρ = ½),
    both without ``lower_order_final``. With
    diffusers' UniPCMultistepScheduler (corrector disabled) they do, to 2e-15, on every step but
    the last (diffusers' UniP-p into σ̃ = 0 is undefined without ``lower_order_final``)."""
    diffusers = pytest.importorskip("diffusers")
    sde_name, schedule, N = case
    sde = sde_of(registry, sde_name)
    grid = grid_of(registry, sde, schedule, N)
    x_T = prior(sde, 8, 4)
    no_lof = {"lower_order_final": "off"}
    for order, options in [(2, no_lof), (3, {"variant": "taylor", **no_lof})]:
        xs, Ds, _ = trajectory(make(registry, f"dpmpp_{order}m", **options), sde, grid, model, x_T)
        scheduler = diffusers.UniPCMultistepScheduler(
            solver_order=order,
            solver_type="bh2",
            prediction_type="sample",
            lower_order_final=False,
            disable_corrector=list(range(N)),
        )
        diffs = diffusers_steps(scheduler, grid, xs, Ds, N - 1)
        worst = max(d.abs().max().item() for d in diffs)
        print(f"\ndpmpp_{order}m vs UniP-{order}: max |Δy| {worst:.1e}", end="")
        assert worst < 1e-12, order


@pytest.mark.parametrize("lower_order_final", ["diffusers", "off"])
@pytest.mark.parametrize("case", AGREEMENT, ids=case_id)
def test_unipc_agrees_with_diffusers(registry, model, case, lower_order_final):
    """UniPC-1/2/3, bh1 and bh2, with diffusers' ``lower_order_final`` rule or none: every step
    agrees (to ~1e-15). Except diffusers' last step into
    σ̃ = 0 in two cases: with ``bh1`` it is NaN (its B(h) = −h = −∞ times a zero residual) and
    without ``lower_order_final`` its order-p extrapolation to λ = ∞ is inf/NaN or a singular
    solve; ours is first order there, x_N = D_{N−1}, as diffusers' own bh2 last step."""
    diffusers = pytest.importorskip("diffusers")
    sde_name, schedule, N = case
    sde = sde_of(registry, sde_name)
    grid = grid_of(registry, sde, schedule, N)
    x_T = prior(sde, 8, 4)
    for order in (1, 2, 3):
        for variant in ("bh2", "bh1"):
            options = {"order": order, "variant": variant, "lower_order_final": lower_order_final}
            xs, Ds, _ = trajectory(make(registry, "unipc", **options), sde, grid, model, x_T)
            scheduler = diffusers.UniPCMultistepScheduler(
                solver_order=order,
                solver_type=variant,
                predict_x0=True,
                prediction_type="sample",
                lower_order_final=lower_order_final == "diffusers",
                final_sigmas_type="zero",
            )
            exact_last = variant == "bh2" and (lower_order_final == "diffusers" or order == 1)
            diffs = diffusers_steps(scheduler, grid, xs, Ds, N if exact_last else N - 1)
            worst = max(d.abs().max().item() for d in diffs)
            print(f"\nunipc {options}: max |Δy| {worst:.1e}", end="")
            assert worst < 1e-5, options
