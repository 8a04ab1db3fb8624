"""diffusers UNet2DModel folders as score models: mapping to VP/VE, layouts, errors, bench run.

Every model here is a tiny random-weight UNet written to a temporary folder; nothing is
downloaded. The module is skipped when the optional diffusers extra is not installed.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from bench_plugins.score_models import diffusers_unet as du  # noqa: E402

from bench.errors import BenchError, Unsupported  # noqa: E402
from tests import diffusers_models as dm  # noqa: E402
from tests.files import Exploit  # noqa: E402
from tests.sampling import run_pc  # noqa: E402

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: fastest on one thread


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers")
    return {
        "ddpm": dm.write_pipeline(root / "ddpm", dm.TINY_DDPM_UNET, dm.DDPM_SCHEDULER),
        "ve": dm.write_pipeline(root / "ncsnpp", dm.TINY_NCSNPP_UNET, dm.VE_SCHEDULER, seed=1),
    }


@pytest.fixture(scope="module")
def ddpm(folders):
    return du.DiffusersUNet.load(str(folders["ddpm"]), device=CPU, dtype=torch.float32)


@pytest.fixture(scope="module")
def ve(folders):
    return du.DiffusersUNet.load(str(folders["ve"]), device=CPU, dtype=torch.float32)


def copy_with_scheduler(src, dst, **changes):
    """A copy of a pipeline folder with scheduler config keys changed (None deletes)."""
    shutil.copytree(src, dst)
    path = dst / "scheduler" / "scheduler_config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))
    return dst


def raw(model, x, label):
    """The UNet's own output at a float label, bypassing the plugin."""
    with torch.no_grad():
        return model.unet(x, torch.full((x.shape[0],), float(label))).sample


# -- mapping -----------------------------------------------------------------------------------
def test_ddpm_pipeline_maps_to_vp(ddpm):
    assert ddpm.trained_for == "vp"
    assert ddpm.data_shape == (3, 8, 8)
    assert ddpm.sde_defaults == {
        "vp": {"beta_min": pytest.approx(0.1), "beta_max": 20.0, "eps": 1e-3}  # eps = 1/N
    }
    assert ddpm.dataset is None
    assert ddpm.scheduler_config == dm.DDPM_SCHEDULER  # what --samplers diffusers:CLASS inherits
    assert ddpm.native == "eps"  # ε̂ itself, as a diffusers scheduler receives it
    info = ddpm.describe()
    assert info["prediction_type"] == "epsilon" and info["quantize"] is False
    assert info["label"] == "timestep(sigma(t)) in the 1000-step table, log-sigma interpolated"
    assert info["data_range"] == [-1.0, 1.0] and len(info["weights_sha256"]) == 64
    assert info["weight_files"] == ["diffusion_pytorch_model.safetensors"]
    assert ddpm.default_grid == {}  # no snr in a DDPM scheduler config


def test_ncsnpp_pipeline_maps_to_ve(ve):
    assert ve.trained_for == "ve"
    assert ve.sde_defaults == {"ve": {"sigma_min": 0.01, "sigma_max": 50.0}}
    assert ve.describe()["snr"] == 0.16 and ve.describe()["data_range"] == [0.0, 1.0]
    assert ve.default_grid == {"snrs": (0.16,)}  # the folder's snr is the default --snr


def test_linear_ddpm_schedule_is_the_vp_sde_table(make_sde):
    """β_j = linspace(1e-4, 0.02, 1000) equals VP's β_min/N + j(β_max−β_min)/(N(N−1))."""
    from diffusers import DDPMScheduler

    sde = make_sde("vp", 1000)
    schedule = du.folder.map_schedule(dm.DDPM_SCHEDULER, Path("scheduler_config.json"))
    ours = schedule.alphas_cumprod()
    prod = 1.0
    for k in range(1000):
        prod *= 1.0 - sde.discrete_beta(k)
        assert ours[k] == pytest.approx(prod, rel=1e-12)
    theirs = DDPMScheduler(**{k: v for k, v in dm.DDPM_SCHEDULER.items() if k[0] != "_"})
    ours = torch.tensor(ours, dtype=torch.float64)
    assert torch.allclose(ours, theirs.alphas_cumprod.double(), rtol=1e-5)


