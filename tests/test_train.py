"""bench train: a few CPU iterations give a loadable model; seeded runs and resumes are exact."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bench.cli import cli

TINY = [
    "--steps",
    "4",
    "--batch-size",
    "16",
    "--warmup",
    "2",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--no-progress",
]


def train(out, *args: str):
    result = CliRunner().invoke(cli, ["train", "--out", str(out), *TINY, *args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def vp_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "vp"
    train(out, "--sde", "vp", "--checkpoint-every", "2")
    return out


def test_smoke_run_writes_a_loadable_model(vp_folder, registry):
    meta = json.loads((vp_folder / "metadata.json").read_text())
    assert meta["steps"] == 4 and meta["seed"] == 0 and meta["ema_rate"] == 0.999
    assert meta["sde"] == {"name": "vp", "options": {"beta_min": 0.1, "beta_max": 20.0}}
    assert meta["data"]["content_hash"] and meta["data"]["split"] == "train"
    assert meta["command"].startswith("bench train --dataset digits --sde vp -o vp.beta_min=0.1 ")
    assert "--steps 4 --batch-size 16 " in meta["command"] and "--threads 1" in meta["command"]
    assert torch.isfinite(torch.tensor(meta["final_loss"]))
    model = registry.get("score-models", "score").obj.load(
        str(vp_folder), device=torch.device("cpu"), dtype=torch.float32
    )
    sde = registry.get("sdes", "vp").obj(10)
    x = torch.randn(5, 1, 8, 8)
    s = model.score_fn(sde)(x, 0.5)
    assert s.shape == x.shape and bool(torch.isfinite(s).all())
    assert model.trained_for == "vp" and model.data_shape == (1, 8, 8)


def weights(folder, name="model.safetensors"):
    return load_file(str(folder / name))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights_and_resume_is_exact(vp_folder, tmp_path):
    again = tmp_path / "again"
    train(again, "--sde", "vp", "--checkpoint-every", "2")
    assert_same(weights(vp_folder), weights(again))

    resumed = tmp_path / "resumed"
    train(resumed, "--sde", "vp", "--checkpoint-every", "2", "--steps", "2")
    train(resumed, "--sde", "vp", "--checkpoint-every", "2", "--resume")
    assert_same(weights(vp_folder), weights(resumed))
    for name in ("model", "ema", "optimizer"):
        assert_same(
            weights(vp_folder / "checkpoint", f"{name}.safetensors"),
            weights(resumed / "checkpoint", f"{name}.safetensors"),
        )


def test_other_seed_other_weights(vp_folder, tmp_path):
    train(tmp_path / "s1", "--sde", "vp", "--seed", "1")
    a, b = weights(vp_folder), weights(tmp_path / "s1")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_ve_default_sigma_max_comes_from_the_data(tmp_path):
    result = train(tmp_path / "ve", "--sde", "ve", "--steps", "1")
    meta = json.loads((tmp_path / "ve" / "metadata.json").read_text())
    assert meta["sde"]["options"] == {"sigma_min": 0.01, "sigma_max": 5.0}
    assert meta["architecture"]["center_input"] is True
    assert "sigma_max = 5" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--resume"], "holds no checkpoint"),
        (["-o", "vp.beta_max=20"], "takes ve.KEY=VALUE only"),
        (["-o", "ve.eps=0.1"], "eps is a sampling setting"),
        (["--sde", "nope"], "unknown SDE"),
    ],
)
def test_train_errors_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "x"), *TINY, *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_existing_checkpoint_needs_resume(vp_folder):
    result = CliRunner().invoke(cli, ["train", "--out", str(vp_folder), *TINY, "--sde", "vp"])
    assert result.exit_code == 2 and "--resume" in result.output


def test_resume_with_other_settings_is_refused(vp_folder):
    result = CliRunner().invoke(
        cli, ["train", "--out", str(vp_folder), *TINY, "--sde", "vp", "--resume", "--lr", "0.01"]
    )
    assert result.exit_code == 2 and "other settings" in result.output


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_dsm_loss_by_hand(sde_name, registry):
    """Eq. 7 with λ = std²: ‖f + z‖² (VE, f conditioned on log σ), ‖−ε̂ + z‖² (VP, sub-VP)."""
    from bench.training.model_format import PARAMETERISATIONS, architecture_from_dict
    from bench.training.train import default_architecture, dsm_loss
    from bench.training.unet import UNet

    p = PARAMETERISATIONS[sde_name]
    cls = registry.get("sdes", sde_name).obj
    sde = cls(1, cls.Options(sigma_max=5.0) if sde_name == "ve" else None)
    torch.manual_seed(0)
    net = UNet(architecture_from_dict(default_architecture(1, p.centered)))
    gen = torch.Generator().manual_seed(1)
    x0, z = torch.rand(3, 1, 8, 8, generator=gen), torch.randn(3, 1, 8, 8, generator=gen)
    t = torch.tensor([1e-5, 0.4, 1.0], dtype=torch.float64)
    expected = []
    for i, ti in enumerate(t.tolist()):
        a, std = sde.marginal_coef(ti)
        x_t = a * x0[i : i + 1] + std * z[i : i + 1]
        label = math.log(std) if sde_name == "ve" else ti
        f = net(x_t, torch.tensor([label], dtype=torch.float32))
        expected.append(((f if sde_name == "ve" else -f) + z[i : i + 1]).square().sum())
    got = dsm_loss(net, sde, p, x0, t, z)
    torch.testing.assert_close(got, torch.stack(expected).mean(), rtol=1e-5, atol=1e-5)


def test_flow_matching_loss_by_hand(registry):
    """Conditional flow matching (Lipman et al. 2022, Eq. 9): ‖u_θ(x_t, t) − (z − x₀)‖² with
    x_t = (1 − t)·x₀ + t·z, the network conditioned on t (also at t = 1, where x_t = z)."""
    from bench.training.flow_matching import flow_matching_loss
    from bench.training.model_format import PARAMETERISATIONS, architecture_from_dict
    from bench.training.train import default_architecture
    from bench.training.unet import UNet

    p = PARAMETERISATIONS["flow"]
    sde = registry.get("sdes", "flow").obj(1)
    torch.manual_seed(0)
    net = UNet(architecture_from_dict(default_architecture(1, p.centered)))
    gen = torch.Generator().manual_seed(1)
    x0, z = torch.rand(3, 1, 8, 8, generator=gen), torch.randn(3, 1, 8, 8, generator=gen)
    t = torch.tensor([1e-5, 0.4, 1.0], dtype=torch.float64)
    expected = []
    for i, ti in enumerate(t.tolist()):
        x_t = (1 - ti) * x0[i : i + 1] + ti * z[i : i + 1]
        u = net(x_t, torch.tensor([ti], dtype=torch.float32))
        expected.append((u - (z[i : i + 1] - x0[i : i + 1])).square().sum())
    got = flow_matching_loss(net, sde, p, x0, t, z)
    torch.testing.assert_close(got, torch.stack(expected).mean(), rtol=1e-5, atol=1e-5)


def test_a_flow_model_loads_as_a_velocity_model(tmp_path, registry):
    """bench train --sde flow writes a velocity network: native ``velocity`` (one NFE per call),
    the score and ε views are its exact conversions, and other SDEs are refused."""
    from bench.errors import Unsupported

    train(tmp_path / "flow", "--sde", "flow")
    meta = json.loads((tmp_path / "flow" / "metadata.json").read_text())
    assert meta["parameterisation"] == {"label": "t", "output": "velocity", "centered": True}
    assert meta["sde"] == {"name": "flow", "options": {}}
    assert "flow matching" in meta["training"]["objective"]
    model = registry.get("score-models", "score").obj.load(
        str(tmp_path / "flow"), device=torch.device("cpu"), dtype=torch.float32
    )
    assert model.native == "velocity" and model.trained_for == "flow"
    sde = registry.get("sdes", "flow").obj(10)
    model.check_sde(sde)
    with pytest.raises(Unsupported, match="trained for the flow SDE"):
        model.check_sde(registry.get("sdes", "vp").obj(10))
    x, t = torch.randn(5, 1, 8, 8), 0.3
    with torch.no_grad():
        u = model.net(x, torch.full((5,), t))
    view = model.view(sde)
    torch.testing.assert_close(view.velocity(x, t), u)
    torch.testing.assert_close(view.eps(x, t), x + (1 - t) * u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(view.denoise(x, t), x - t * u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        model.score_fn(sde)(x, t), -(x + (1 - t) * u) / t, rtol=1e-5, atol=1e-5
    )
    assert view.calls == 3
