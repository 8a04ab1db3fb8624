"""``diffusers:CLASS`` and the built-in samplers on a diffusers DDPM folder = diffusers' own loop.

A diffusers user runs ``CLASS.from_config(folder's scheduler config)``, ``set_timesteps(N)`` and,
for each timestep k, ``unet(scale_model_input(x, k), k)`` and ``step``. The tests run exactly
that beside ``--samplers diffusers:CLASS`` on a folder they build (a tiny UNet, briefly trained:
:func:`tests.diffusers_models.trained_ddpm_state`), from the same prior noise and, for
stochastic schedulers, the same per-sample generators, for every class docs/solvers/diffusers.md
lists as running on VP, at N = 10 and 25 steps: samples agree to 1e-4 of their scale (max |Δ| /
max(1, std)) and the NFE are equal. What they show (printed with ``-s``):

* the folder's scheduler config is the scheduler's (``clip_sample``, ``variance_type``,
  ``timestep_spacing`` … reach it) and the network is evaluated at exactly the scheduler's
  timestep: bitwise equal samples wherever the timesteps are integers;
* where they are fractional (Euler, Euler ancestral, LMS and Heun at 25 steps: ``linspace``
  spacing, 41.625·j) diffusers feeds the fractional timestep with σ interpolated linearly in σ,
  the suite the timestep of that σ interpolated in log σ (k-diffusion's rule): labels up to
  2.5e-3 apart, samples ~2e-5 of their scale; KDPM2 and the EDM schedulers interpolate in float32
  (k-diffusion's and diffusers' own ``sigma_to_t``) against the suite's float64: ~3e-6;
* the built-in ``ddim``, ``euler``, ``heun``, ``dpmpp_2m`` and ``unipc`` on the scheduler's own
  noise levels agree with its loop to the same precision (and with the DDPM labels
  floor(t·999) they do not);
* a v-prediction folder is a ``v`` model: in float64 ``diffusers:DDIMScheduler`` equals
  ``DDIMPipeline`` and the hand loop bitwise, the built-in ``ddim`` (v converted by the views)
  to diffusers' float32 coefficients.

EDM schedulers (σ-parameterised, no timesteps of their own for a DDPM network) are run, as a
k-diffusion user runs them, on k-diffusion's ``DiscreteEpsDDPMDenoiser`` of the folder's UNet.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from bench_plugins.samplers._diffusers_support import sample_seeds  # noqa: E402
from bench_plugins.samplers.diffusers_scheduler import DiffusersScheduler  # noqa: E402
from bench_plugins.score_models import diffusers_unet as du  # noqa: E402

from bench.core.noise import SampleNoise  # noqa: E402
from bench.core.options import FreeOptions  # noqa: E402
from bench.core.schedule import TimeGrid, sigma_range  # noqa: E402
from tests import diffusers_models as dm  # noqa: E402
from tests import kdiffusion  # noqa: E402

CPU = torch.device("cpu")
TOL = 1e-4
"""Max |Δ| of the final samples, relative to max(1, their std)."""
DOCS = Path(__file__).resolve().parents[1] / "docs" / "solvers" / "diffusers.md"

pytestmark = pytest.mark.usefixtures("one_thread")


def documented_classes() -> list[str]:
    """The classes docs/solvers/diffusers.md says run on VP (its "Which classes run" table)."""
    row = next(line for line in DOCS.read_text().splitlines() if line.startswith("| VP, sub-VP |"))
    return re.findall(r"`(\w+Scheduler)`", row.split("|")[2])


VARIANTS = {
    "DPMSolverMultistepScheduler": [
        {"solver_order": 1},
        {"solver_order": 3},
        {"solver_type": "heun"},
        {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
        {"algorithm_type": "sde-dpmsolver++"},
    ],
    "DPMSolverSinglestepScheduler": [{"solver_order": 3}],
    "UniPCMultistepScheduler": [{"solver_order": 1}, {"solver_order": 3}],
    "DDIMScheduler": [{"eta": 1.0}, {"timestep_spacing": "trailing"}],
    # its default snr_shift_scale = 3 rescales ᾱ: see test_cogvideox_ddim_shifts_the_table
    "CogVideoXDDIMScheduler": [{"snr_shift_scale": 1.0}],
}


def cases() -> list[tuple[str, dict]]:
    out = []
    for name in documented_classes():
        variants = VARIANTS.get(name, [])
        if name != "CogVideoXDDIMScheduler":
            variants = [{}, *variants]
        out += [(name, options) for options in variants]
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    state = dm.trained_ddpm_state()
    folder = dm.write_pipeline(root / "ddpm", dm.TINY_DDPM_UNET, dm.DDPM_SCHEDULER, state=state)
    return du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float32)


def vp(make_sde, model, steps: int):
    return make_sde("vp", steps, **model.sde_defaults["vp"])


def prior(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(5))


def generators(x_T: torch.Tensor, seed: int = 0) -> list[torch.Generator]:
    """The per-sample generators the sampler seeds from a cell's noise stream (the same draws)."""
    seeds = sample_seeds(SampleNoise(seed, 0, x_T.shape[0]), x_T)
    return [torch.Generator().manual_seed(s) for s in seeds]


