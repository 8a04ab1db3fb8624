"""The score_sde and edm score models: the shared checkpoints through the suite, and the edm SDE.

The vectors in ``shared/checkpoints/`` were computed by the original code (score_sde_pytorch's
``get_score_fn`` and EDM's preconditioned networks) from tiny seeded networks saved in the
original formats. Here they are reproduced through the suite's own path: the registered score
model, loaded as ``bench run`` loads it, under the SDE it declares, through the model's views
(the score for score_sde, the denoiser D for EDM), per batch item, relative to the item's
largest value: 1e-5 in float32 and 1e-10 in float64.

One allowance, documented where it is used: the reference's float32 ``score`` of the VP-family
models divides by a std computed in float32 (``1 − exp(2L(t))``, which cancels at small t), so
that vector itself is up to 2.8e-5 away from its own float64 ``score64``. The suite computes
every coefficient in float64 on the host, so its float32 score is closer to ``score64`` than the
reference's is; the float32 comparison allows for the reference's own rounding.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch

from bench.errors import BenchError, Unsupported
from tests.files import Exploit, fake_edm_persistence

SHARED = Path(__file__).resolve().parents[2] / "shared" / "checkpoints"
SCORE_SDE = (
    "ve_cifar10_ncsnpp_continuous",
    "vp_cifar10_ddpmpp_continuous",
    "subvp_cifar10_ddpmpp_continuous",
    "vp_cifar10_ddpm",
)
EDM = ("edm_vp_ddpmpp", "edm_ve_ncsnpp", "edm_edm_ddpmpp", "edm_edm_adm")
TRAINED_FOR = {
    "ve_cifar10_ncsnpp_continuous": ("ve", {"sigma_min": 0.01, "sigma_max": 50.0}),
    "vp_cifar10_ddpmpp_continuous": ("vp", {"beta_min": 0.1, "beta_max": 20.0}),
    "subvp_cifar10_ddpmpp_continuous": ("subvp", {"beta_min": 0.1, "beta_max": 20.0}),
    "vp_cifar10_ddpm": ("vp", {"beta_min": 0.1, "beta_max": 20.0}),
    "edm_vp_ddpmpp": ("vp", {"beta_min": 0.1, "beta_max": 20.0}),
    "edm_ve_ncsnpp": ("ve", {"sigma_min": 0.02, "sigma_max": 100.0}),
    "edm_edm_ddpmpp": ("edm", {"sigma_max": 80.0, "eps": 0.002}),
    "edm_edm_adm": ("edm", {"sigma_max": 80.0, "eps": 0.002}),
}
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
CPU = torch.device("cpu")

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared checkpoint vectors not found at {SHARED}"
)
pytestmark = pytest.mark.usefixtures("one_thread")


def per_item_error(ours: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """err_i = max|ours_i − ref_i| / max|ref_i| for each batch item."""
    a, b = ours.detach().flatten(1).double(), ref.flatten(1).double()
    return ((a - b).abs().amax(1) / b.abs().amax(1)).tolist()


def vectors(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(SHARED / name / "vectors.safetensors"))


def model_file(name: str) -> Path:
    return SHARED / name / ("network.pkl" if name.startswith("edm_") else "checkpoint.pth")


def load(registry, name: str, dtype: torch.dtype = torch.float32, **options):
    """The registered model for a shared folder, as ``bench run`` loads it."""
    kind = "edm" if name.startswith("edm_") else "score_sde"
    cls = registry.get("score-models", kind).obj
    if kind == "score_sde":
        options.setdefault("config", str(SHARED / name / "config.json"))
    return cls.load(str(model_file(name)), device=CPU, dtype=dtype, options=cls.Options(**options))


def own_sde(registry, model, N: int = 1000):
    """The SDE the model declares, with its hyperparameters (``sde_defaults``)."""
    entry = registry.get("sdes", model.trained_for)
    return entry.obj(N, entry.obj.Options(**model.sde_defaults[model.trained_for]))


def invoke(*args):
    from click.testing import CliRunner

    from bench.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def config_option(name: str) -> tuple[str, str]:
    return ("-o", f"score_sde.config={SHARED / name / 'config.json'}")


# -- score_sde: the vectors through the model's views ------------------------------------------
@needs_shared
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", SCORE_SDE)
def test_score_sde_reproduces_the_reference_score(registry, name, dtype):
    v = vectors(name)
    model = load(registry, name, dtype)
    sde = own_sde(registry, model)
    view = model.view(sde)
    x = v["x"].to(dtype)
    score = torch.cat([view.score(x[i : i + 1], float(v["t"][i])) for i in range(4)])
    assert view.calls == 4 and score.dtype == dtype
    if dtype == torch.float64:
        assert max(per_item_error(score, v["score64"])) <= TOL[dtype]
    else:  # allowance: the reference's own float32 rounding (module docstring)
        own = per_item_error(v["score"], v["score64"])
        for err, ref_err in zip(per_item_error(score, v["score"]), own):
            assert err <= TOL[dtype] + ref_err
        assert max(per_item_error(score, v["score64"])) <= 1.5e-5
    # The negative control: the raw training weights give another score.
    assert min(per_item_error(score, v["score_nonema"])) > 1e-2


@needs_shared
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", SCORE_SDE[1:3])
def test_score_sde_vp_native_output_is_the_predicted_noise(registry, name, dtype):
    """Continuous VP/sub-VP networks predict ε: native ``eps``, equal to the raw output."""
    v = vectors(name)
    model = load(registry, name, dtype)
    assert model.native == "eps"
    view = model.view(own_sde(registry, model))
    x = v["x"].to(dtype)
    eps = torch.cat([view.eps(x[i : i + 1], float(v["t"][i])) for i in range(4)])
    ref = v["net_out64" if dtype == torch.float64 else "net_out"]
    assert max(per_item_error(eps, ref)) <= TOL[dtype]


@needs_shared
def test_score_sde_natives_labels_and_description(registry):
    ve, ddpm = load(registry, SCORE_SDE[0]), load(registry, SCORE_SDE[3])
    assert (ve.native, ddpm.native) == ("score", "score")  # DDPM: the table's std, not the SDE's
    v = vectors(SCORE_SDE[3])
    assert ddpm.conditioning(float(v["t"][1]))[0] == pytest.approx(float(v["net_labels64"][1]))
    info = ve.describe()
    assert info["label"] == "sigma(t)" and info["ema"] is True and info["centered"] is False
    assert info["config"].endswith("config.json") and info["step"] == 1
    assert info["parameters"] == 82363 and len(info["weights_sha256"]) == 64
    assert ve.default_grid == {"snrs": (0.16,)} and ddpm.default_grid == {}
    assert ddpm.describe()["label"] == "t*999"
    x = torch.tensor([-1.0, 0.0, 1.0])
    assert ve.to_data(x).tolist() == [-1.0, 0.0, 1.0]  # VE data are uncentred, in [0, 1]
    assert ddpm.to_data(x).tolist() == [0.0, 0.5, 1.0]
    # The hash is of the weights loaded (EMA), whatever the dtype they run in.
    assert load(registry, SCORE_SDE[0], torch.float64).weights_sha256 == info["weights_sha256"]
    raw = load(registry, SCORE_SDE[0], ema=False)
    assert raw.weights_sha256 != info["weights_sha256"] and raw.describe()["ema"] is False


@needs_shared
def test_score_sde_raw_weights_reproduce_the_negative_control(registry):
    name = SCORE_SDE[1]
    v = vectors(name)
    model = load(registry, name, ema=False)
    view = model.view(own_sde(registry, model))
    score = torch.cat([view.score(v["x"][i : i + 1], float(v["t"][i])) for i in range(3)])
    assert max(per_item_error(score, v["score_nonema"][:3])) <= TOL[torch.float32]


@needs_shared
def test_score_sde_refuses_other_sdes_and_hyperparameters(registry, make_sde):
    model = load(registry, SCORE_SDE[0])
    with pytest.raises(Unsupported, match="trained for the ve SDE, not vp"):
        model.check_sde(make_sde("vp"))
    with pytest.raises(Unsupported, match=r"-o ve.sigma_min=0.01 -o ve.sigma_max=50"):
        model.native_fn(make_sde("ve", sigma_max=100.0))


def write_random_checkpoint(path: Path, config_name: str, **overrides) -> Path:
    """A score_sde checkpoint (``module.`` keys, EMA shadows) of a shrunk shipped config, with
    random weights, and its config.json beside it."""
    from bench_plugins.score_models.score_sde import build_network, config_from_dict, load_config

    raw = json.loads(json.dumps(load_config(config_name).raw))  # a deep copy
    raw["data"]["image_size"] = 8
    raw["model"] |= {"nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4]}
    raw["model"] |= overrides
    torch.manual_seed(0)
    net = build_network(config_from_dict(raw))
    trainable = [p for p in net.parameters() if p.requires_grad]
    shadows = [p.detach() + 0.1 * torch.randn_like(p) for p in trainable]
    state = {"module." + k: v for k, v in net.state_dict().items()}
    ema = {"decay": 0.999, "num_updates": 0, "shadow_params": shadows}
    torch.save({"model": state, "ema": ema, "optimizer": {}, "step": 0}, path)
    (path.parent / "config.json").write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    "config_name, overrides",
    [
        ("ve/cifar10_ncsnpp", {}),
        ("ve/cifar10_ddpm", {"nf": 32, "ch_mult": [2, 2]}),  # DDPM: GroupNorm(32)
        ("vp/cifar10_ddpmpp", {}),
    ],
)
def test_score_sde_discrete_configs_follow_the_reference_conventions(
    registry, tmp_path, config_name, overrides
):
    """Discrete VE: index round((1 − t)(N − 1)), output the score; discrete VP: t·(N − 1),
    −ε̂/sqrt(1 − ᾱ_k). The model (host float64 labels) equals ``score_sde_output`` (the
    reference's tensor arithmetic) in float64."""
    from bench_plugins.score_models.score_sde import SdeParams, score_sde_output

    path = write_random_checkpoint(tmp_path / "checkpoint_1.pth", config_name, **overrides)
    cls = registry.get("score-models", "score_sde").obj
    options = cls.Options(config=str(path.parent / "config.json"))
    model = cls.load(str(path), device=CPU, dtype=torch.float64, options=options)
    assert model.native == "score" and not model.params.continuous
    view = model.view(own_sde(registry, model))
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for t in (1.0, 0.7, 0.3, 0.005):
        ref = score_sde_output(model.net, x, torch.tensor([t], dtype=torch.float64), model.params)
        torch.testing.assert_close(view.score(x, t), ref.score, rtol=1e-12, atol=0)
    assert isinstance(model.params, SdeParams)


def test_score_sde_needs_a_config(registry, tmp_path):
    cls = registry.get("score-models", "score_sde").obj
    with pytest.raises(BenchError, match="needs the config .* ve/cifar10_ncsnpp_continuous"):
        cls.load(str(tmp_path / "checkpoint_8.pth"), device=CPU, dtype=torch.float32)
    with pytest.raises(BenchError, match="needs a checkpoint"):
        cls.load(None, device=CPU, dtype=torch.float32)


# -- EDM: the denoiser D through the model's views ---------------------------------------------
def edm_outputs(registry, name: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, F) at the shared (x, σ): the denoise view at t = σ⁻¹ on x·a(t); F is the UNet's
    raw output, caught with a hook. Class-conditional nets get each item's own class."""
    v = vectors(name)
    labels = v["class_labels"].argmax(1).tolist() if "class_labels" in v else [None] * 4
    D, F = [], []
    for i in range(4):
        label = "none" if labels[i] is None else str(labels[i])
        model = load(registry, name, dtype, class_label=label)
        sde = own_sde(registry, model)
        t = sde.t_of_log_snr(-math.log(float(v["sigma"][i])))
        a, _ = sde.marginal_coef(t)
        hook = model.net.model.register_forward_hook(lambda m, args, out: F.append(out))
        try:
            D.append(model.view(sde).denoise(v["x"][i : i + 1].to(dtype) * a, t))
        finally:
            hook.remove()
    return torch.cat(D), torch.cat(F)


@needs_shared
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", EDM)
def test_edm_reproduces_the_reference_denoiser(registry, name, dtype):
    """D and the UNet's F (which, unlike D ≈ x at small σ, is sensitive everywhere)."""
    v = vectors(name)
    D, F = edm_outputs(registry, name, dtype)
    suffix = "64" if dtype == torch.float64 else ""
    assert D.dtype == dtype
    assert max(per_item_error(D, v["D" + suffix])) <= TOL[dtype]
    assert max(per_item_error(F, v["unet_F" + suffix])) <= TOL[dtype]


@needs_shared
def test_edm_class_labels_none_and_cycle(registry):
    """``class_label=none`` is EDMPrecond's ``class_labels=None`` (zero labels); ``cycle``
    gives row i class i mod label_dim."""
    v = vectors("edm_edm_adm")
    model = load(registry, "edm_edm_adm")
    sde = own_sde(registry, model)
    t = float(v["sigma"][1])
    got = model.view(sde).denoise(v["x"][1:2], t)
    assert max(per_item_error(got, v["D_nolabels"][1:2])) <= TOL[torch.float32]
    cycle = load(registry, "edm_edm_adm", class_label="cycle")
    assert cycle.class_labels(12, CPU).argmax(1).tolist() == [*range(10), 0, 1]
    assert cycle.describe()["class_label"] == "cycle"
    with pytest.raises(BenchError, match="not one of the network's 10 classes"):
        load(registry, "edm_edm_adm", class_label="10")
    with pytest.raises(BenchError, match="unconditional"):
        load(registry, "edm_edm_ddpmpp", class_label="cycle")


@needs_shared
def test_edm_maps_each_preconditioner_onto_its_sde(registry, make_sde):
    for name in EDM:
        model = load(registry, name)
        sde, options = TRAINED_FOR[name]
        assert model.native == "x0" and model.trained_for == sde
        assert model.sde_defaults == {sde: pytest.approx(options)}
        assert model.data_shape == (3, 16, 16) and model.dataset is None
        assert model.to_data(torch.tensor([-1.0, 1.0])).tolist() == [0.0, 1.0]
    vp = load(registry, "edm_vp_ddpmpp")
    with pytest.raises(Unsupported, match="-o vp.beta_min=0.1 -o vp.beta_max=20"):
        vp.check_sde(make_sde("vp", beta_max=10.0))
    edm = load(registry, "edm_edm_ddpmpp")
    edm.check_sde(make_sde("edm", sigma_max=1000.0, eps=1e-4))  # EDMPrecond: σ ∈ [0, ∞)
    with pytest.raises(Unsupported, match="trained for the edm SDE, not ve"):
        edm.check_sde(make_sde("ve"))
    ve = load(registry, "edm_ve_ncsnpp")
    info = ve.describe()
    assert (info["precond"], info["unet"], info["sigma_min"]) == ("VEPrecond", "SongUNet", 0.02)
    assert len(info["weights_sha256"]) == 64 and info["class_label"] is None


def test_edm_vp_noise_level_is_the_vp_sde_std_over_a(make_sde):
    """EDM's VP σ(t) = sqrt(e^{½β_d t² + β_min t} − 1) is the suite's VP std(t)/a(t) with
    β_min = 0.1, β_max = β_min + β_d = 20, so D_suite(x, t) = D_edm(x/a; σ(t)) at the same t."""
    from bench_plugins.score_models.edm import VPPrecond

    precond = VPPrecond(img_resolution=8, img_channels=3, beta_d=19.9, beta_min=0.1)
    sde = make_sde("vp", beta_min=0.1, beta_max=20.0)
    for t in (1e-5, 1e-3, 0.1, 0.5, 1.0):
        a, std = sde.marginal_coef(t)
        edm_sigma = float(precond.sigma(torch.tensor(t, dtype=torch.float64)))
        assert std / a == pytest.approx(edm_sigma, rel=1e-12)
        inverse = float(precond.sigma_inv(torch.tensor(edm_sigma, dtype=torch.float64)))
        assert sde.t_of_log_snr(-math.log(edm_sigma)) == pytest.approx(inverse, rel=1e-9)


# -- the edm SDE ---------------------------------------------------------------------------------
def test_edm_sde_marginals_and_coefficients(make_sde):
    """σ(t) = t, a = 1, f = 0, g² = d[t²]/dt = 2t; prior N(0, T²I) with T = σ_max."""
    sde = make_sde("edm", 10)
    assert (sde.T, sde.eps) == (80.0, 0.002)
    for t in (0.002, 0.5, 3.0, 80.0):
        assert sde.marginal_coef(t) == (1.0, t)
        x = torch.randn(2, 3)
        drift, g = sde.sde(x, t)
        assert torch.equal(drift, torch.zeros_like(x))
        h = 1e-6 * t
        dvar = ((t + h) ** 2 - (t - h) ** 2) / (2 * h)
        assert g**2 == pytest.approx(dvar, rel=1e-9)
    z = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    assert torch.equal(sde.prior_sampling(z), 80.0 * z)
    expected = -6 * math.log(2 * math.pi * 80.0**2) - z.flatten(1).pow(2).sum(1) / (2 * 80.0**2)
    torch.testing.assert_close(sde.prior_logp(z), expected)
    mean, std = sde.marginal_prob(z, 2.5)
    assert torch.equal(mean, z) and std == 2.5


def test_edm_sde_log_snr_and_closed_form_inverse(make_sde):
    sde = make_sde("edm", 10, sigma_max=100.0)
    assert sde.T == 100.0 and sde.log_snr(0.0) == math.inf
    for t in (0.002, 0.0317, 1.0, 7.5, 100.0):
        assert sde.log_snr(t) == pytest.approx(-math.log(t), rel=1e-15)
        assert sde.t_of_log_snr(sde.log_snr(t)) == pytest.approx(t, rel=1e-14)
    for lam in (-4.0, 0.0, 6.0):  # the closed form agrees with the base class's bisection
        assert sde.t_of_log_snr(lam) == pytest.approx(
            type(sde).__mro__[1].t_of_log_snr(sde, lam), rel=1e-12
        )


def test_edm_sde_steps_span_their_interval(make_sde):
    """No paper grid: Euler–Maruyama over t − t_next (T/N without t_next); no ancestral chain."""
    sde = make_sde("edm", 8)
    x = torch.ones(1, 2)
    assert sde.step_dt(10.0, 4.0) == -6.0 and sde.step_dt(10.0) == -10.0
    f, G = sde.discretize(x, 10.0, 4.0)
    assert torch.equal(f, torch.zeros_like(x)) and G == pytest.approx(math.sqrt(2 * 10.0 * 6.0))
    sde.discrete = True  # the uniform schedule sets it; the steps still span their interval
    assert sde.discretize(x, 10.0, 4.0)[1] == G
    assert sde.discretize(x, 10.0)[1] == pytest.approx(math.sqrt(2 * 10.0 * 10.0))
    with pytest.raises(Unsupported, match="ancestral sampling is not defined for the edm SDE"):
        sde.ancestral_coefficients(10.0, 4.0)
    assert sde.describe() == {"eps": 0.002, "sigma_max": 80.0, "N": 8}


@pytest.mark.parametrize(
    "options, message",
    [({"sigma_max": -1.0}, "sigma_max must be a positive"), ({"eps": 90.0}, "eps .* must lie")],
)
def test_edm_sde_options_are_checked(registry, options, message):
    with pytest.raises(ValueError, match=message):
        registry.get("sdes", "edm").obj.Options(**options)


def test_three_components_named_edm_share_the_option_syntax(registry):
    """The schedule, the SDE and the model are all ``edm``: a key only one of them has picks it,
    a key two share needs the kind, and the message says so."""
    from bench.run.setup import OptionSet

    parsed = OptionSet.parse(
        ["edm.rho=5", "edm.eps=0.01", "edm.class_label=cycle", "sde.edm.sigma_max=100"], registry
    )
    assert parsed.values == {
        ("schedules", "edm"): {"rho": 5.0},
        ("sdes", "edm"): {"eps": 0.01, "sigma_max": 100.0},
        ("score-models", "edm"): {"class_label": "cycle"},
    }
    with pytest.raises(BenchError, match="ambiguous component 'edm'.*KIND.edm.KEY=VALUE"):
        OptionSet.parse(["edm.sigma_max=100"], registry)


def test_edm_schedule_on_the_edm_sde_is_karras_sigmas(registry, make_sde):
    """t_i = σ_i of Karras et al. (2022, Eq. 5) with σ ∈ [0.002, 80], ρ = 7."""
    sde = make_sde("edm", 18)
    schedule = registry.get("schedules", "edm").obj()
    grid = schedule.grid(sde, 18)
    rho, n = 7.0, 18
    sigmas = [
        (80 ** (1 / rho) + i / (n - 1) * (0.002 ** (1 / rho) - 80 ** (1 / rho))) ** rho
        for i in range(n)
    ]
    assert grid.t[:-1] == pytest.approx(sigmas, rel=1e-12) and grid.t[-1] == 0.0
    assert grid.sigma == grid.t and set(grid.alpha) == {1.0}


@needs_shared
def test_probability_flow_on_the_edm_sde_is_karras_ode(registry):
    """dx/dt = f − ½g²·s = (x − D(x; t))/t (Karras et al. 2022, Eq. 1 with σ(t) = t)."""
    model = load(registry, "edm_edm_ddpmpp", torch.float64)
    sde = own_sde(registry, model)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = 1.7
    view = model.view(sde)
    drift, g = sde.reverse(view.score, probability_flow=True).sde(x, t)
    torch.testing.assert_close(drift, (x - view.denoise(x, t)) / t, rtol=1e-12, atol=1e-12)
    assert g == 0.0


# -- bench run ------------------------------------------------------------------------------------
RUN = ("--samples", "4", "--batch-size", "4", "--steps", "3", "--metrics", "none")
RUN += ("--threads", "1", "--device", "cpu")


@needs_shared
@pytest.mark.parametrize("name", SCORE_SDE + EDM)
def test_bench_run_uses_the_checkpoints_own_sde(name, tmp_path):
    """No --sdes: every cell runs on the SDE the checkpoint was trained for, with its σ/β."""
    kind = "edm" if name.startswith("edm_") else "score_sde"
    extra = () if kind == "edm" else config_option(name)
    out = tmp_path / "run"
    result = invoke("run", "--model", f"{kind}:{model_file(name)}", *extra, *RUN, "--out", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    sde, options = TRAINED_FOR[name]
    assert rows and {r["sde"] for r in rows} == {sde}
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["nfe"] > 0 for r in ok)
    for key, value in options.items():
        assert f"{key}={value}" in ok[0]["sde_options"]
    described = json.loads((out / "run.json").read_text())["model"]
    assert described["trained_for"] == sde and len(described["weights_sha256"]) == 64


@needs_shared
def test_bench_run_edm_model_with_modern_samplers_in_bf16(tmp_path):
    name = "edm_edm_ddpmpp"
    out = tmp_path / "run"
    result = invoke(
        "run", "--model", f"edm:{model_file(name)}", "--samplers", "heun,dpmpp_2m",
        "--schedules", "edm", *RUN, "--dtype", "bf16", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert {(r["sampler"], r["status"], r["autocast"]) for r in rows} == {
        ("heun", "ok", "bfloat16"),
        ("dpmpp_2m", "ok", "bfloat16"),
    }


@needs_shared
def test_compile_wraps_the_network(registry):
    for name in ("ve_cifar10_ncsnpp_continuous", "edm_vp_ddpmpp"):
        model = load(registry, name)
        model.compile("default")
        assert type(model.net).__name__ == "OptimizedModule"


def test_bench_list_shows_what_each_needs():
    result = invoke("list", "score-models")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "--model score_sde:PATH -o score_sde.config=NAME" in lines["score_sde"]
    assert "--model edm:PATH.pkl" in lines["edm"]
    sdes = invoke("list", "sdes").output
    assert any(line.startswith("edm ") for line in sdes.splitlines())


# -- refusals: exit 2, one line, nothing written ---------------------------------------------------
def refused(tmp_path, *args) -> str:
    """Run ``bench run`` expecting a one-line refusal; returns the line."""
    out = tmp_path / "refused-run"
    result = invoke("run", *args, *RUN, "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert not (out / "run.json").exists() and not (out / "rows.jsonl").exists()
    assert "weights_only=False" not in lines[0]  # never advise the unsafe load
    return lines[0]


@needs_shared
def test_refused_config_that_does_not_fit(tmp_path):
    """The full-size shipped config against the tiny checkpoint: the tensors are named."""
    path = model_file("vp_cifar10_ddpmpp_continuous")
    line = refused(
        tmp_path, "--model", f"score_sde:{path}", "-o",
        "model.score_sde.config=vp/cifar10_ddpmpp_continuous",
    )  # fmt: skip
    assert "does not fit config 'vp/cifar10_ddpmpp_continuous'" in line
    assert "wrong shape: all_modules" in line and "missing: " in line


@needs_shared
def test_refused_without_config_points_at_the_config_beside(tmp_path):
    path = model_file("ve_cifar10_ncsnpp_continuous")
    line = refused(tmp_path, "--model", f"score_sde:{path}")
    assert "-o score_sde.config=NAME" in line and str(path.parent / "config.json") in line
    line = refused(tmp_path, "--model", f"score_sde:{path}", "-o", "score_sde.config=ve/nope")
    assert "unknown score_sde config 've/nope'" in line


@needs_shared
@pytest.mark.parametrize("kind", ["score_sde", "edm"])
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_refused_missing_or_truncated_file(tmp_path, kind, damage):
    name = "vp_cifar10_ddpmpp_continuous" if kind == "score_sde" else "edm_vp_ddpmpp"
    path = tmp_path / model_file(name).name
    if damage == "truncated":
        path.write_bytes(model_file(name).read_bytes()[:5000])
    extra = config_option(name) if kind == "score_sde" else ()
    line = refused(tmp_path, "--model", f"{kind}:{path}", *extra)
    expected = "does not exist" if damage == "missing" else "truncated"
    assert str(path) in line and expected in line.lower()


@needs_shared
def test_refused_malicious_score_sde_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint_1.pth"
    torch.save({"model": {"w": Exploit(marker)}, "ema": {}, "step": 0}, path)
    line = refused(tmp_path, "--model", f"score_sde:{path}", *config_option(SCORE_SDE[1]))
    assert "refused to load" in line and "nothing in it was run" in line
    assert not marker.exists()


def test_refused_malicious_edm_pickles(tmp_path):
    """os.system through __reduce__, and code hidden in a tensor blob: refused, nothing runs."""
    marker = tmp_path / "pwned"
    direct = tmp_path / "direct.pkl"
    direct.write_bytes(pickle.dumps({"ema": Exploit(marker)}))
    line = refused(tmp_path, "--model", f"edm:{direct}")
    assert "refused to load" in line and ("os.system" in line or "posix.system" in line)

    class InBlob:
        def __reduce__(self):
            blob = pickle.dumps(Exploit(marker), protocol=2)
            return (torch.storage._load_from_bytes, (blob,))

    blob = tmp_path / "blob.pkl"
    blob.write_bytes(pickle.dumps({"ema": InBlob()}))
    assert "refused" in refused(tmp_path, "--model", f"edm:{blob}")
    assert not marker.exists()


def test_refused_embedded_source_is_never_executed(tmp_path, monkeypatch):
    """An EDM-style persistence record whose module source would create a file: the CLI
    refuses the file in one line and the source never runs."""
    import sys

    marker = tmp_path / "executed"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass EDMPrecond: pass\n"

    reconstruct = fake_edm_persistence(monkeypatch)

    class Persistent:
        def __init__(self, class_name: str, modules: dict) -> None:
            state = {"_parameters": {}, "_buffers": {}, "_modules": modules}
            self.meta = dict(type="class", version=6, module_src=src, class_name=class_name)
            self.meta["state"] = state | {"_init_kwargs": {}}

        def __reduce__(self):
            return (reconstruct, (self.meta,))

    path = tmp_path / "network.pkl"
    net = Persistent("EDMPrecond", {"model": Persistent("SongUNet", {})})
    path.write_bytes(pickle.dumps({"ema": net}))
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")
    monkeypatch.delitem(sys.modules, "torch_utils")
    line = refused(tmp_path, "--model", f"edm:{path}")
    assert str(path) in line and "SongUNet" in line  # no constructor arguments to build from
    assert not marker.exists()


@needs_shared
def test_refused_class_label_on_an_unconditional_network(tmp_path):
    path = model_file("edm_edm_ddpmpp")
    line = refused(tmp_path, "--model", f"edm:{path}", "-o", "model.edm.class_label=3")
    assert "unconditional" in line
    line = refused(tmp_path, "--model", f"edm:{path}", "-o", "edm.class_label=some")
    assert "class_label must be none, cycle or a class index" in line