@pytest.mark.parametrize("t", [1.0, 0.5, 0.3337, 1e-3])
@pytest.mark.parametrize("label", ["index", "time"])
def test_vp_score_is_minus_eps_over_discrete_std(folders, ddpm, make_sde, t, label):
    """s = −ε̂(x, label) / sqrt(1 − ᾱ_k), k = floor(t·999), ᾱ of linspace(1e-4, 0.02, 1000);
    the label is k itself (``label=index``) or t·999 (``label=time``)."""
    model = ddpm_with(folders, label=label)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    k = math.floor(t * 999 + 1e-9)
    alpha_bar = float(np.cumprod(1 - betas)[k])
    expected = -raw(model, x, k if label == "index" else t * 999) / math.sqrt(1 - alpha_bar)
    got = model.score_fn(make_sde("vp", 10))(x, t)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def ddpm_with(folders, arg: str = "", dtype=torch.float32, **options):
    """The DDPM folder's model with ``,KEY=VALUE`` settings and ``-o diffusers.KEY`` options."""
    opts = du.DiffusersUNet.Options(**options)
    return du.DiffusersUNet.load(f"{folders['ddpm']}{arg}", device=CPU, dtype=dtype, options=opts)


def test_vp_continuous_std_variant(folders, make_sde):
    model = du.DiffusersUNet.load(
        f"{folders['ddpm']},label=index,std=continuous", device=CPU, dtype=torch.float32
    )
    sde = make_sde("vp", 10)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    _, std = sde.marginal_coef(0.25)
    expected = -raw(model, x, math.floor(0.25 * 999)) / std
    torch.testing.assert_close(model.score_fn(sde)(x, 0.25), expected, rtol=1e-5, atol=1e-6)
    assert model.describe()["std"] == "continuous"


@pytest.mark.parametrize("label, expected", [("index", 499.0), ("time", 499.5)])
def test_label_reaches_the_network_unrounded(folders, make_sde, label, expected):
    """UNet2DModel casts a Python number label to long; the plugin passes a float tensor, so
    ``label=time`` arrives as 499.5 and the default integer DDPM timestep as 499."""
    model = ddpm_with(folders, label=label)
    seen = []
    handle = model.unet.time_proj.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        model.score_fn(make_sde("vp", 10))(torch.zeros(1, 3, 8, 8), 0.5)
    finally:
        handle.remove()
    assert seen[0].dtype == torch.float32 and seen[0].tolist() == [expected]


def test_label_and_std_settings_in_the_arg_or_as_options(folders, ve):
    """``,label=time`` and ``-o diffusers.label=time`` are the same setting; a clash is refused,
    and so is a VP setting on a VE model."""
    by_arg, by_option = ddpm_with(folders, ",label=time"), ddpm_with(folders, label="time")
    assert by_arg.label == by_option.label == "time"
    assert by_arg.describe()["label"] == "t*999"
    both = ddpm_with(folders, ",std=continuous", label="time")
    assert (both.std, both.label) == ("continuous", "time")
    with pytest.raises(BenchError, match="given twice"):
        ddpm_with(folders, ",label=index", label="time")
    with pytest.raises(BenchError, match="not understood"):
        ddpm_with(folders, ",label=round")
    with pytest.raises(BenchError, match="VP \\(DDPM\\) models only"):
        du.DiffusersUNet.load(
            str(folders["ve"]),
            device=CPU,
            dtype=torch.float32,
            options=du.DiffusersUNet.Options(label="time"),
        )
    quantized = ddpm_with(folders, ",quantize=true")
    assert (quantized.label, quantized.quantize, quantized.std) == ("sigma", True, "continuous")
    assert ddpm_with(folders, quantize=True).quantize and not ddpm_with(folders).quantize
    with pytest.raises(BenchError, match="quantize applies to label=sigma"):
        ddpm_with(folders, ",label=index,quantize=true")
    with pytest.raises(BenchError, match="std=discrete applies to label=index"):
        ddpm_with(folders, ",std=discrete")
    with pytest.raises(ValueError, match="quantize must be true or false"):
        du.DiffusersUNet.Options(quantize="yes")