def kd_denoiser(model):
    """k-diffusion's discrete-schedule wrapper of the folder's UNet, on diffusers' own table."""
    table = diffusers.DDPMScheduler.from_config(model.scheduler_config).alphas_cumprod
    return kdiffusion.external().DiscreteEpsDDPMDenoiser(
        lambda x, t: model.unet(x, t).sample, table, quantize=False
    )


def diffusers_loop(model, name, config, x_T, steps, step_kwargs=None, kd=None):
    """A diffusers user's loop: (final sample, model calls, [σ̃ the scheduler assumes per call],
    the first model input)."""
    scheduler = getattr(diffusers, name).from_config(config)
    scheduler.set_timesteps(steps)
    kwargs = dict(step_kwargs or {})
    if "generator" in inspect.signature(scheduler.step).parameters:
        kwargs["generator"] = generators(x_T)
    x, calls, first = x_T * scheduler.init_noise_sigma, 0, None
    with torch.no_grad():
        for k in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, k)
            first = model_input if first is None else first
            if kd is None:
                output = model.unet(model_input, k).sample
            else:  # EDM: F with precondition_outputs(x̃, F, σ) = D, D from k-diffusion's wrapper
                sigma = scheduler.sigmas[scheduler.step_index]
                skip = scheduler.precondition_outputs(x, torch.zeros_like(x), sigma)
                c_out = scheduler.precondition_outputs(torch.zeros(()), torch.ones(()), sigma)
                output = (kd(x, sigma.expand(x.shape[0])) - skip) / c_out
            calls += 1
            x = scheduler.step(output, k, x, **kwargs).prev_sample
    return x, calls, first


def adapter(model, sde, name, x_T, steps, **options):
    """``--samplers diffusers:CLASS`` on the model: (final sample, counted NFE, the sampler)."""
    sampler = DiffusersScheduler(FreeOptions(dict(options)), name)
    view = model.view(sde)
    with torch.no_grad():
        x = sampler.sample(x_T, TimeGrid.build(sde, [1.0] * steps), view, SampleNoise(0, 0, 2))
    return x, view.calls, sampler


def gap(x: torch.Tensor, y: torch.Tensor) -> float:
    """max |x − y| relative to max(1, std(y))."""
    return float((x - y).abs().max()) / max(1.0, float(y.std()))


# -- every documented class against diffusers' own loop ------------------------------------------
@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize(("name", "options"), cases(), ids=lambda v: str(v))
def test_scheduler_equals_diffusers_own_loop(make_sde, model, name, options, steps):
    sde = vp(make_sde, model, steps)
    x_T = prior()
    x, nfe, sampler = adapter(model, sde, name, x_T, steps, **options)
    config = {**model.scheduler_config, **sampler.init_values}
    kd = None
    if sampler.kind == "edm":  # a DDPM folder has no σ range: the SDE's (docs)
        config["sigma_min"], config["sigma_max"] = sigma_range(sde)
        kd = kd_denoiser(model)
    y, calls, _ = diffusers_loop(model, name, config, x_T, steps, sampler.step_values, kd)
    print(f"\n{name} {options or ''} N={steps}: |Δ| {gap(x, y):.1e} of std {float(y.std()):.2g}")
    assert nfe == calls
    assert gap(x, y) <= TOL


