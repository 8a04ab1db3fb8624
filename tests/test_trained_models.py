"""Trained score models: shipped weights, score conventions (§2.6), SDE checks, load errors."""

from __future__ import annotations

import csv
import json
import math
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.errors import BenchError, Unsupported
from tests.files import copy_of_shipped, shipped_folder

SHIPPED = ("digits-ve", "digits-vp", "digits-subvp", "digits-flow")
CPU = torch.device("cpu")


def load(registry, name: str, arg: str | None = None):
    return registry.get("score-models", name).obj.load(arg, device=CPU, dtype=torch.float32)


@pytest.fixture
def no_pickle(monkeypatch):
    """Any attempt to unpickle fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    for obj, attr in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(obj, attr, boom)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_without_pickle(name, registry, no_pickle):
    folder = shipped_folder(name)
    assert (folder / "model.safetensors").stat().st_size < 5_000_000
    model = load(registry, name)
    sde_name = name.split("-")[1]
    assert model.trained_for == sde_name and model.dataset == "digits"
    assert model.data_shape == (1, 8, 8) and model.default_metrics == ("fid", "kid")
    sde = registry.get("sdes", sde_name).obj(
        10, registry.get("sdes", sde_name).obj.Options(**model.sde_defaults[sde_name])
    )
    model.check_sde(sde)
    x = torch.randn(3, 1, 8, 8)
    s = model.score_fn(sde)(x, 0.5)
    assert s.shape == x.shape and bool(torch.isfinite(s).all())


def test_shipped_metadata_records_the_run(registry):
    for name in SHIPPED:
        meta = json.loads((shipped_folder(name) / "metadata.json").read_text())
        for key in (
            "sde",
            "data",
            "architecture",
            "steps",
            "final_loss",
            "ema_rate",
            "seed",
            "command",
        ):
            assert key in meta, (name, key)
        assert meta["data"]["content_hash"] == _digits_train_hash(registry)


def _digits_train_hash(registry) -> str:
    return registry.get("datasets", "digits").obj.load(None).content_hash("train")


def by_hand(model, sde, x, t):
    """±f(x, τ)/std(t) written out from score_sde.md §2.6; a flow network's velocity u gives
    ε = x + (1 − t)·u and s = −ε/t."""
    a_unused, std = sde.marginal_coef(t)
    net = model.net
    if sde.name == "flow":
        u = net(x, torch.full((x.shape[0],), t))
        return -(x + (1 - t) * u) / t
    if sde.name == "ve":
        sigma = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
        assert math.isclose(sigma, std)
        return net(x, torch.full((x.shape[0],), math.log(sigma))) / sigma
    L = -0.25 * t**2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min
    std_by_hand = math.sqrt(1 - math.exp(2 * L)) if sde.name == "vp" else 1 - math.exp(2 * L)
    assert math.isclose(std, std_by_hand, rel_tol=1e-12)
    return -net(x, torch.full((x.shape[0],), t)) / std_by_hand


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("t", [1e-3, 0.3, 1.0])
def test_score_follows_the_conventions(name, t, registry):
    model = load(registry, name)
    sde_name = name.split("-")[1]
    cls = registry.get("sdes", sde_name).obj
    sde = cls(10, cls.Options(**model.sde_defaults[sde_name]))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = by_hand(model, sde, x, t)
    torch.testing.assert_close(model.score_fn(sde)(x, t), expected, rtol=1e-5, atol=1e-5)


def test_to_data_maps_to_unit_interval(registry):
    x = torch.tensor([-1.0, 0.0, 1.0])
    assert torch.equal(load(registry, "digits-vp").to_data(x), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(load(registry, "digits-subvp").to_data(x), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(load(registry, "digits-flow").to_data(x), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(load(registry, "digits-ve").to_data(x), x)


def test_check_sde_refuses_other_sdes_and_hyperparameters(registry, make_sde):
    vp, ve = load(registry, "digits-vp"), load(registry, "digits-ve")
    with pytest.raises(Unsupported, match="trained for the vp SDE"):
        vp.check_sde(make_sde("ve"))
    with pytest.raises(Unsupported, match="beta_max"):
        vp.check_sde(make_sde("vp", beta_max=10.0))
    with pytest.raises(Unsupported, match="sigma_max=5"):
        ve.check_sde(make_sde("ve"))  # the SDE default is 50
    ve.check_sde(make_sde("ve", sigma_max=5.0))
    assert ve.sde_defaults == {"ve": {"sigma_min": 0.01, "sigma_max": 5.0}}


EULER_2_STEPS = ("--predictors", "euler", "--correctors", "none", "--steps", "2")


def run(tmp_path, *args: str, metrics: str | None = "none"):
    """Rows of a ``bench run`` (``metrics=None``: the model's default metrics)."""
    out = tmp_path / "run"
    chosen = ["--metrics", metrics] if metrics is not None else []
    result = CliRunner().invoke(
        cli,
        ["run", *chosen, "--out", str(out), "--threads", "1", "--no-progress", *args],
    )
    assert result.exit_code == 0, result.output
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_vp_model_under_ve_is_an_unsupported_row(tmp_path):
    rows = run(
        tmp_path,
        "--model",
        "digits-vp",
        "--sdes",
        "ve,vp",
        *EULER_2_STEPS,
        "--samples",
        "4",
    )
    status = {r["sde"]: (r["status"], r["reason"]) for r in rows}
    assert status["ve"][0] == "unsupported" and "trained for the vp SDE" in status["ve"][1]
    assert status["vp"][0] == "ok"


@pytest.mark.slow
def test_digits_ve_end_to_end(tmp_path):
    rows = run(
        tmp_path,
        "--model",
        "digits-ve",
        "--sdes",
        "ve",
        "--steps",
        "10",
        "--samples",
        "64",
    )
    assert rows and all(r["status"] == "ok" for r in rows)
    assert {r["steps"] for r in rows} == {"10"}


def test_digits_ve_with_its_default_metrics(tmp_path):
    """No -o and no --metrics: the model's σ_max = 5 and its fid,kid apply by themselves."""
    rows = run(
        tmp_path,
        "--model",
        "digits-ve",
        "--predictors",
        "euler",
        "--correctors",
        "none",
        "--steps",
        "10",
        "--samples",
        "64",
        metrics=None,
    )
    assert len(rows) == 1
    (row,) = rows
    assert row["status"] == "ok", row["reason"]
    assert (row["sde"], row["metrics"]) == ("ve", "fid,kid")
    assert "sigma_max=5.0" in row["sde_options"].split(",")
    assert math.isfinite(float(row["fid"])) and math.isfinite(float(row["kid"]))
    assert row["fid_n"] == row["kid_n"] == row["kid_pool_n"] == "64"
    assert row["fid_extractor"].startswith("digits-classifier@")
    assert row["kid_extractor"] == row["fid_extractor"]
    assert row["fid_ref"] == row["kid_ref"] == "digits:train"


def _write_dataset(tmp_path: Path, kind: str) -> str:
    """64 digits as a dataset with one split, ``all``: an .npz of ``images`` or a PNG folder."""
    import numpy as np
    from bench_plugins.datasets import Digits

    from bench.fidelity.images import to_uint8

    images = to_uint8(Digits().data("test")[:64]).numpy()[:, 0]  # (64, 8, 8) uint8
    if kind == "npz":
        path = tmp_path / "digits.npz"
        np.savez(path, images=images)
        return f"npz:{path}"
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return f"folder:{folder}"


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_model_trained_on_a_split_all_dataset_gets_fid(tmp_path, kind):
    """A dataset without a train split: the metrics' reference defaults to its split all."""
    dataset = _write_dataset(tmp_path, kind)
    model = tmp_path / "model"
    train = [
        "train",
        "--dataset",
        dataset,
        "--sde",
        "vp",
        "--steps",
        "2",
        "--batch-size",
        "16",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(model),
    ]
    result = CliRunner().invoke(cli, train)
    assert result.exit_code == 0, result.output
    assert json.loads((model / "metadata.json").read_text())["data"]["split"] == "all"
    rows = run(
        tmp_path,
        "--model",
        f"score:{model}",
        *EULER_2_STEPS,
        "--samples",
        "16",
        metrics=None,
    )
    (row,) = rows
    assert row["status"] == "ok", row["reason"]
    assert row["fid_ref"] == row["kid_ref"] == f"{dataset}:all"
    assert row["fid_ref_n"] == "64" and row["fid_n"] == "16"
    assert math.isfinite(float(row["fid"])) and math.isfinite(float(row["kid"]))


# -- load errors: one BenchError, exit status 2 ---------------------------------------------------
@pytest.fixture
def copy_of_vp(tmp_path) -> Path:
    return copy_of_shipped("digits-vp", tmp_path / "model")


def test_missing_folder(registry, tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        load(registry, "score", str(tmp_path / "nope"))


def test_missing_metadata(registry, copy_of_vp):
    (copy_of_vp / "metadata.json").unlink()
    with pytest.raises(BenchError, match="no metadata.json"):
        load(registry, "score", str(copy_of_vp))


@pytest.mark.parametrize("cut", [0, 7, 100, -1000])
def test_truncated_weights(registry, copy_of_vp, cut):
    path = copy_of_vp / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(BenchError, match="not a readable safetensors file"):
        load(registry, "score", str(copy_of_vp))


def test_garbage_weights(registry, copy_of_vp):
    pickled = b"\x80\x04K\x01." * 50  # a pickle stream, not safetensors
    (copy_of_vp / "model.safetensors").write_bytes(pickled)
    with pytest.raises(BenchError, match="not a readable safetensors file"):
        load(registry, "score", str(copy_of_vp))


def _edit_metadata(folder: Path, edit) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    edit(meta)
    (folder / "metadata.json").write_text(json.dumps(meta))


def test_shapes_that_do_not_fit_the_architecture(registry, copy_of_vp):
    _edit_metadata(copy_of_vp, lambda m: m["architecture"].update(channels=[16, 32]))
    with pytest.raises(BenchError, match="do not fit the architecture"):
        load(registry, "score", str(copy_of_vp))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something else"}', "not an sde-bench model"),
        ('{"format": "sde-bench/score-model/1"}', "malformed metadata"),
    ],
)
def test_bad_metadata(registry, copy_of_vp, text, message):
    (copy_of_vp / "metadata.json").write_text(text)
    with pytest.raises(BenchError, match=message):
        load(registry, "score", str(copy_of_vp))