# -- the timestep of the state's noise level -----------------------------------------------------
def diffusers_sigmas(config) -> list[float]:
    """σ_k = sqrt((1 − ᾱ_k)/ᾱ_k) of diffusers' own DDPMScheduler table for a folder config."""
    from diffusers import DDPMScheduler

    table = DDPMScheduler.from_config(config).alphas_cumprod.tolist()
    return [math.sqrt((1 - a) / a) for a in table]


def time_of(sde, sigma: float) -> float:
    return sde.t_of_log_snr(-math.log(sigma))


def test_timestep_table_is_diffusers_own(folders):
    """The model's noise table is bit for bit the alphas_cumprod of the folder's scheduler
    (float32), so a scheduler's timestep k maps back to k itself."""
    from bench_plugins.score_models.diffusers_timesteps import diffusers_alphas_cumprod
    from diffusers import DDPMScheduler

    for n, start, end in [(1000, 1e-4, 0.02), (4000, 2.5e-5, 5e-3)]:
        config = {**dm.DDPM_SCHEDULER, "num_train_timesteps": n, "beta_start": start}
        theirs = DDPMScheduler.from_config({**config, "beta_end": end}).alphas_cumprod.tolist()
        assert diffusers_alphas_cumprod(start, end, n) == theirs


def test_label_is_exactly_k_on_the_schedulers_timesteps(ddpm, make_sde):
    """At the time whose σ̃ is σ_k of the table, the network gets k itself (to rounding); the
    DDPM label floor(t·999) of ``label=index`` gets k + 1 … k + 3 there for 463 ≤ k < 999."""
    sde = make_sde("vp", 10, **ddpm.sde_defaults["vp"])
    sigmas = diffusers_sigmas(dm.DDPM_SCHEDULER)
    for k in (0, 1, 17, 462, 463, 500, 998, 999):
        assert ddpm.vp_label(sde, time_of(sde, sigmas[k])) == pytest.approx(k, abs=1e-9)
    index = du.DiffusersUNet.load(
        f"{ddpm.checkpoint.root},label=index", device=CPU, dtype=torch.float32
    )
    off = [k for k, s in enumerate(sigmas) if index.vp_label(sde, time_of(sde, s)) != k]
    assert off == list(range(463, 999))  # 536 timesteps; 999's t > 1 is clamped to 999
    seen = []
    hook = ddpm.unet.time_proj.register_forward_hook(lambda m, a, o: seen.append(a[0]))
    try:
        ddpm.view(sde).eps(torch.zeros(1, 3, 8, 8), time_of(sde, sigmas[500]))
    finally:
        hook.remove()
    assert seen[0].tolist() == [500.0]


def test_label_interpolates_in_log_sigma_as_k_diffusion(ddpm, folders, make_sde):
    """Between table entries the timestep is linear in log σ, outside the table the nearest end:
    k-diffusion's ``DiscreteSchedule.sigma_to_t`` on the same table (float64) gives the same, and
    with ``quantize`` the nearest entry in log σ (its ``quantize=True``)."""
    from tests import kdiffusion

    sde = make_sde("vp", 10, **ddpm.sde_defaults["vp"])
    sigmas = diffusers_sigmas(dm.DDPM_SCHEDULER)
    table = torch.tensor(sigmas, dtype=torch.float64)
    reference = kdiffusion.external().DiscreteSchedule(table, quantize=False)
    g = torch.Generator().manual_seed(0)
    levels = torch.exp(torch.empty(300, dtype=torch.float64).uniform_(-4.7, 5.2, generator=g))
    quantized = ddpm_with(folders, quantize=True)
    for sigma in levels.tolist():
        t = time_of(sde, sigma)
        expected = reference.sigma_to_t(torch.tensor(sigma, dtype=torch.float64))
        assert ddpm.vp_label(sde, t) == pytest.approx(float(expected), abs=1e-8)
        nearest = reference.sigma_to_t(torch.tensor(sigma, dtype=torch.float64), quantize=True)
        assert quantized.vp_label(sde, t) == float(nearest)
    middle = math.sqrt(sigmas[500] * sigmas[501])  # halfway in log σ: k + ½ (closed form)
    assert ddpm.vp_label(sde, time_of(sde, middle)) == pytest.approx(500.5, abs=1e-8)
    assert ddpm.vp_label(sde, time_of(sde, 0.5 * sigmas[0])) == 0.0
    assert ddpm.vp_label(sde, time_of(sde, 2.0 * sigmas[999])) == 999.0


