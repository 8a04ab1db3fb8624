"""Conditional networks under guidance: bench train --conditional folders (digits-cond), EDM
class-conditional pickles, diffusers UNets with num_class_embeds; the class accuracy metric."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.core.guidance import NULL_LABEL
from bench.core.labels import Conditioning, LabelPolicy
from bench.core.metric import MetricContext
from bench.errors import BenchError, Unsupported

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "checkpoints"
TINY = ["--steps", "3", "--batch-size", "16", "--warmup", "1", "--threads", "1"]
TINY += ["--device", "cpu", "--no-progress"]


def train(out: Path, *args: str) -> Path:
    result = CliRunner().invoke(cli, ["train", "--out", str(out), *TINY, *args])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def cond_folder(tmp_path_factory):
    return train(tmp_path_factory.mktemp("cond") / "m", "--sde", "vp", "--conditional")


def load(registry, folder: Path):
    entry = registry.get("score-models", "score")
    return entry.obj.load(str(folder), device=CPU, dtype=torch.float64)


def test_conditional_training_records_its_null_label(cond_folder, registry, make_sde):
    meta = json.loads((cond_folder / "metadata.json").read_text())
    assert meta["conditioning"] == {"classes": 10, "null_label": 10, "label_dropout": 0.1}
    assert meta["architecture"]["num_classes"] == 10 and "--conditional" in meta["command"]
    model = load(registry, cond_folder)
    assert model.classes == 10 and model.null_label and model.reference_split == "train_balanced"
    sde = make_sde("vp")
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 3, 9, NULL_LABEL])
    out = model.conditional_fn(sde)(x, 0.4, labels)
    std = sde.marginal_coef(0.4)[1]
    for i, c in enumerate([0, 3, 9, 10]):  # −ε̂(x, t, c)/std, the null label is index 10
        eps = model.net(x[i : i + 1], torch.tensor([0.4], dtype=torch.float64), torch.tensor([c]))
        torch.testing.assert_close(out[i : i + 1], -eps / std)
    torch.testing.assert_close(
        model.native_fn(sde)(x, 0.4), model.conditional_fn(sde)(x, 0.4, torch.full((4,), -1))
    )


def test_unconditional_training_is_unchanged_by_the_conditional_code(tmp_path):
    """An unconditional run draws the stream it always drew (a generator seeded by (seed,
    step): indices, then t, then z) and writes no conditioning into its metadata."""
    from bench.core.noise import derive_seed
    from bench.training.train import draw_batch

    data = torch.arange(40.0).view(10, 1, 2, 2)
    x0, t, z = draw_batch(data, 4, seed=3, step=7, t_eps=1e-5)
    gen = torch.Generator().manual_seed(derive_seed(3, 1, 7))
    idx = torch.randperm(10, generator=gen)[:4]
    t_ref = torch.rand(4, generator=gen, dtype=torch.float64) * (1 - 1e-5) + 1e-5
    assert torch.equal(x0, data[idx]) and torch.equal(t, t_ref)
    assert torch.equal(z, torch.randn((4, 1, 2, 2), generator=gen))
    a = train(tmp_path / "a", "--sde", "vp")
    meta = json.loads((a / "metadata.json").read_text())
    assert "num_classes" not in meta["architecture"] and "conditioning" not in meta


def test_without_label_dropout_other_scales_are_unsupported(tmp_path, registry):
    folder = train(tmp_path / "nd", "--sde", "vp", "--conditional", "--label-dropout", "0")
    model = load(registry, folder)
    assert model.classes == 10 and not model.null_label
    out = tmp_path / "run"
    args = ["run", "--model", f"score:{folder}", "--samplers", "ddim", "--steps", "2"]
    args += ["--samples", "4", "--guidance", "1,2", "--metrics", "none", "--no-progress"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv").set_index("guidance")
    assert rows.loc[1.0, "status"] == "ok" and rows.loc[2.0, "status"] == "unsupported"
    assert "trained without label dropout" in rows.loc[2.0, "reason"]
    assert rows.loc[1.0, "guidance_batch"] == "split"  # auto: a network on the CPU


def test_conditional_training_needs_labels(tmp_path):
    data = tmp_path / "x.npz"
    import numpy as np

    np.savez(data, images=np.zeros((4, 8, 8, 1), dtype=np.uint8))
    result = CliRunner().invoke(
        cli,
        ["train", "--dataset", f"npz:{data}", "--sde", "vp", "--conditional"]
        + ["--out", str(tmp_path / "o"), *TINY],
    )
    assert result.exit_code == 2 and "has no class labels" in result.output


def test_class_accuracy_on_real_digits_is_the_classifiers(registry, cond_folder):
    """Real test digits ordered so that sample i is of class i mod 10 (the balanced policy):
    class_acc is the classifier's own accuracy on them, computed here with its network."""
    from bench_plugins.class_accuracy import ClassAccuracy

    from bench.fidelity.digits_classifier import load_net, quantised
    from bench.fidelity.extractors import shipped_digits_weights

    digits = registry.get("datasets", "digits").obj.load(None)
    images, labels = digits.data("test"), digits.labels("test")
    order = torch.cat([torch.nonzero(labels == c)[:, 0][:35] for c in range(10)])
    order = order.view(10, 35).T.reshape(-1)  # classes 0, 1, …, 9, 0, 1, …
    x, y = images[order], labels[order]
    assert y.tolist() == [i % 10 for i in range(len(y))]
    model = load(registry, cond_folder)
    cond = Conditioning(0, LabelPolicy.parse("balanced"), 10, None)  # type: ignore[arg-type]
    from bench.fidelity.cache import cache_dir

    context = MetricContext(registry, CPU, cache_dir(), None, 0, cond)
    metric = ClassAccuracy(model, len(x), device=CPU, context=context)
    for start in range(0, len(x), 64):
        metric.update_at(x[start : start + 64], start)
    out = metric.compute()
    net = load_net(shipped_digits_weights())
    expected = float((net(quantised(x))[1].argmax(1) == y).double().mean())
    assert out["class_acc"] == pytest.approx(expected, abs=1e-12)
    real = float((net(quantised(images))[1].argmax(1) == labels).double().mean())
    assert out["class_acc_floor"] == pytest.approx(real, abs=1e-12) and real > 0.97