def test_documented_classes_are_the_ones_that_run():
    assert len(documented_classes()) == 21
    assert {"DDIMScheduler", "PNDMScheduler", "EDMEulerScheduler"} <= set(documented_classes())


def test_cogvideox_ddim_shifts_the_table(make_sde, model):
    """CogVideoXDDIMScheduler's default ``snr_shift_scale=3`` rescales ᾱ (SNR/3), so its timestep
    k is not the folder's noise level: diffusers feeds k, the suite the timestep of the noise level
    the scheduler's state has. They differ; with ``snr_shift_scale=1`` they agree (above)."""
    sde = vp(make_sde, model, 10)
    x_T = prior()
    x, _, sampler = adapter(model, sde, "CogVideoXDDIMScheduler", x_T, 10)
    config = dict(model.scheduler_config)
    y, _, _ = diffusers_loop(model, "CogVideoXDDIMScheduler", config, x_T, 10)
    assert gap(x, y) > 1e-3
    assert "class default: " in sampler.provenance and "snr_shift_scale=3.0" in sampler.provenance


# -- the folder's config is the scheduler's ------------------------------------------------------
def test_folder_clip_sample_is_inherited_and_an_option_wins(make_sde, model):
    """The folder says ``clip_sample=True`` (DDPM CIFAR-10's config does): DDIM clips x̂₀, as a
    diffusers user's DDIM does; ``-o diffusers.clip_sample=false`` turns it off."""
    sde = vp(make_sde, model, 10)
    x_T = prior()
    clip = {**model.scheduler_config, "clip_sample": True}
    no_clip = {**model.scheduler_config, "clip_sample": False}
    inherited, _, sampler = adapter(model, sde, "DDIMScheduler", x_T, 10)
    overridden, _, user = adapter(model, sde, "DDIMScheduler", x_T, 10, clip_sample=False)
    with_clip, _, _ = diffusers_loop(model, "DDIMScheduler", clip, x_T, 10)
    without, _, _ = diffusers_loop(model, "DDIMScheduler", no_clip, x_T, 10)
    assert gap(with_clip, without) > 0.1  # the setting matters here
    assert torch.equal(inherited, with_clip) and torch.equal(overridden, without)
    assert "folder: " in sampler.provenance and "clip_sample=True" in sampler.provenance
    assert "user: clip_sample=False" in user.provenance
    assert "folder, not accepted: variance_type" in sampler.provenance  # DDPM's, not DDIM's


def test_folder_timestep_spacing_is_inherited(make_sde, model):
    sde = vp(make_sde, model, 5)
    sampler = DiffusersScheduler(FreeOptions(), "DDIMScheduler")
    folder = {**model.scheduler_config, "timestep_spacing": "trailing"}
    scheduler = sampler.build_scheduler(sde, folder)
    scheduler.set_timesteps(5)
    assert scheduler.timesteps.tolist() == [999, 799, 599, 399, 199]
    assert sampler.resolve(sde, folder).sources["timestep_spacing"] == "folder"
    assert sampler.resolve(sde, None).sources["beta_start"] == "suite"  # no folder: the SDE's