def test_quantize_option_through_the_cli(folders, tmp_path):
    out = tmp_path / "r"
    args = ("--model", f"diffusers:{folders['ddpm']}", "-o", "diffusers.quantize=true")
    result = _run_cli(*args, *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "run.json").read_text())["model"]
    assert meta["quantize"] is True and meta["label"].endswith("nearest")


def test_eps_is_the_folders_first_timestep(folders, registry, make_sde, tmp_path):
    """A folder trained with 4,000 timesteps (β's 2.5e-5 … 5e-3: the same VP SDE) has eps =
    1/4000, so the uniform grid of N = 4000 steps visits DDPM's timesteps 3999 − i with the
    integer labels; ``--eps`` still wins, and the rows record the eps used."""
    folder = copy_with_scheduler(
        folders["ddpm"], tmp_path / "m", num_train_timesteps=4000, beta_start=2.5e-5, beta_end=5e-3
    )
    model = du.DiffusersUNet.load(f"{folder},label=index", device=CPU, dtype=torch.float32)
    assert model.sde_defaults["vp"] == pytest.approx(
        {"beta_min": 0.1, "beta_max": 20.0, "eps": 2.5e-4}
    )
    sde = make_sde("vp", 4000, **model.sde_defaults["vp"])
    grid = registry.get("schedules", "uniform").obj().grid(sde, 4000)
    for i in (0, 1, 2000, 3998, 3999):
        assert model.vp_label(sde, grid.t[i]) == 3999 - i
    for given, expected in ((None, 2.5e-4), ("1e-3", 1e-3)):
        out = tmp_path / f"r{given}"
        eps = ("--eps", given) if given else ()
        result = _run_cli("--model", f"diffusers:{folder}", *eps, *FAST, "--out", out)
        assert result.exit_code == 0, result.output
        (row,) = map(json.loads, (out / "rows.jsonl").read_text().splitlines())
        assert row["status"] == "ok" and row["eps"] == expected


def test_label_option_through_the_cli(folders, tmp_path):
    """``-o diffusers.label=time`` reaches the model and run.json records the convention."""
    out = tmp_path / "r"
    result = _run_cli(
        "--model", f"diffusers:{folders['ddpm']}", "-o", "diffusers.label=time",
        *FAST, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["model"]["label"] == "t*999"
    bad = _run_cli("--model", f"diffusers:{folders['ddpm']}", "-o", "diffusers.label=x", *FAST)
    assert bad.exit_code == 2 and "label must be one of sigma, index, time" in bad.output


LABELS = ("index", "time", "sigma")


@pytest.mark.slow
def test_integer_label_reproduces_ddpm_sampler_at_n1000(folders, registry, make_sde):
    """The suite's ancestral sampler on the VP SDE, N = 1000, uniform grid, float64, is DDPM's
    own sampler (diffusers' DDPMScheduler, fixed_large variance, no clipping, float64 tables)
    when the label is the integer timestep (``label=index``): to ~4e-13. The unrounded t·999
    drifts (~1e-5 relative, 1e-2 absolute, here), and so does the default ``label=sigma``: the
    chain's state at step i has the table's σ_{999−i}, the SDE's at t_i has σ̃(t_i), and the
    label follows the latter."""
    from diffusers import DDPMScheduler

    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    config = {k: v for k, v in dm.DDPM_SCHEDULER.items() if k[0] != "_"}
    scheduler = DDPMScheduler(**config | {"clip_sample": False, "variance_type": "fixed_large"})
    scheduler.betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    scheduler.alphas = 1 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, 0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    scheduler.set_timesteps(1000)
    model = ddpm_with(folders, dtype=torch.float64, label="index")
    theirs, noise = x_T.clone(), torch.Generator().manual_seed(8)
    with torch.no_grad():
        for k in scheduler.timesteps:  # DDPMPipeline's loop
            eps = model.unet(theirs, k).sample
            theirs = scheduler.step(eps, k, theirs, generator=noise).prev_sample

    def ours(label: str) -> torch.Tensor:
        m = model if label == "index" else ddpm_with(folders, dtype=torch.float64, label=label)
        sde = make_sde("vp", 1000)
        g = torch.Generator().manual_seed(8)  # the same draws, in the same order
        draw = lambda y: torch.randn(y.shape, generator=g, dtype=y.dtype)  # noqa: E731
        step = registry.get("predictors", "ancestral").obj(sde, m.view(sde).score, noise=draw)
        x = x_T.clone()
        for t in sde.timesteps():
            x, x_mean = step.update(x, t, None)
        return x_mean  # the last step's mean: DDPM adds no noise at its t = 0

    scale = theirs.abs().max()
    gaps = {label: float((ours(label) - theirs).abs().max() / scale) for label in LABELS}
    print(f"\nancestral N=1000 vs DDPM's sampler, max |Δ|/max |x|: {gaps}")
    assert gaps["index"] < 5e-12
    assert gaps["time"] > 1e-7 and gaps["sigma"] > 1e-7  # the state's noise level is σ̃(t)


EULER_CONTINUOUS_V = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "timestep_type": "continuous",
}