def test_cli_load_error_exits_2(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--model",
            f"score:{tmp_path}/nope",
            "--metrics",
            "none",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2 and "does not exist" in result.output


def test_presets_take_no_argument(registry):
    with pytest.raises(BenchError, match="takes no argument"):
        load(registry, "digits-vp", "x")


# -- model SDE defaults ------------------------------------------------------------------------
def test_apply_sde_defaults_keeps_user_values():
    from bench.core.options import apply_sde_defaults

    values = {("sdes", "ve"): {"sigma_max": 90.0}}
    defaults = {"ve": {"sigma_min": 0.01, "sigma_max": 5.0}, "vp": {"beta_max": 10.0}}
    apply_sde_defaults(values, defaults, ("ve", "subvp"))
    assert values == {("sdes", "ve"): {"sigma_max": 90.0, "sigma_min": 0.01}}
    fresh: dict = {}
    apply_sde_defaults(fresh, defaults, ("ve", "vp"))
    assert fresh == {
        ("sdes", "ve"): {"sigma_min": 0.01, "sigma_max": 5.0},
        ("sdes", "vp"): {"beta_max": 10.0},
    }


def test_digits_ve_runs_out_of_the_box(tmp_path):
    rows = run(
        tmp_path,
        "--model",
        "digits-ve",
        "--sdes",
        "ve",
        *EULER_2_STEPS,
        "--samples",
        "4",
    )
    assert rows[0]["status"] == "ok", rows[0]["reason"]


def test_compile_flag_compiles_the_network(tmp_path, monkeypatch):
    """--compile reaches torch.compile with the mode (an identity stand-in keeps the test fast)."""
    import torch

    calls = []

    def fake_compile(module, mode=None):
        calls.append((type(module).__name__, mode))
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    rows = run(
        tmp_path,
        "--model",
        "digits-vp",
        *EULER_2_STEPS,
        "--samples",
        "4",
        "--compile",
        "reduce-overhead",
    )
    assert calls == [("UNet", "reduce-overhead")]
    assert rows[0]["status"] == "ok" and rows[0]["compile"] == "reduce-overhead"
