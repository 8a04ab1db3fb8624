"""score_sde networks (NCSN++, DDPM++, DDPM): checkpoint reading, configs and the score.

The reference vectors in ``shared/checkpoints/`` were computed by the original implementation
from small seeded networks saved in its checkpoint format; our networks must reproduce them from
the checkpoints alone (float32 to 1e-4, float64 to 1e-9, per batch item, relative to the item's
largest value).
"""

from __future__ import annotations

import copy
import io
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bench_plugins.score_models.score_sde import (
    SdeParams,
    build_network,
    config_names,
    fir,
    load_config,
    load_network,
    read_checkpoint,
    score_function,
    score_sde_output,
)
from bench_plugins.score_models.score_sde.configs import config_from_dict

from bench.errors import BenchError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "checkpoints"
FOLDERS = [
    "ve_cifar10_ncsnpp_continuous",
    "vp_cifar10_ddpmpp_continuous",
    "subvp_cifar10_ddpmpp_continuous",
    "vp_cifar10_ddpm",
]
TOL32, TOL64 = 1e-4, 1e-9

needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"reference vectors not found at {SHARED}"
)


def per_item_error(ours: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """err_i = max|ours_i - ref_i| / max|ref_i| for each batch item."""
    a, b = ours.detach().flatten(1).double(), ref.flatten(1).double()
    return ((a - b).abs().amax(1) / b.abs().amax(1)).tolist()


class Case:
    """One shared folder: its config, checkpoint, vectors and our outputs in both dtypes."""

    def __init__(self, name: str) -> None:
        from safetensors.torch import load_file

        self.folder = SHARED / name
        self.config = load_config(self.folder / "config.json")
        self.net = load_network(self.folder / "checkpoint.pth", self.config)
        self.vec = load_file(str(self.folder / "vectors.safetensors"))
        p = SdeParams.from_config(self.config)
        with torch.no_grad():
            self.out32 = score_sde_output(self.net, self.vec["x"], self.vec["t"], p)
            net64 = copy.deepcopy(self.net).double()
            x64, t64 = self.vec["x"].double(), self.vec["t"].double()
            self.out64 = score_sde_output(net64, x64, t64, p)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny convolutions: one intra-op thread is fastest, and steady on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cases():
    if not SHARED.is_dir():
        pytest.skip(f"reference vectors not found at {SHARED}")
    torch.manual_seed(0)
    return {name: Case(name) for name in FOLDERS}


# --- reproduction of the reference vectors -------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("name", FOLDERS)
def test_float32_reproduces_reference(cases, name):
    case = cases[name]
    for ours, key in ((case.out32.net_out, "net_out"), (case.out32.score, "score")):
        assert ours.dtype == torch.float32
        errors = per_item_error(ours, case.vec[key])
        assert max(errors) <= TOL32, (key, errors)
    assert torch.equal(case.out32.labels, case.vec["net_labels"])


@needs_shared
@pytest.mark.parametrize("name", FOLDERS)
def test_float64_reproduces_reference(cases, name):
    case = cases[name]
    for ours, key in ((case.out64.net_out, "net_out64"), (case.out64.score, "score64")):
        assert ours.dtype == torch.float64
        errors = per_item_error(ours, case.vec[key])
        assert max(errors) <= TOL64, (key, errors)
    assert torch.equal(case.out64.labels, case.vec["net_labels64"])


@needs_shared
@pytest.mark.parametrize("name", FOLDERS)
def test_raw_weights_are_not_the_evaluated_ones(cases, name):
    """Negative control: the EMA-loaded score must differ from the raw-'model' score."""
    case = cases[name]
    gaps = per_item_error(case.vec["score_nonema"], case.out32.score)
    assert min(gaps) > 0.5, gaps


@needs_shared
def test_use_ema_false_gives_the_raw_weights(cases):
    case = cases["vp_cifar10_ddpmpp_continuous"]
    net = load_network(case.folder / "checkpoint.pth", case.config, use_ema=False)
    with torch.no_grad():
        score = score_function(net, case.config)(case.vec["x"], case.vec["t"])
    assert max(per_item_error(score, case.vec["score_nonema"])) <= TOL32


@needs_shared
def test_score_function_and_views(cases):
    for case in cases.values():
        with torch.no_grad():
            score = score_function(case.net, case.config)(case.vec["x"], case.vec["t"])
        assert torch.equal(score, case.out32.score)
        if case.config.sde != "vesde":  # the noise view of VP/sub-VP is the raw output
            assert torch.equal(case.out32.eps, case.out32.net_out)
        expected_eps = -case.out32.score * case.out32.std[:, None, None, None]
        assert torch.allclose(case.out32.eps, expected_eps, rtol=1e-5, atol=1e-6)


@needs_shared
def test_ema_order_and_fourier_weights(cases):
    import json

    case = cases["ve_cifar10_ncsnpp_continuous"]
    structure = json.loads((case.folder / "structure.json").read_text())
    ours = [n for n, p in case.net.named_parameters() if p.requires_grad]
    ref = [entry[1].removeprefix("module.") for entry in structure["ema_shadow_params"]]
    assert ours == ref
    ckpt = read_checkpoint(case.folder / "checkpoint.pth")
    assert torch.equal(case.net.all_modules[0].W, ckpt["model"]["module.all_modules.0.W"])
    trainable = [p for p in case.net.parameters() if p.requires_grad]
    assert all(torch.equal(p, s) for p, s in zip(trainable, ckpt["ema"]["shadow_params"]))


# --- refusals ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vp_checkpoint(cases):
    case = cases["vp_cifar10_ddpmpp_continuous"]
    return case.folder / "checkpoint.pth", case.config


def test_missing_file(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


@needs_shared
def test_truncated_copy_is_refused(tmp_path, vp_checkpoint):
    path, _ = vp_checkpoint
    damaged = tmp_path / "truncated.pth"
    damaged.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BenchError, match="corrupt or truncated") as info:
        read_checkpoint(damaged)
    assert "\n" not in str(info.value)


def test_garbage_and_wrong_layouts_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(BenchError) as info:
        read_checkpoint(garbage)
    assert "\n" not in str(info.value)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(BenchError, match="got list"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "no_ema.pth")
    with pytest.raises(BenchError, match="no 'ema'"):
        read_checkpoint(tmp_path / "no_ema.pth")


class _RunsCode:
    """Unpickling this would run a shell command creating ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": _RunsCode(marker)}, "ema": {"shadow_params": []}}, path)
    with pytest.raises(BenchError, match="refused.*nothing in it was run") as info:
        read_checkpoint(path)
    assert "system" in str(info.value) and "weights_only" not in str(info.value)
    assert not marker.exists()


@needs_shared
def test_missing_and_reshaped_tensors_are_named(tmp_path, vp_checkpoint):
    path, config = vp_checkpoint
    ckpt = read_checkpoint(path)
    removed = "module.all_modules.3.Conv_0.weight"
    reshaped = "module.all_modules.5.Dense_0.weight"
    ckpt["model"] = dict(ckpt["model"])
    del ckpt["model"][removed]
    ckpt["model"][reshaped] = ckpt["model"][reshaped].reshape(-1)
    torch.save(ckpt, tmp_path / "misfit.pth")
    with pytest.raises(BenchError) as info:
        load_network(tmp_path / "misfit.pth", config)
    message = str(info.value)
    assert "\n" not in message
    assert "missing: all_modules.3.Conv_0.weight" in message
    assert "wrong shape: all_modules.5.Dense_0.weight [512] (expected [16,32])" in message


@needs_shared
def test_other_config_and_ema_count_mismatch(tmp_path, vp_checkpoint):
    path, config = vp_checkpoint
    with pytest.raises(BenchError, match=r"does not fit config.*\(\d+ in all\)"):
        load_network(path, load_config("vp/ddpm/cifar10"))
    ckpt = read_checkpoint(path)
    ckpt["ema"]["shadow_params"] = ckpt["ema"]["shadow_params"][:-1]
    with pytest.raises(BenchError, match="211 shadow parameters, the network 212"):
        load_network(path, config, checkpoint=ckpt)


def test_numpy1_scalar_spelling_loads_and_only_with_the_allowlist(tmp_path):
    """Public checkpoints pickle the float64 lr as ``numpy.core.multiarray.scalar`` (numpy 1)."""
    state = {"model": {"w": torch.ones(2)}, "ema": {"shadow_params": [torch.ones(2)]}}
    state["optimizer"] = {"param_groups": [{"lr": np.float64(2e-4)}]}
    numpy2 = tmp_path / "numpy2.pth"
    torch.save(state, numpy2)
    numpy1 = tmp_path / "numpy1.pth"
    with zipfile.ZipFile(numpy2) as src, zipfile.ZipFile(numpy1, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item.endswith("data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.", b"numpy.core.")
            dst.writestr(item, data)
    for path in (numpy2, numpy1):
        with pytest.raises(Exception, match="Weights only load failed"):
            torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
        lr = read_checkpoint(path)["optimizer"]["param_groups"][0]["lr"]
        assert isinstance(lr, np.float64) and lr == 2e-4


def test_reader_always_uses_weights_only(tmp_path, monkeypatch):
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    torch.save({"model": {}, "ema": {"shadow_params": []}}, tmp_path / "ok.pth")
    read_checkpoint(tmp_path / "ok.pth")
    assert seen == [True]


# --- configs -------------------------------------------------------------------------------------


def test_shipped_configs_have_the_paper_values():
    required = {
        "ve/cifar10_ncsnpp_continuous", "ve/cifar10_ncsnpp_deep_continuous", "ve/cifar10_ncsnpp",
        "vp/cifar10_ddpmpp_continuous", "vp/cifar10_ddpmpp_deep_continuous", "vp/ddpm/cifar10",
        "subvp/cifar10_ddpmpp_continuous", "subvp/cifar10_ddpmpp_deep_continuous",
    }  # fmt: skip
    assert required <= set(config_names())
    ve = load_config("ve/cifar10_ncsnpp_continuous")
    assert (ve.data.image_size, ve.model.nf, ve.model.ch_mult) == (32, 128, (1, 2, 2, 2))
    assert (ve.model.num_res_blocks, ve.model.attn_resolutions) == (4, (16,))
    assert ve.model.fir and ve.model.scale_by_sigma and not ve.data.centered
    assert (ve.sde, ve.training.continuous, ve.sampling_eps) == ("vesde", True, 1e-5)
    assert load_config("ve/cifar10_ncsnpp_deep_continuous").model.num_res_blocks == 8
    assert load_config("subvp/cifar10_ddpmpp_deep_continuous").model.num_res_blocks == 8
    vp = load_config("vp/cifar10_ddpmpp_continuous")
    assert vp.model.embedding_type == "positional" and vp.data.centered and not vp.model.fir
    assert (vp.sde, vp.sampling_eps, vp.model.beta_max) == ("vpsde", 1e-3, 20)
    ddpm = load_config("vp/ddpm/cifar10")
    assert (ddpm.model.name, ddpm.model.num_res_blocks) == ("ddpm", 2)
    assert not ddpm.training.continuous
    assert load_config("subvp/cifar10_ddpmpp_continuous").continuous_labels
    assert not load_config("ve/cifar10_ncsnpp").continuous_labels


@needs_shared
@pytest.mark.parametrize("name", FOLDERS)
def test_shipped_config_equals_the_reference_dump(name):
    """Our JSON equals the reference's ``config.to_dict()`` except the documented overrides."""
    import json

    source = {
        "ve_cifar10_ncsnpp_continuous": "ve/cifar10_ncsnpp_continuous",
        "vp_cifar10_ddpmpp_continuous": "vp/cifar10_ddpmpp_continuous",
        "subvp_cifar10_ddpmpp_continuous": "subvp/cifar10_ddpmpp_continuous",
        "vp_cifar10_ddpm": "vp/ddpm/cifar10",
    }[name]
    meta = json.loads((SHARED / name / "meta.json").read_text())
    dumped = json.loads((SHARED / name / "config.json").read_text())
    dumped.pop("device")
    for key, original in meta["overrides (original value)"].items():
        section, field = key.split(".")
        dumped[section][field] = original
    assert load_config(source).raw == dumped


def test_bad_names_and_values_are_one_line_errors(tmp_path):
    with pytest.raises(BenchError, match=r"config 'vp/nope'; valid names: .*vp/ddpm/cifar10"):
        load_config("vp/nope")
    good = load_config("vp/ddpm/cifar10").raw
    for section, key, value, pattern in [
        ("model", "nf", "128", "model.nf must be an integer"),
        ("training", "sde", "vpSDE?", "unknown training.sde"),
        ("model", "name", "ncsnv2", "not supported; valid: ncsnpp, ddpm"),
        ("model", "nf", 48, "multiples of 32"),
    ]:
        bad = copy.deepcopy(good)
        bad[section][key] = value
        with pytest.raises(BenchError, match=pattern):
            config_from_dict(bad, "bad")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(BenchError, match="unreadable"):
        load_config(tmp_path / "broken.json")


# --- building blocks -----------------------------------------------------------------------------


def test_fused_fir_upsample_conv_is_upsample_then_conv():
    """StyleGAN2's fused op equals FIR upsampling followed by a 'same' conv (away from borders)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 3, 3, 3, generator=gen, dtype=torch.float64)
    fused = fir.upsample_conv_2d(x, w, [1, 3, 3, 1])
    plain = F.conv2d(fir.upsample_2d(x, [1, 3, 3, 1]), w, padding=1)
    assert fused.shape == plain.shape == (2, 5, 16, 16)
    assert torch.allclose(fused[..., 2:-2, 2:-2], plain[..., 2:-2, 2:-2], atol=1e-12)
    assert fir.downsample_2d(torch.ones(1, 1, 8, 8), [1, 3, 3, 1])[..., 1:-1, 1:-1].eq(1).all()


def test_every_ncsnpp_option_builds_and_runs_in_float64():
    base = load_config("ve/cifar10_ncsnpp_continuous")
    small = replace(base.model, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
    for progressive, progressive_input, combine, resblock in [
        ("output_skip", "input_skip", "cat", "ddpm"),
        ("residual", "residual", "sum", "biggan"),
    ]:
        model = replace(
            small,
            progressive=progressive,
            progressive_input=progressive_input,
            progressive_combine=combine,
            resblock_type=resblock,
        )
        net = build_network(replace(base, model=model, data=replace(base.data, image_size=8)))
        net = net.double().eval()
        out = net(torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0.5, 20.0]).double())
        assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float64
        assert torch.isfinite(out).all()