def test_euler_continuous_v_prediction_labels_are_quarter_log_sigma(tmp_path, make_sde):
    """EulerDiscreteScheduler(timestep_type="continuous", v_prediction): the network gets
    ¼·log σ and its x̂₀ is diffusers' own ``pred_original_sample`` at the same σ."""
    from diffusers import EulerDiscreteScheduler

    folder = dm.write_pipeline(tmp_path / "v", dm.TINY_DDPM_UNET, EULER_CONTINUOUS_V)
    model = du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float32)
    assert model.std == "continuous" and model.describe()["label"] == "0.25*log(sigma(t))"
    scheduler = EulerDiscreteScheduler(
        **{k: v for k, v in EULER_CONTINUOUS_V.items() if k[0] != "_"}
    )
    scheduler.set_timesteps(10)
    sde = make_sde("vp", 10, **model.sde_defaults["vp"])
    view = model.view(sde)
    seen = []
    hook = model.unet.time_proj.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        for i in (2, 5, 9):
            sigma, label = float(scheduler.sigmas[i]), scheduler.timesteps[i]
            x_sigma = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(i)) * sigma
            scheduler._step_index = i
            v = model.unet(scheduler.scale_model_input(x_sigma, label), label).sample
            scheduler._step_index = i
            expected = scheduler.step(v, label, x_sigma).pred_original_sample
            t = sde.t_of_log_snr(-math.log(sigma))
            a, _ = sde.marginal_coef(t)
            got = view.denoise(x_sigma * a, t)
            torch.testing.assert_close(seen[-1], torch.full((2,), float(label)), rtol=0, atol=1e-6)
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    finally:
        hook.remove()


def test_euler_continuous_labels_refuse_index_settings(tmp_path):
    folder = dm.write_pipeline(tmp_path / "v", dm.TINY_DDPM_UNET, EULER_CONTINUOUS_V)
    for arg in (",label=index", ",std=discrete"):
        with pytest.raises(BenchError, match="timestep_type='continuous'"):
            du.DiffusersUNet.load(f"{folder}{arg}", device=CPU, dtype=torch.float32)
    discrete = dm.write_pipeline(
        tmp_path / "e", dm.TINY_DDPM_UNET, EULER_CONTINUOUS_V | {"prediction_type": "epsilon"}
    )  # diffusers uses ¼·log σ only with v-prediction: this one keeps integer timesteps
    model = du.DiffusersUNet.load(str(discrete), device=CPU, dtype=torch.float32)
    assert model.describe()["label"].startswith("timestep(sigma(t))")


