"""``--samplers diffusers:CLASS``: diffusers' own scheduler loops as samplers of the suite.

Evidence (docs/solvers/diffusers.md quotes the numbers, printed with ``-s``):

* the scheduler's loop equals the suite's own sampler on the scheduler's time points (the t_k
  with the scheduler's SNR, taken from the callback), on the exact Gaussian oracle in float64:
  DDIMScheduler = ``ddim`` (VP and sub-VP), DPMSolverMultistepScheduler = ``dpmpp_2m``,
  EDMEulerScheduler = ``ddim`` (Euler in x̃) and EDMDPMSolverMultistepScheduler = ``dpmpp_2m``
  on VE and VP;
* counted vs nominal NFE (DDIM N, DPM-Solver N, Heun 2N − 1, PNDM N + 9 or N + 1);
* every scheduler class of the installed diffusers runs or says why; stochastic schedulers'
  samples do not depend on the batch size;
* the command line: ok rows with counted NFE, unknown classes and keys exit 2 with close
  matches, options reach the scheduler, non-EDM schedulers on VE are unsupported rows.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from click.testing import CliRunner

from bench.core.noise import SampleNoise
from bench.core.options import FreeOptions
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView
from bench.errors import BenchError, Unsupported
from tests import oracle

diffusers = pytest.importorskip("diffusers")

from bench_plugins.samplers.diffusers_scheduler import DiffusersScheduler  # noqa: E402

TOL = 1e-6


@pytest.fixture(scope="module")
def model():
    return oracle.gaussian_model(dim=4)


def scheduler(name: str, **options) -> DiffusersScheduler:
    return DiffusersScheduler(FreeOptions(dict(options)), name)


def builtin(registry, name: str, **options):
    cls = registry.get("samplers", name).obj
    return cls(cls.Options(**options)) if options else cls()


def uniform(registry, sde, steps: int) -> TimeGrid:
    return registry.get("schedules", "uniform").obj().grid(sde, steps)


def run(sampler, sde, grid, model, x_T, seed: int = 0, start: int = 0):
    """(final sample, counted calls, [t of each step], [x after each step])."""
    view = ModelView(model.native_fn(sde), model.native, sde)
    ts, xs = [], []

    def callback(state):
        ts.append(state["t"])
        xs.append(state["x"])

    with torch.no_grad():
        x = sampler.sample(x_T, grid, view, SampleNoise(seed, start, x_T.shape[0]), callback)
    return x, view.calls, ts, xs


def agreement(registry, make_sde, model, sde_name, name, reference, steps, n=64, **options):
    """Max |diffusers − suite| of the final samples, the suite's sampler run on the t_k."""
    sde = make_sde(sde_name, steps)
    x_T = oracle.prior(sde, n, 4)
    x, calls, ts, _ = run(
        scheduler(name, **options), sde, uniform(registry, sde, steps), model, x_T
    )
    # dpmpp_2m's default is DPM-Solver's official last-step rule; diffusers has its own
    options_ = {"lower_order_final": "diffusers"} if reference == "dpmpp_2m" else {}
    y, _ = oracle.run(
        builtin(registry, reference, **options_), sde, TimeGrid.build(sde, ts), model, x_T
    )
    diff = float((x - y).abs().max())
    print(
        f"\n{name} {options or ''} on {sde_name}, N={steps}: |diffusers − {reference}| = {diff:.1e}"
    )
    return diff, calls


# -- agreement with the suite's samplers ---------------------------------------------------------


@pytest.mark.parametrize("steps", [5, 10, 50])
@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_ddim_scheduler_equals_ddim(registry, make_sde, model, sde_name, steps):
    """DDIMScheduler (eta 0, leading spacing, set_alpha_to_one) = the suite's ``ddim`` on its t_k,
    the last step landing on the data end in both."""
    diff, calls = agreement(registry, make_sde, model, sde_name, "DDIMScheduler", "ddim", steps)
    assert diff < TOL and calls == steps


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_prediction_types_feed_the_same_model(registry, make_sde, model, prediction_type):
    """x̂₀ and v from one evaluation: DDIM gives the same samples as with ε."""
    diff, calls = agreement(
        registry,
        make_sde,
        model,
        "vp",
        "DDIMScheduler",
        "ddim",
        10,
        prediction_type=prediction_type,
    )
    assert diff < TOL and calls == 10


@pytest.mark.parametrize("steps", [5, 10, 20])
def test_dpmsolver_multistep_equals_dpmpp_2m(registry, make_sde, model, steps):
    """DPMSolverMultistepScheduler (order 2, dpmsolver++, final_sigmas_type "zero") = ``dpmpp_2m``:
    both take a first-order last step into σ̃ = 0 (x_N = D), second order before it."""
    diff, calls = agreement(
        registry, make_sde, model, "vp", "DPMSolverMultistepScheduler", "dpmpp_2m", steps
    )
    assert diff < TOL and calls == steps