def test_rows_record_where_each_key_came_from(model, tmp_path):
    """``bench run`` on the folder: the row's ``scheduler_config`` lists every key of DDIM's
    configuration under folder, user or class default, and the folder keys DDIM does not take."""
    from click.testing import CliRunner

    from bench.cli import cli

    out = tmp_path / "r"
    args = ["run", "--model", f"diffusers:{model.checkpoint.root}", "--samplers"]
    args += ["diffusers:DDIMScheduler", "-o", "diffusers.clip_sample=false", "--steps", "3"]
    args += ["--samples", "2", "--metrics", "none", "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (row,) = map(json.loads, (out / "rows.jsonl").read_text().splitlines())
    assert row["status"] == "ok" and row["nfe"] == 3 and row["eps"] == 1e-3
    folder, user, default, left_out = row["scheduler_config"].split("; ")
    assert folder.startswith("folder: beta_end=0.02, beta_schedule=linear, beta_start=0.0001")
    assert user == "user: clip_sample=False"
    assert default.startswith("class default: ") and "timestep_spacing=leading" in default
    assert left_out == "folder, not accepted: variance_type"


# -- the built-in samplers on the scheduler's noise levels ---------------------------------------
BUILTINS = [
    ("ddim", {}, "DDIMScheduler", 10),
    ("ddim", {}, "DDIMScheduler", 25),
    ("euler", {}, "EulerDiscreteScheduler", 10),
    ("euler", {}, "EulerDiscreteScheduler", 25),
    ("heun", {}, "HeunDiscreteScheduler", 10),
    ("heun", {}, "HeunDiscreteScheduler", 25),
    ("dpmpp_2m", {}, "DPMSolverMultistepScheduler", 25),
    ("unipc", {"variant": "bh2", "lower_order_final": "diffusers"}, "UniPCMultistepScheduler", 25),
]


def builtin_on_the_schedulers_levels(registry, make_sde, model, name, options, cls, steps):
    """(built-in sample, diffusers' sample): the built-in runs on the times t_k whose σ̃ are the
    scheduler's (its ``sigmas``, or sqrt((1 − ᾱ_k)/ᾱ_k)), from the state its first model call
    sees (diffusers' Euler-type loops start from σ_max·z: not exactly unit variance)."""
    sde = vp(make_sde, model, steps)
    config = {**model.scheduler_config, "clip_sample": False}  # the built-ins do not clip
    y, _, start = diffusers_loop(model, cls, config, prior().to(model.dtype), steps)
    scheduler = getattr(diffusers, cls).from_config(config)
    scheduler.set_timesteps(steps)
    if hasattr(scheduler, "sigmas"):
        levels = [float(s) for s in dict.fromkeys(scheduler.sigmas.tolist()) if s > 0]
    else:
        bars = [float(scheduler.alphas_cumprod[int(k)]) for k in scheduler.timesteps]
        levels = [math.sqrt((1 - b) / b) for b in bars]
    grid = TimeGrid.build(sde, [sde.t_of_log_snr(-math.log(s)) for s in levels])
    sampler_cls = registry.get("samplers", name).obj
    sampler = sampler_cls(sampler_cls.Options(**options)) if options else sampler_cls()
    with torch.no_grad():
        x = sampler.sample(start, grid, model.view(sde), SampleNoise(0, 0, 2))
    return x, y


@pytest.mark.parametrize(("name", "options", "cls", "steps"), BUILTINS, ids=lambda v: str(v))
def test_builtin_samplers_equal_diffusers_on_its_levels(
    registry, make_sde, model, name, options, cls, steps
):
    x, y = builtin_on_the_schedulers_levels(registry, make_sde, model, name, options, cls, steps)
    print(f"\n{name} vs {cls} N={steps}: |Δ| {gap(x, y):.1e} of std {float(y.std()):.2g}")
    assert gap(x, y) <= TOL


def test_builtin_ddim_with_ddpm_labels_does_not(registry, make_sde, model):
    """With the labels floor(t·999) of ``label=index`` (k + 1 … k + 3 for most k ≥ 463), the same
    comparison fails: the test can tell."""
    folder = model.checkpoint.root
    old = du.DiffusersUNet.load(
        f"{folder},label=index,std=continuous", device=CPU, dtype=torch.float32
    )
    x, y = builtin_on_the_schedulers_levels(
        registry, make_sde, old, "ddim", {}, "DDIMScheduler", 25
    )
    print(f"\nddim with floor(t·999) labels vs DDIMScheduler N=25: |Δ| {gap(x, y):.1e}")
    assert gap(x, y) > 10 * TOL


# -- a v-prediction folder (Salimans & Ho 2022) ----------------------------------------------------
@pytest.fixture(scope="module")
def v_model(tmp_path_factory):
    """A DDIM folder with ``prediction_type="v_prediction"``, trained briefly on v, in float64."""
    root = tmp_path_factory.mktemp("v")
    state = dm.trained_ddpm_state(prediction="v_prediction")
    folder = dm.write_pipeline(root / "v", dm.TINY_DDPM_UNET, dm.V_DDIM_SCHEDULER, state=state)
    return du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float64)