def test_weights_sha256_hashes_only_what_is_loaded(folders, tmp_path):
    """A variant file beside the weights changes nothing; the hash is sha256sum of the file
    loaded, or of the shards of a sharded checkpoint in index order."""
    import hashlib

    from diffusers import UNet2DModel

    folder = tmp_path / "m"
    shutil.copytree(folders["ddpm"], folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    before = du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float32)
    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"not loaded")
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not loaded either")
    after = du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float32)
    assert before.weights_sha256() == after.weights_sha256()
    assert after.weights_sha256() == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert after.describe()["weight_files"] == ["diffusion_pytorch_model.safetensors"]

    sharded = tmp_path / "sharded"
    shutil.copytree(folders["ddpm"], sharded)
    shutil.rmtree(sharded / "unet")
    unet = UNet2DModel.from_pretrained(str(folders["ddpm"] / "unet"))
    unet.save_pretrained(sharded / "unet", max_shard_size="100KB")
    model = du.DiffusersUNet.load(str(sharded), device=CPU, dtype=torch.float32)
    shards = model.describe()["weight_files"]
    assert len(shards) > 1
    digest = hashlib.sha256()
    for name in shards:
        digest.update((sharded / "unet" / name).read_bytes())
    assert model.weights_sha256() == digest.hexdigest()


def test_variant_weights_only_are_refused(folders, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(folders["ddpm"], folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name("diffusion_pytorch_model.fp16.safetensors"))
    with pytest.raises(BenchError, match="only variant weights"):
        du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float32)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_give_the_same_score(prediction):
    """x_t = a·x0 + std·ε: ε-, v- and x0-prediction of the truth all give s = −ε/std."""
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    a = 0.6
    std = math.sqrt(1 - a * a)
    x = a * x0 + std * eps
    out = {"epsilon": eps, "v_prediction": a * eps - std * x0, "sample": x0}[prediction]
    torch.testing.assert_close(du.prediction_to_score(prediction, out, x, a, std), -eps / std)


def test_ve_score_is_network_output_already_divided_by_sigma(ve, make_sde):
    """Label σ(t); diffusers' Fourier UNet returns (conv_out + skip)/σ, which is the score."""
    sde = make_sde("ve", 10)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    sigma = sde.sigma(0.4)
    parts = {}
    hooks = [
        ve.unet.conv_out.register_forward_hook(lambda m, a, o: parts.update(conv=o.clone())),
        ve.unet.up_blocks[-1].register_forward_hook(lambda m, a, o: parts.update(skip=o[1])),
    ]
    try:
        got = ve.score_fn(sde)(x, 0.4)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(got, raw(ve, x, sigma))
    torch.testing.assert_close(got, (parts["conv"] + parts["skip"]) / sigma)


def test_to_data_maps_each_range_to_unit_interval(ddpm, ve):
    x = torch.tensor([-1.0, 0.0, 1.0])
    assert ddpm.to_data(x).tolist() == [0.0, 0.5, 1.0]
    assert ve.to_data(x).tolist() == [-1.0, 0.0, 1.0]


def test_check_sde_refuses_other_sdes_and_ranges(ddpm, ve, make_sde):
    with pytest.raises(Unsupported, match="trained for the vp SDE"):
        ddpm.check_sde(make_sde("ve", 10))
    with pytest.raises(Unsupported, match=r"-o vp.beta_min=0.1 -o vp.beta_max=20"):
        ddpm.score_fn(make_sde("vp", 10, beta_max=10.0))
    with pytest.raises(Unsupported, match=r"sigma_max=50, not sigma_min=0.01, sigma_max=348"):
        ve.check_sde(make_sde("ve", 10, sigma_max=348.0))
    ve.check_sde(make_sde("ve", 10))


def test_nfe_is_counted_per_network_call(ve, registry, make_sde):
    """One score call is one UNet forward: 3 steps of Langevin + Euler–Maruyama are 6 NFE.

    (VE here: on VP with N = 3 the reference Langevin factor α = 1 − β_k is negative.)
    """
    sde = make_sde("ve", 3)
    score = ve.view(sde)
    calls = []
    handle = ve.unet.register_forward_hook(lambda *_: calls.append(1))
    predictor = registry.get("predictors", "euler").obj(sde, score)
    corrector = registry.get("correctors", "langevin").obj(sde, score, 0.16, 1)
    try:
        x = run_pc(sde, predictor, corrector, sde.prior_sampling(torch.randn(2, 3, 8, 8)))
    finally:
        handle.remove()
    assert x.shape == (2, 3, 8, 8) and bool(torch.isfinite(x).all())
    assert score.calls == len(calls) == 6