def test_dpmsolver_to_sigma_min_agrees_where_the_last_step_orders_agree(registry, make_sde, model):
    """With ``final_sigmas_type="sigma_min"`` the scheduler stops at σ̃ of timestep 0, not at the
    data end: compare with ``dpmpp_2m``'s state there (one step more on its grid). N = 20: both take
    a second-order last step, they agree; N = 10 (< 15): diffusers' ``lower_order_final`` makes
    its last step first order, and they differ by that step's order."""
    diffs = {}
    for steps in (20, 10):
        sde = make_sde("vp", steps)
        x_T = oracle.prior(sde, 64, 4)
        sampler = scheduler("DPMSolverMultistepScheduler", final_sigmas_type="sigma_min")
        x, calls, ts, _ = run(sampler, sde, uniform(registry, sde, steps), model, x_T)
        trial = sampler.build_scheduler(sde)
        alpha_bar = float(trial.alphas_cumprod[0])
        t_last = sde.t_of_log_snr(0.5 * math.log(alpha_bar / (1.0 - alpha_bar)))
        grid = TimeGrid.build(sde, [*ts, t_last])
        _, _, _, ys = run(builtin(registry, "dpmpp_2m"), sde, grid, model, x_T)
        diffs[steps] = float((x - ys[steps - 1]).abs().max())
        assert calls == steps
    print(
        f"\nsigma_min: |diffusers − dpmpp_2m| at σ̃_min: N=20 {diffs[20]:.1e}, N=10 {diffs[10]:.1e}"
    )
    assert diffs[20] < TOL and diffs[10] > 1e-4


@pytest.mark.parametrize(
    ("sde_name", "name", "reference"),
    [
        ("ve", "EDMEulerScheduler", "ddim"),
        ("vp", "EDMEulerScheduler", "ddim"),
        ("edm", "EDMEulerScheduler", "ddim"),
        ("ve", "EDMDPMSolverMultistepScheduler", "dpmpp_2m"),
        ("vp", "EDMDPMSolverMultistepScheduler", "dpmpp_2m"),
    ],
)
def test_edm_schedulers_equal_the_suite(registry, make_sde, model, sde_name, name, reference):
    """EDM schedulers on the SDE's σ̃ range, fed F = (D − c_skip·x̃)/c_out: EDM's Euler step in x̃
    is DDIM (η = 0), EDM's DPM-Solver++(2M) is ``dpmpp_2m``. Their ``step`` casts the sample to
    float32 (EDMEuler), hence ~1e-7."""
    diff, calls = agreement(registry, make_sde, model, sde_name, name, reference, 10)
    assert diff < TOL and calls == 10


def test_edm_scheduler_spans_the_sdes_sigma_range(registry, make_sde, model):
    sde = make_sde("ve", 8)
    x_T = oracle.prior(sde, 4, 4)
    _, _, ts, _ = run(scheduler("EDMEulerScheduler"), sde, uniform(registry, sde, 8), model, x_T)
    # σ̃(T) and σ̃(eps) to the scheduler's float32 sigmas: t to ~1e-8 on VE's log scale
    assert ts[0] == pytest.approx(sde.T, abs=1e-8) and ts[-1] == pytest.approx(sde.eps, abs=1e-8)


# -- NFE -----------------------------------------------------------------------------------------

NFE = [
    ("DDIMScheduler", {}, lambda n: n),
    ("DPMSolverMultistepScheduler", {}, lambda n: n),
    ("HeunDiscreteScheduler", {}, lambda n: 2 * n - 1),
    ("PNDMScheduler", {}, lambda n: n + 9),  # 3 Runge–Kutta warm-up steps of 4 calls, then PLMS
    ("PNDMScheduler", {"skip_prk_steps": True}, lambda n: n + 1),  # PLMS's extra first call
]


@pytest.mark.parametrize(("name", "options", "counted"), NFE, ids=lambda v: str(v))
def test_counted_and_nominal_nfe(registry, make_sde, model, name, options, counted):
    for steps in (6, 12):
        sde = make_sde("vp", steps)
        sampler = scheduler(name, **options)
        x, calls, _, _ = run(
            sampler, sde, uniform(registry, sde, steps), model, oracle.prior(sde, 4, 4)
        )
        assert sampler.nfe_nominal(steps) == steps
        assert calls == counted(steps), (name, steps)
        assert bool(torch.isfinite(x).all())