def test_class_accuracy_refuses_an_unconditional_model(registry):
    from bench_plugins.class_accuracy import ClassAccuracy

    model = registry.get("score-models", "digits-vp").obj.load(
        None, device=CPU, dtype=torch.float32
    )
    with pytest.raises(Unsupported, match="class-conditional model of the 10 digit classes"):
        ClassAccuracy.supports(model)


def test_balanced_reference_split_has_equal_classes(registry):
    digits = registry.get("datasets", "digits").obj.load(None)
    counts = torch.bincount(digits.labels("train_balanced"))
    assert len(set(counts.tolist())) == 1 and int(counts.sum()) == 10 * int(
        torch.bincount(digits.labels("train")).min()
    )
    train = {tuple(v.flatten().tolist()) for v in digits.data("train")}
    assert all(tuple(v.flatten().tolist()) in train for v in digits.data("train_balanced"))


# -- EDM class-conditional pickles ------------------------------------------------------------------
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared checkpoints not found")


@needs_shared
def test_edm_labels_per_sample_and_no_null_label(registry):
    cls = registry.get("score-models", "edm").obj
    path = SHARED / "edm_edm_adm" / "network.pkl"
    model = cls.load(str(path), device=CPU, dtype=torch.float32, options=cls.Options())
    assert model.classes == 10 and not model.null_label
    sde_cls = registry.get("sdes", "edm").obj
    sde = sde_cls(10, sde_cls.Options(**model.sde_defaults["edm"]))
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = 2.0
    labels = torch.tensor([4, 7, NULL_LABEL])
    got = model.conditional_fn(sde)(x, t, labels)
    onehot = torch.nn.functional.one_hot(torch.tensor([4, 7, 0]), 10).float()
    onehot[2] = 0  # the null label: EDM's all-zero class vector
    sigma = torch.full((3,), t)
    expected = model.net(x, sigma, onehot, force_fp32=True)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    from bench.run.conditioning import check_guidance

    class Cell:
        guidance, guidance_interval = 1.5, None

    with pytest.raises(Unsupported, match="label_dropout = 0"):
        check_guidance(Cell(), model)


# -- diffusers UNet2DModel with a class embedding table ------------------------------------------------
@pytest.fixture(scope="module")
def cond_unet(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests import diffusers_models as dm

    folder = tmp_path_factory.mktemp("cond_unet") / "ddpm"
    return dm.write_pipeline(
        folder, {**dm.TINY_DDPM_UNET, "num_class_embeds": 4}, dm.DDPM_SCHEDULER
    )


def test_diffusers_class_labels_reach_the_unet(registry, make_sde, cond_unet):
    cls = registry.get("score-models", "diffusers").obj
    plain = cls.load(str(cond_unet), device=CPU, dtype=torch.float32)
    assert plain.classes == 4 and not plain.null_label
    model = cls.load(
        str(cond_unet), device=CPU, dtype=torch.float32, options=cls.Options(null_class=3)
    )
    assert model.classes == 3 and model.null_label
    sde = make_sde("vp")
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = model.conditional_fn(sde)(x, 0.3, torch.tensor([0, 2, NULL_LABEL]))
    label = model.vp_label(sde, 0.3)
    timesteps = torch.full((3,), label, dtype=torch.float32)
    with torch.no_grad():
        eps = model.unet(x, timesteps, class_labels=torch.tensor([0, 2, 3]), return_dict=False)[0]
    a, std = sde.marginal_coef(0.3)
    expected = eps if model.native == "eps" else -eps / model.vp_coefficients(sde, 0.3)[1]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(BenchError, match="last class embedding"):
        cls.load(str(cond_unet), device=CPU, dtype=torch.float32, options=cls.Options(null_class=1))