# -- layouts -------------------------------------------------------------------------------------
def test_bare_unet_folder_with_scheduler_beside(folders, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(folders["ddpm"] / "unet", bare)
    shutil.copy(folders["ddpm"] / "scheduler" / "scheduler_config.json", bare)
    model = du.DiffusersUNet.load(str(bare), device=CPU, dtype=torch.float32)
    assert model.trained_for == "vp" and model.checkpoint.unet_dir == bare


def test_unet_subfolder_finds_the_sibling_scheduler(folders):
    model = du.DiffusersUNet.load(str(folders["ve"] / "unet"), device=CPU, dtype=torch.float64)
    assert model.trained_for == "ve"
    assert next(model.unet.parameters()).dtype == torch.float64


def test_bin_weights_load_with_weights_only(tmp_path, monkeypatch):
    folder = dm.write_pipeline(tmp_path / "bin", dm.TINY_DDPM_UNET, dm.DDPM_SCHEDULER, safe=False)
    assert not list((folder / "unet").glob("*.safetensors"))
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float32)
    assert model.trained_for == "vp" and loads and all(w is True for w in loads)


def test_cached_hub_id_is_found_offline(folders, tmp_path, monkeypatch):
    """owner/name resolves to its snapshot in HF_HUB_CACHE (refs/main → snapshots/<hash>)."""
    repo = tmp_path / "hub" / "models--someone--tiny-ddpm"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folders["ddpm"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = du.DiffusersUNet.load("someone/tiny-ddpm", device=CPU, dtype=torch.float32)
    assert model.checkpoint.repo_id == "someone/tiny-ddpm" and model.trained_for == "vp"
    with pytest.raises(BenchError, match="nothing is downloaded"):
        du.DiffusersUNet.load("someone/not-cached", device=CPU, dtype=torch.float32)


# -- errors: one clear message each --------------------------------------------------------------
def test_missing_folder(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        du.DiffusersUNet.load(str(tmp_path / "nope"), device=CPU, dtype=torch.float32)


def test_folder_without_config(tmp_path):
    with pytest.raises(BenchError, match="not a diffusers model folder"):
        du.DiffusersUNet.load(str(tmp_path), device=CPU, dtype=torch.float32)


def test_unet_without_scheduler_config(folders, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(folders["ddpm"] / "unet", bare)
    with pytest.raises(BenchError, match="no scheduler config"):
        du.DiffusersUNet.load(str(bare), device=CPU, dtype=torch.float32)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"prediction_type": "flow"}, "prediction_type 'flow' is not understood"),
        ({"beta_schedule": "squaredcos_cap_v2"}, "has no VP SDE counterpart"),
        ({"trained_betas": [0.1, 0.2]}, "trained_betas"),
        ({"_class_name": "KarrasVeScheduler", "beta_schedule": None}, "is not understood"),
    ],
)
def test_schedules_the_plugin_does_not_understand(folders, tmp_path, changes, message):
    folder = copy_with_scheduler(folders["ddpm"], tmp_path / "m", **changes)
    with pytest.raises(BenchError, match=message):
        du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float32)


