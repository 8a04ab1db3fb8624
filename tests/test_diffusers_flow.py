"""Flow-matching diffusers folders: a ``UNet2DModel`` with a ``FlowMatchEulerDiscreteScheduler``
config is a ``velocity`` model on the ``flow`` SDE, and ``--samplers
diffusers:FlowMatchEulerDiscreteScheduler,diffusers:FlowMatchHeunDiscreteScheduler`` run on it.

Independent implementation: diffusers' own loop, as a diffusers user writes it
(``CLASS.from_config(folder's config)``, ``set_timesteps(N)``, ``unet(x, timestep)`` and ``step``
for each timestep), on the same prior noise, in float64; the folder's UNet is briefly trained
with the flow-matching loss (:func:`tests.diffusers_models.trained_ddpm_state`). What the tests
show (printed with ``-s``):

* the network is fed diffusers' own timestep σ·N at the flow SDE's t = σ, and its output is the
  velocity z − x₀ (the views' x₀ = x − t·u and ε = x + (1 − t)·u are the closed forms);
* both schedulers' loops on the folder equal diffusers' bitwise, with ``shift``, Karras σ's,
  ``stochastic_sampling`` and a fixed ``mu`` reaching them from the folder or ``-o``; NFE N and
  2N − 1 (Heun), nominal N;
* the built-in ``euler`` on diffusers' σ's equals diffusers' flow-matching Euler on the network;
* what cannot load is refused in one line: dynamic shifting without ``mu`` (a row), inverted
  σ's, a prediction type other than the velocity, transformer classes, a Fourier embedding.
"""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

diffusers = pytest.importorskip("diffusers")

from bench_plugins.samplers._diffusers_support import sample_seeds  # noqa: E402
from bench_plugins.samplers.diffusers_scheduler import DiffusersScheduler  # noqa: E402
from bench_plugins.score_models import diffusers_folder as folder  # noqa: E402
from bench_plugins.score_models import diffusers_unet as du  # noqa: E402

from bench.core.noise import SampleNoise  # noqa: E402
from bench.core.options import FreeOptions  # noqa: E402
from bench.core.schedule import TimeGrid  # noqa: E402
from bench.errors import BenchError, Unsupported  # noqa: E402
from tests import diffusers_models as dm  # noqa: E402
from tests import oracle  # noqa: E402

CPU = torch.device("cpu")
EULER, HEUN = "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flow_folder(tmp_path_factory):
    state = dm.trained_ddpm_state(prediction="flow")
    root = tmp_path_factory.mktemp("flow") / "flow"
    return dm.write_pipeline(root, dm.TINY_DDPM_UNET, dm.FLOW_SCHEDULER, state=state)


@pytest.fixture(scope="module")
def model(flow_folder):
    return du.DiffusersUNet.load(str(flow_folder), device=CPU, dtype=torch.float64)