def test_v_prediction_folder_is_a_v_model(make_sde, v_model):
    """The network's output is the model's native ``v``: the v view is the UNet's output at the
    timestep of the state's noise level, and ε, x₀ are the closed forms ε = a·v + std·x,
    x₀ = a·x − std·v (a² + std² = 1), one network call each."""
    sde = vp(make_sde, v_model, 10)
    assert v_model.native == "v" and v_model.describe()["native"] == "v"
    x = prior(2).to(torch.float64)
    t = sde.t_of_log_snr(0.0)  # ᾱ = 1/2
    a, std = sde.marginal_coef(t)
    label = v_model.vp_label(sde, t)
    with torch.no_grad():
        out = v_model.unet(x, torch.tensor([label], dtype=torch.float64)).sample
        view = v_model.view(sde)
        torch.testing.assert_close(view.v(x, t), out, rtol=0, atol=0)
        torch.testing.assert_close(view.eps(x, t), a * out + std * x, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(view.denoise(x, t), a * x - std * out, rtol=1e-13, atol=1e-13)
    assert view.calls == 3


@pytest.mark.parametrize("steps", [10, 25])
def test_v_prediction_folder_samples_as_diffusers_ddim(registry, make_sde, v_model, steps):
    """``diffusers:DDIMScheduler`` and the built-in ``ddim`` (on DDIM's noise levels) on the v
    folder equal diffusers' own loop on the same noise, float64, with equal NFE: the adapter feeds
    the v view (the network's own output) bitwise; ``ddim`` converts v to ε and x₀ through the
    views, diffusers with its own v-prediction formulas and its float32 ᾱ coefficients (~2e-7)."""
    sde = vp(make_sde, v_model, steps)
    x_T = prior().to(torch.float64)
    x, nfe, sampler = adapter(v_model, sde, "DDIMScheduler", x_T, steps)
    y, calls, _ = diffusers_loop(v_model, "DDIMScheduler", v_model.scheduler_config, x_T, steps)
    builtin, z = builtin_on_the_schedulers_levels(
        registry, make_sde, v_model, "ddim", {}, "DDIMScheduler", steps
    )
    print(
        f"\nv folder N={steps}: DDIMScheduler |Δ| {gap(x, y):.1e}, ddim |Δ| {gap(builtin, z):.1e}"
    )
    assert nfe == calls == steps
    assert "prediction_type=v_prediction" in sampler.provenance
    assert torch.equal(x, y)
    assert gap(builtin, z) <= 1e-6
    assert float(y.std()) > 0.1  # a sample, not a collapse


def test_v_prediction_folder_equals_the_ddim_pipeline(make_sde, v_model):
    """``bench run --model diffusers:FOLDER --samplers diffusers:DDIMScheduler`` in float64 is
    ``DDIMPipeline`` on the same initial noise (the pipeline's ``randn_tensor`` draw): the
    images in [0, 1] agree to round-off."""
    pipeline = diffusers.DDIMPipeline(
        unet=v_model.unet,
        scheduler=diffusers.DDIMScheduler.from_config(v_model.scheduler_config),
    )
    pipeline.set_progress_bar_config(disable=True)
    with torch.no_grad():
        images = pipeline(
            batch_size=3,
            generator=torch.Generator().manual_seed(0),
            num_inference_steps=10,
            output_type="pt",
        ).images
    x_T = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampler = DiffusersScheduler(FreeOptions(), "DDIMScheduler")
    sde = vp(make_sde, v_model, 10)
    with torch.no_grad():
        x = sampler.sample(
            x_T, TimeGrid.build(sde, [1.0] * 10), v_model.view(sde), SampleNoise(0, 0, 3)
        )
    ours = v_model.to_data(x).clamp(0, 1)
    print(f"\nv folder vs DDIMPipeline: |Δ| {float((ours - images).abs().max()):.1e}")
    torch.testing.assert_close(ours, images, rtol=0, atol=1e-12)
    assert 0.05 < float((images > 0).double().mean())  # not all clipped