def test_missing_weight_is_an_error_not_a_random_layer(folders, tmp_path):
    """diffusers would initialise a missing tensor at random and carry on; the plugin refuses."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    shutil.copytree(folders["ddpm"], folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["conv_out.bias"]
    save_file(state, weights)
    with pytest.raises(BenchError, match="missing_keys: conv_out.bias"):
        du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float32)


def test_embedding_that_does_not_fit_the_schedule(folders, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(folders["ve"], folder)
    shutil.copy(folders["ddpm"] / "scheduler" / "scheduler_config.json", folder / "scheduler")
    with pytest.raises(BenchError, match="time_embedding_type 'fourier' does not fit"):
        du.DiffusersUNet.load(str(folder), device=CPU, dtype=torch.float32)


def test_missing_diffusers_package(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(BenchError, match=r"pip install 'sde-bench\[diffusers\]'"):
        du.DiffusersUNet.load(str(folders["ddpm"]), device=CPU, dtype=torch.float32)


def test_missing_diffusers_through_the_cli(folders, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from bench.cli import cli

    monkeypatch.setitem(sys.modules, "diffusers", None)
    result = CliRunner().invoke(
        cli, ["run", "--model", f"diffusers:{folders['ddpm']}", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "optional diffusers package" in lines[0]


FAST = ("--predictors", "euler", "--correctors", "none", "--steps", "2", "--samples", "2",
        "--batch-size", "2", "--metrics", "none", "--threads", "1", "--device", "cpu")  # fmt: skip


def _run_cli(*args):
    from click.testing import CliRunner

    from bench.cli import cli

    return CliRunner().invoke(cli, ["run", *map(str, args)])


@pytest.mark.parametrize("kind", ["exploit", "truncated"])
def test_bad_bin_weights_through_the_cli(tmp_path, kind):
    """A .bin that would run code is refused before it runs; a cut one is called corrupt."""
    folder = dm.write_pipeline(tmp_path / "bin", dm.TINY_DDPM_UNET, dm.DDPM_SCHEDULER, safe=False)
    (weights,) = (folder / "unet").glob("*.bin")
    marker = tmp_path / "pwned"
    if kind == "exploit":
        torch.save({"conv_out.bias": Exploit(marker)}, weights)
    else:
        weights.write_bytes(weights.read_bytes()[:1000])
    result = _run_cli("--model", f"diffusers:{folder}", "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    expected = "refused to load" if kind == "exploit" else "corrupt or truncated"
    assert len(lines) == 1 and expected in lines[0], result.output
    assert "weights_only" not in result.output  # never advise the unsafe load
    assert not marker.exists() and not (tmp_path / "r" / "rows.jsonl").exists()


def test_loading_sets_the_hub_offline_and_never_fetches(folders, monkeypatch):
    """The hub is switched offline before diffusers is used, and no HTTP request is made."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: calls.append(a))
    du.DiffusersUNet.load(str(folders["ddpm"]), device=CPU, dtype=torch.float32)
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1" and calls == []


def test_missing_diffusers_folder_through_the_cli(tmp_path):
    result = _run_cli("--model", f"diffusers:{tmp_path / 'nope'}", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1


# -- bench run ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_run_five_step_sweep(folders, tmp_path):
    from click.testing import CliRunner

    from bench.cli import cli

    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--model",
            f"diffusers:{folders['ddpm']}",
            "--sdes",
            "vp,ve",
            "--predictors",
            "euler",
            "--correctors",
            "none",
            "--steps",
            "5",
            "--samples",
            "4",
            "--batch-size",
            "4",
            "--metrics",
            "none",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {r["sde"]: r for r in map(json.loads, (out / "rows.jsonl").read_text().splitlines())}
    assert rows["vp"]["status"] == "ok" and rows["vp"]["nfe"] == 5
    assert rows["ve"]["status"] == "unsupported"
    assert "trained for the vp SDE" in rows["ve"]["reason"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"]["trained_for"] == "vp" and meta["model"]["label"].startswith("timestep")
    assert rows["vp"]["eps"] == 1e-3  # 1/N of the folder's 1000 timesteps


@pytest.mark.parametrize("given", [None, "0.2"])
def test_ve_folder_snr_is_the_default_snr(folders, tmp_path, given):
    """A ScoreSdeVe folder's snr (0.15 here, as in the public NCSN++ folders) is used when
    --snr is not given, and the rows record where it came from (``model_defaults``)."""
    folder = copy_with_scheduler(folders["ve"], tmp_path / "ve", snr=0.15)
    out = tmp_path / "run"
    args = ["--model", f"diffusers:{folder}", "--predictors", "reverse_diffusion"]
    args += ["--correctors", "langevin", "--steps", "2", "--samples", "2", "--batch-size", "2"]
    args += ["--metrics", "none", "--threads", "1", "--device", "cpu", "--out", out]
    result = _run_cli(*args, *(["--snr", given] if given else []))
    assert result.exit_code == 0, result.output
    (row,) = map(json.loads, (out / "rows.jsonl").read_text().splitlines())
    assert row["status"] == "ok" and row["nfe"] == 4
    if given:
        assert row["snr"] == 0.2 and row["model_defaults"] == ""
    else:
        assert row["snr"] == 0.15 and row["model_defaults"] == "snrs=0.15"