# -- seeds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options"), [("DDPMScheduler", {}), ("DDIMScheduler", {"eta": 1.0})]
)
def test_stochastic_samples_do_not_depend_on_the_batch(registry, make_sde, model, name, options):
    """One generator per sample, seeded from that sample's noise stream: a batch of 6 = 4 + 2;
    another seed gives other samples."""
    sde = make_sde("vp", 8)
    grid = uniform(registry, sde, 8)
    x_T = oracle.prior(sde, 6, 4)
    whole, *_ = run(scheduler(name, **options), sde, grid, model, x_T, seed=3)
    head, *_ = run(scheduler(name, **options), sde, grid, model, x_T[:4], seed=3)
    tail, *_ = run(scheduler(name, **options), sde, grid, model, x_T[4:], seed=3, start=4)
    other, *_ = run(scheduler(name, **options), sde, grid, model, x_T, seed=4)
    assert torch.equal(whole, torch.cat([head, tail]))
    assert not torch.allclose(whole, other)


# -- building and refusing -----------------------------------------------------------------------


def test_unknown_class_names_close_matches():
    with pytest.raises(BenchError, match="DDIMScheduler"):
        scheduler("DDIMSchedular")
    with pytest.raises(BenchError, match="no scheduler class"):
        scheduler("NoSuchThing")
    with pytest.raises(BenchError, match="not a scheduler class"):
        scheduler("ConfigMixin")
    with pytest.raises(BenchError, match="needs a scheduler class"):
        DiffusersScheduler(FreeOptions())


def test_options_are_checked_against_the_class():
    with pytest.raises(BenchError, match="solver_order"):
        scheduler("DPMSolverMultistepScheduler", solver_ordr=3)
    with pytest.raises(BenchError, match="DPMSolverMultistepScheduler"):
        scheduler("DPMSolverMultistepScheduler", algorithm_type="no-such-algorithm")
    with pytest.raises(BenchError, match="prediction_type"):
        scheduler("DDIMScheduler", prediction_type="flow_prediction")
    sampler = scheduler("DPMSolverMultistepScheduler", solver_order=3)
    assert sampler.build_scheduler(None).config.solver_order == 3
    assert scheduler("DDIMScheduler", eta=0.5).step_values == {"eta": 0.5}  # a step() argument


def test_the_suites_noise_schedule_reaches_the_scheduler(make_sde):
    sde = make_sde("vp", 10, beta_min=0.2, beta_max=10.0)
    config = scheduler("DDIMScheduler").build_scheduler(sde).config
    assert (config.num_train_timesteps, config.beta_schedule) == (1000, "linear")
    assert (config.beta_start, config.beta_end) == pytest.approx((0.2e-3, 10e-3))
    assert (config.prediction_type, config.clip_sample) == ("epsilon", False)
    edm = scheduler("EDMEulerScheduler").build_scheduler(make_sde("ve", 10)).config
    assert (edm.sigma_min, edm.sigma_max) == pytest.approx((0.01 * 5000**1e-5, 50.0))


def test_unsupported_combinations(registry, make_sde):
    uniform_schedule = registry.get("schedules", "uniform").obj()
    edm_schedule = registry.get("schedules", "edm").obj()
    with pytest.raises(Unsupported, match="EDMEulerScheduler"):
        scheduler("DDIMScheduler").supports(make_sde("ve", 5), uniform_schedule)
    with pytest.raises(Unsupported, match="own timesteps"):
        scheduler("DDIMScheduler").supports(make_sde("vp", 5), edm_schedule)
    scheduler("EDMEulerScheduler").supports(make_sde("ve", 5), uniform_schedule)
    scheduler("DDIMScheduler").supports(make_sde("subvp", 5), uniform_schedule)
    for name, reason in [
        ("FlowMatchEulerDiscreteScheduler", "flow SDE only"),
        ("FlowMatchHeunDiscreteScheduler", "flow SDE only"),
        ("FlowMatchLCMScheduler", "neither DDPM-type"),
        ("DDIMInverseScheduler", "inversion"),
        ("RePaintScheduler", "original_image"),
        ("ScoreSdeVeScheduler", "no step"),
    ]:
        with pytest.raises(Unsupported, match=reason):
            scheduler(name).supports(make_sde("vp", 5), uniform_schedule)