def prior(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def generators(x_T: torch.Tensor) -> list[torch.Generator]:
    """The per-sample generators the sampler seeds from the cell's noise stream (seed 0)."""
    seeds = sample_seeds(SampleNoise(0, 0, x_T.shape[0]), x_T)
    return [torch.Generator().manual_seed(s) for s in seeds]


def suite(model, sde, name: str, x_T, steps: int, **options):
    """``--samplers diffusers:NAME`` on the model: (final sample, counted NFE, the sampler)."""
    sampler = DiffusersScheduler(FreeOptions(dict(options)), name)
    view = model.view(sde)
    grid = TimeGrid.build(sde, list(np.linspace(sde.T, sde.eps, steps)))
    with torch.no_grad():
        x = sampler.sample(x_T, grid, view, SampleNoise(0, 0, x_T.shape[0]))
    return x, view.calls, sampler


def diffusers_loop(unet, name: str, config: dict, x_T, steps: int, mu=None, **step_kwargs):
    """A diffusers user's loop: (final sample, model calls)."""
    scheduler = getattr(diffusers, name).from_config(config)
    scheduler.set_timesteps(steps, **({} if mu is None else {"mu": mu}))
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs["generator"] = generators(x_T)
    x, calls = x_T, 0
    with torch.no_grad():
        for timestep in scheduler.timesteps:
            output = unet(x, timestep).sample
            calls += 1
            x = scheduler.step(output, timestep, x, **step_kwargs).prev_sample
    return x, calls


# -- the folder is a velocity model on flow --------------------------------------------------------
def test_flow_folder_loads_as_a_velocity_model(model, make_sde):
    s = model.schedule
    assert isinstance(s, folder.FlowSchedule) and (s.n_train, s.shift) == (1000, 1.0)
    assert (model.trained_for, model.native, model.checkpoint.data_range) == (
        "flow",
        "velocity",
        (-1.0, 1.0),
    )
    described = model.describe()
    assert described["label"] == "t*1000 (diffusers' timestep sigma*1000, sigma = t)"
    assert described["scheduler"] == EULER and described["native"] == "velocity"
    model.check_sde(make_sde("rectified_flow"))
    with pytest.raises(Unsupported, match="trained for the flow SDE, not vp"):
        model.check_sde(make_sde("vp"))


@pytest.mark.parametrize("t", [1.0, 0.7, float(np.float32(0.123)), 1e-3])
def test_velocity_is_the_network_at_timestep_sigma_n(model, make_sde, t):
    """The velocity view is ``unet(x, t·1000)``; x₀ = x − t·u and ε = x + (1 − t)·u (the
    interpolant x = (1 − t)·x₀ + t·z with u = z − x₀), one network call per view."""
    sde = make_sde("flow")
    x = prior()
    view = model.view(sde)
    with torch.no_grad():
        u = model.unet(x, torch.tensor(t * 1000, dtype=torch.float32)).sample
        torch.testing.assert_close(view.velocity(x, t), u, rtol=0, atol=0)
        if t < 1.0:
            torch.testing.assert_close(view.denoise(x, t), x - t * u, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(view.eps(x, t), x + (1 - t) * u, rtol=1e-13, atol=1e-13)
    assert view.calls == (3 if t < 1.0 else 2)


# -- the schedulers on the folder = diffusers' loop ------------------------------------------------
CASES = [
    (EULER, {}),
    (EULER, {"shift": 3.0}),
    (EULER, {"use_karras_sigmas": True}),
    (EULER, {"stochastic_sampling": True}),
    (EULER, {"use_dynamic_shifting": True, "mu": 0.8}),
    (HEUN, {}),
    (HEUN, {"shift": 3.0}),
]


@pytest.mark.parametrize("steps", [4, 10])
@pytest.mark.parametrize(("name", "options"), CASES, ids=str)
def test_schedulers_equal_diffusers_own_loop(make_sde, model, name, options, steps):
    sde = make_sde("flow")
    x_T = prior()
    x, nfe, sampler = suite(model, sde, name, x_T, steps, **options)
    config = {**model.scheduler_config, **sampler.init_values}
    y, calls = diffusers_loop(model.unet, name, config, x_T, steps, options.get("mu"))
    print(f"\n{name} {options or ''} N={steps}: |Δ| {float((x - y).abs().max()):.1e}, nfe {nfe}")
    assert nfe == calls == (2 * steps - 1 if name == HEUN else steps)
    assert sampler.nfe_nominal(steps) == steps
    assert torch.equal(x, y)
    assert float(y.std()) > 0.1
    assert sampler.provenance.startswith("folder: num_train_timesteps=1000")


def test_the_folders_shift_reaches_the_scheduler(make_sde, flow_folder, tmp_path):
    """A folder saved with ``shift=3`` is sampled on diffusers' shifted σ's (and ``-o`` wins)."""
    shifted = tmp_path / "shifted"
    shutil.copytree(flow_folder, shifted)
    dm.write_json(
        shifted / "scheduler" / "scheduler_config.json", {**dm.FLOW_SCHEDULER, "shift": 3.0}
    )
    model = du.DiffusersUNet.load(str(shifted), device=CPU, dtype=torch.float64)
    assert model.schedule.shift == 3.0 and model.describe()["shift"] == 3.0
    sde = make_sde("flow")
    x, _, sampler = suite(model, sde, EULER, prior(), 5)
    y, _ = diffusers_loop(model.unet, EULER, {**dm.FLOW_SCHEDULER, "shift": 3.0}, prior(), 5)
    unshifted, _ = diffusers_loop(model.unet, EULER, dm.FLOW_SCHEDULER, prior(), 5)
    assert torch.equal(x, y) and float((x - unshifted).abs().max()) > 1e-2
    assert "folder: num_train_timesteps=1000, shift=3.0" in sampler.provenance
    _, _, user = suite(model, sde, EULER, prior(), 5, shift=1.0)
    assert "user: shift=1.0" in user.provenance


def test_builtin_euler_on_diffusers_sigmas_is_flow_match_euler(registry, make_sde, model):
    """The built-in ``euler`` (EDM's Euler in x̃ = x/a, σ̃, through the x₀ view of the velocity)
    on diffusers' σ's below 1 equals diffusers' flow-matching Euler on the network to its float32
    state (``step`` casts the sample to float32)."""
    sde = make_sde("flow")
    times = [float(s) for s in np.linspace(0.95, 0.02, 10, dtype=np.float32)]
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(dm.FLOW_SCHEDULER)
    scheduler.set_timesteps(sigmas=times)
    x_T = prior()
    x = x_T
    with torch.no_grad():
        for timestep in scheduler.timesteps:
            x = scheduler.step(model.unet(x, timestep).sample, timestep, x).prev_sample
        euler = registry.get("samplers", "euler").obj()
        ours = euler.sample(x_T, TimeGrid.build(sde, times), model.view(sde), None)
    gap = float((ours - x).abs().max())
    print(f"\neuler vs FlowMatchEuler on the folder, 10 steps: |Δ| {gap:.1e}")
    assert gap < 1e-5


def test_score_models_start_at_t_max(registry, make_sde):
    """On the exact oracle (a score model: its velocity at σ = 1, a = 0, is 0/0) the first call is
    at the SDE's T, the others at t = σ; the row says so. diffusers' loop with that velocity is
    the same."""
    sde = make_sde("flow")
    model = oracle.gaussian_model(dim=4)
    x_T = oracle.prior(sde, 16, 4)
    sampler = DiffusersScheduler(FreeOptions(), HEUN)
    view = model.view(sde)
    with torch.no_grad():
        x = sampler.sample(x_T, TimeGrid.build(sde, [sde.T] * 6), view, SampleNoise(0, 0, 16))
    assert "sigma=1 evaluated at t=T=0.999" in sampler.provenance
    velocity = model.view(sde).velocity
    scheduler = diffusers.FlowMatchHeunDiscreteScheduler()
    scheduler.set_timesteps(6)
    y = x_T
    with torch.no_grad():
        for i, timestep in enumerate(scheduler.timesteps):  # call i is at σ = sigmas[i]
            t = min(float(scheduler.sigmas[i]), sde.T)
            y = scheduler.step(velocity(y, t), timestep, y).prev_sample
    assert view.calls == 11 and torch.equal(x, y)
    oracle_error = float((x - oracle.exact_flow(sde, x_T, 1e-300)).abs().max())
    assert oracle_error < 0.05, oracle_error


# -- the command line ------------------------------------------------------------------------------
def invoke(*args):
    from bench.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_bench_run_on_the_flow_folder(flow_folder, tmp_path):
    out = tmp_path / "r"
    samplers = f"diffusers:{EULER},diffusers:{HEUN},euler"
    result = invoke(
        "run", "--model", f"diffusers:{flow_folder}", "--samplers", samplers, "--steps", 3,
        "--samples", 8, "--metrics", "none", "--threads", 1, "--no-progress", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {r["sampler"]: r for r in map(json.loads, (out / "rows.jsonl").read_text().splitlines())}
    assert {r["sde"] for r in rows.values()} == {"flow"}
    assert {k: (r["status"], r["nfe"], r["nfe_nominal"]) for k, r in rows.items()} == {
        f"diffusers:{EULER}": ("ok", 3, 3),
        f"diffusers:{HEUN}": ("ok", 5, 3),
        "euler": ("ok", 3, 3),
    }
    assert rows[f"diffusers:{EULER}"]["scheduler_config"].startswith(
        "folder: num_train_timesteps=1000"
    )
    model = json.loads((out / "run.json").read_text())["model"]
    assert (model["trained_for"], model["native"], model["n_train"]) == ("flow", "velocity", 1000)


def test_dynamic_shifting_needs_mu(flow_folder, tmp_path):
    """A folder with ``use_dynamic_shifting`` loads (the network does not depend on it); its
    schedulers are ``unsupported`` rows until ``-o diffusers.mu=M`` fixes the shift."""
    dynamic = tmp_path / "dynamic"
    shutil.copytree(flow_folder, dynamic)
    config = {**dm.FLOW_SCHEDULER, "use_dynamic_shifting": True}
    dm.write_json(dynamic / "scheduler" / "scheduler_config.json", config)
    common = ("--steps", 3, "--samples", 4, "--metrics", "none", "--threads", 1, "--no-progress")
    out = tmp_path / "r"
    result = invoke(
        "run",
        "--model",
        f"diffusers:{dynamic}",
        "--samplers",
        f"diffusers:{EULER},euler",
        *common,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    rows = {r["sampler"]: r for r in map(json.loads, (out / "rows.jsonl").read_text().splitlines())}
    assert rows["euler"]["status"] == "ok"
    assert rows[f"diffusers:{EULER}"]["status"] == "unsupported"
    assert "needs mu" in rows[f"diffusers:{EULER}"]["reason"]
    out = tmp_path / "r2"
    result = invoke(
        "run", "--model", f"diffusers:{dynamic}", "--samplers", f"diffusers:{EULER}",
        "-o", "diffusers.mu=0.8", *common, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = map(json.loads, (out / "rows.jsonl").read_text().splitlines())
    assert row["status"] == "ok" and row["nfe"] == 3
    assert "use_dynamic_shifting=True" in row["scheduler_config"]
    assert row["scheduler_config"].endswith("; user, set_timesteps: mu=0.8")


# -- refusals, one line each -----------------------------------------------------------------------
def refused(path) -> str:
    with pytest.raises(BenchError) as info:
        du.DiffusersUNet.load(str(path), device=CPU, dtype=torch.float32)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"invert_sigmas": True}, "invert_sigmas"),
        ({"prediction_type": "epsilon"}, "does not fit FlowMatchEulerDiscreteScheduler"),
        ({"num_train_timesteps": 0}, "positive integer"),
        ({"shift": -1.0}, "shift must be positive"),
        ({"_class_name": "FlowMatchLCMScheduler"}, "not understood"),
    ],
)
def test_flow_configs_that_cannot_load(flow_folder, tmp_path, changes, message):
    bad = tmp_path / "bad"
    shutil.copytree(flow_folder, bad)
    dm.write_json(bad / "scheduler" / "scheduler_config.json", {**dm.FLOW_SCHEDULER, **changes})
    assert message in refused(bad)


def test_flow_sigmas_of_a_ddpm_type_config_are_refused(tmp_path):
    config = {**dm.DDPM_SCHEDULER, "_class_name": "DPMSolverMultistepScheduler"}
    config |= {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
    dm.write_pipeline(tmp_path / "sana", dm.TINY_DDPM_UNET, config)
    assert "FlowMatchEulerDiscreteScheduler" in refused(tmp_path / "sana")


def test_unknown_prediction_type_is_refused(tmp_path):
    dm.write_pipeline(
        tmp_path / "p", dm.TINY_DDPM_UNET, {**dm.DDPM_SCHEDULER, "prediction_type": "velocity"}
    )
    assert "prediction_type 'velocity' is not understood" in refused(tmp_path / "p")


def test_transformers_are_refused(tmp_path):
    """A transformer folder (bare, or as a pipeline's ``transformer``) with a flow-matching
    scheduler: only UNet2DModel networks load."""
    bare = tmp_path / "dit"
    dm.write_json(bare / "config.json", {"_class_name": "DiTTransformer2DModel", "sample_size": 8})
    dm.write_json(bare / "scheduler_config.json", dm.FLOW_SCHEDULER)
    assert "model class 'DiTTransformer2DModel' is not supported" in refused(bare)
    pipeline = tmp_path / "sd3"
    dm.write_json(
        pipeline / "transformer" / "config.json", {"_class_name": "SD3Transformer2DModel"}
    )
    dm.write_json(pipeline / "scheduler" / "scheduler_config.json", dm.FLOW_SCHEDULER)
    dm.write_json(
        pipeline / "model_index.json",
        {
            "_class_name": "StableDiffusion3Pipeline",
            "transformer": ["diffusers", "SD3Transformer2DModel"],
            "scheduler": ["diffusers", EULER],
        },
    )
    assert "the pipeline has no UNet2DModel" in refused(pipeline)


def test_fourier_embedding_and_vp_settings_are_refused(tmp_path, flow_folder):
    dm.write_pipeline(tmp_path / "f", dm.TINY_NCSNPP_UNET, dm.FLOW_SCHEDULER)
    assert "a flow-matching model (label σ·N)" in refused(tmp_path / "f")
    message = refused(f"{flow_folder},label=index")
    assert "VP (DDPM) models only" in message and "is a flow model" in message


def test_refusal_through_the_cli_is_one_line(flow_folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(flow_folder, bad)
    dm.write_json(
        bad / "scheduler" / "scheduler_config.json", {**dm.FLOW_SCHEDULER, "invert_sigmas": True}
    )
    result = invoke(
        "run", "--model", f"diffusers:{bad}", "--steps", 2, "--samples", 2, "--out", tmp_path / "r"
    )
    assert result.exit_code == 2
    assert "invert_sigmas" in result.output and len(result.output.strip().splitlines()) == 1