@pytest.mark.parametrize("sde_name", ["vp", "ve", "flow"])
def test_every_installed_scheduler_runs_or_says_why(registry, make_sde, model, sde_name):
    """Each scheduler class of the installed diffusers: an ok run (finite samples, one counted call
    per scheduler timestep), an Unsupported reason, or a BenchError (a missing extra).

    On flow, CosineDPMSolverMultistepScheduler's Brownian tree (torchsde) is asked for σ̃ =
    999.0002, its float32 σ_max, above the tree's 999 and recurses without end: a library
    failure (an ``error`` row in a run), tolerated here for that class alone."""
    from bench_plugins.samplers._diffusers_support import scheduler_names

    sde = make_sde(sde_name, 6)
    grid = uniform(registry, sde, 6)
    ran, refused, failed = [], [], []
    for name in scheduler_names(diffusers):
        try:
            sampler = scheduler(name)
            sampler.supports(sde, registry.get("schedules", "uniform").obj())
            x, calls, ts, _ = run(sampler, sde, grid, model, oracle.prior(sde, 4, 4))
        except (Unsupported, BenchError) as exc:
            assert str(exc), name
            refused.append(name)
            continue
        except RecursionError:
            failed.append(name)
            continue
        assert bool(torch.isfinite(x).all()) and calls == len(ts) >= 6, name
        ran.append(name)
    print(f"\n{sde_name}: {len(ran)} schedulers ran, {len(refused)} refused: {', '.join(ran)}")
    assert {"EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"} <= set(ran)
    assert ("DDIMScheduler" in ran) == (sde_name == "vp")
    flow = {"FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"}
    assert (flow <= set(ran)) == (sde_name == "flow")
    assert (flow <= set(refused)) == (sde_name != "flow")
    assert set(failed) <= ({"CosineDPMSolverMultistepScheduler"} if sde_name == "flow" else set())


def test_zero_terminal_snr_is_unsupported(registry, make_sde, model):
    sde = make_sde("vp", 5)
    sampler = scheduler("DDIMScheduler", rescale_betas_zero_snr=True, timestep_spacing="trailing")
    with pytest.raises(Unsupported, match="no time"):
        run(sampler, sde, uniform(registry, sde, 5), model, oracle.prior(sde, 2, 4))


def test_without_diffusers_the_sampler_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(BenchError, match="pip install"):
        scheduler("DDIMScheduler")


# -- the command line ----------------------------------------------------------------------------


def invoke(*args):
    from bench.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def rows(out) -> dict[tuple[str, str], dict]:
    lines = (out / "rows.jsonl").read_text().splitlines()
    return {(r["sde"], r["sampler"]): r for r in map(json.loads, lines)}


FAST = ("--steps", 5, "--samples", 16, "--metrics", "swd", "--no-progress")
SAMPLERS = (
    "diffusers:DDIMScheduler,diffusers:HeunDiscreteScheduler,"
    "diffusers:DPMSolverMultistepScheduler,diffusers:EDMEulerScheduler"
)


def test_cli_runs_schedulers_with_counted_nfe(tmp_path):
    out = tmp_path / "r"
    result = invoke("run", "--samplers", SAMPLERS, "--sdes", "vp,ve", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    got = rows(out)
    expected_nfe = {"DDIM": 5, "HeunDiscrete": 9, "DPMSolverMultistep": 5, "EDMEuler": 5}
    for name, nfe in expected_nfe.items():
        row = got[("vp", f"diffusers:{name}Scheduler")]
        assert row["status"] == "ok", row
        assert (row["nfe"], row["nfe_nominal"], row["schedule"]) == (nfe, 5, "uniform")
        assert math.isfinite(row["swd"])
    assert got[("ve", "diffusers:EDMEulerScheduler")]["status"] == "ok"
    for name in ("DDIM", "HeunDiscrete", "DPMSolverMultistep"):
        row = got[("ve", f"diffusers:{name}Scheduler")]
        assert row["status"] == "unsupported" and "EDMEulerScheduler" in row["reason"]
    # -o diffusers.solver_order=3 reaches the scheduler: same seed, other samples
    out3 = tmp_path / "r3"
    result = invoke(
        "run", "--samplers", "diffusers:DPMSolverMultistepScheduler", "--sdes", "vp", *FAST,
        "-o", "diffusers.solver_order=3", "--out", out3,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    order3 = rows(out3)[("vp", "diffusers:DPMSolverMultistepScheduler")]
    assert "solver_order" in order3["sampler_options"] and "3" in order3["sampler_options"]
    assert order3["status"] == "ok" and order3["nfe"] == 5
    # the rows say where each key came from: no folder, so the SDE's schedule ("suite")
    default = got[("vp", "diffusers:DPMSolverMultistepScheduler")]["scheduler_config"]
    assert default.startswith("suite: beta_end=0.02, beta_schedule=linear, beta_start=0.0001")
    assert "class default: " in default and "solver_order=2" in default
    assert "; user: solver_order=3; " in order3["scheduler_config"]
    assert order3["swd"] != got[("vp", "diffusers:DPMSolverMultistepScheduler")]["swd"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--samplers", "diffusers:DPMSolverMultistepSchedular"), "DPMSolverMultistepScheduler"),
        (
            (
                "--samplers",
                "diffusers:DPMSolverMultistepScheduler",
                "-o",
                "diffusers.solver_ordr=3",
            ),
            "solver_order",
        ),
    ],
    ids=["unknown-class", "unknown-key"],
)
def test_cli_refuses_unknown_classes_and_keys(tmp_path, args, message):
    result = invoke("run", *args, "--sdes", "vp", *FAST, "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "r" / "rows.jsonl").exists()
