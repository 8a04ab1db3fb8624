"""FID/KID/IS through torch-fidelity: extractor, streaming, cached references, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from bench import fidelity
from bench.errors import BenchError, Unsupported
from bench.fidelity.images import to_uint8

PLUGIN_DIR = str(Path(__file__).parent / "image_plugin")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_references():
    """Each test starts without in-process references (extractors stay built: they are pure)."""
    from bench.fidelity.reference import _references, _setups

    _setups.clear()
    _references.clear()
    fidelity.Featurizer._last = None
    yield


@pytest.fixture(scope="module")
def digits():
    from bench_plugins.datasets import Digits

    return Digits()


@pytest.fixture
def fake_model(image_model):
    return image_model


def metric_class(registry, name):
    return registry.get("metrics", name).obj


def context(registry):
    from bench.core.metric import MetricContext

    return MetricContext(registry, CPU, fidelity.cache_dir())


def make_metric(registry, name, model, n, **options):
    cls = metric_class(registry, name)
    return cls(model, n, device=CPU, options=cls.Options(**options), context=context(registry))


def feed(metric, images, batch=100):
    for start in range(0, len(images), batch):
        metric.update(images[start : start + batch])
    return metric.compute()


class _U8(torch.utils.data.Dataset):
    """Bare uint8 tensors, as torch-fidelity's Dataset inputs require."""

    def __init__(self, images):
        self.images = to_uint8(images)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


# -- the extractor ---------------------------------------------------------------------------------
def test_extractor_registered_once_and_used_by_torch_fidelity(registry, fake_model, digits):
    from torch_fidelity import calculate_metrics
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    fidelity.register_extractors()
    cls = FEATURE_EXTRACTORS_REGISTRY[fidelity.DIGITS]
    fidelity.register_extractors()  # a second call must not raise "already registered"
    assert FEATURE_EXTRACTORS_REGISTRY[fidelity.DIGITS] is cls

    test, train = digits.data("test"), digits.data("train")
    ours_fid = feed(make_metric(registry, "fid", fake_model, len(test)), test)
    ours_kid = feed(make_metric(registry, "kid", fake_model, len(test), subsets=20), test)
    theirs = calculate_metrics(
        input1=_U8(test),
        input2=_U8(train),
        fid=True,
        kid=True,
        feature_extractor=fidelity.DIGITS,
        cuda=False,
        save_cpu_ram=True,
        verbose=False,
        cache=False,
        batch_size=500,
        kid_subset_size=len(test),
        kid_subsets=20,
        rng_seed=fidelity.REFERENCE_SEED,
    )
    assert ours_fid["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert ours_kid["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)
    assert ours_kid["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-5)
    assert 2 < ours_fid["fid"] < 30  # held-out digits sit near the data's own floor


def test_shipped_classifier_accuracy_without_pickle(monkeypatch, digits):
    from bench.fidelity import digits_classifier as dc

    def no_pickle(*args, **kwargs):
        raise AssertionError("the shipped classifier must load from safetensors")

    monkeypatch.setattr(torch, "load", no_pickle)
    path = fidelity.shipped_digits_weights()
    net = dc.load_net(path)
    acc = dc.accuracy(net, digits, "test")
    meta = json.loads((path.parent / dc.META_FILE).read_text())
    assert acc >= 0.97
    assert acc == pytest.approx(meta["test_accuracy"], abs=1e-9)
    assert meta["sha256"] == fidelity.sha256_file(path)
    assert "bench train-classifier" in meta["command"] and meta["train"]["seed"] == 0


# -- values ----------------------------------------------------------------------------------------
def test_fid_kid_of_a_set_against_itself_and_shifted(registry, fake_model, digits):
    train = digits.data("train")
    same_fid = feed(make_metric(registry, "fid", fake_model, len(train)), train, batch=500)
    same_kid = feed(
        make_metric(registry, "kid", fake_model, len(train), subsets=10), train, batch=500
    )
    shifted = torch.roll(train, shifts=2, dims=-1)
    far_fid = feed(make_metric(registry, "fid", fake_model, len(train)), shifted, batch=500)
    far_kid = feed(
        make_metric(registry, "kid", fake_model, len(train), subsets=10), shifted, batch=500
    )
    assert abs(same_fid["fid"]) < 1e-3
    # Subsets drawn from one set share images, which biases KID slightly negative: about -3
    # against +96 for the shifted set (the raw 128-d features make KID values large).
    assert far_fid["fid"] > 100
    assert far_kid["kid"] > 10 * far_kid["kid_std"]
    assert abs(same_kid["kid"]) < 0.1 * far_kid["kid"]
    assert same_fid["fid_extractor"] == fidelity.resolve_extractor(fidelity.DIGITS).label
    assert (same_fid["fid_ref"], same_fid["fid_ref_n"]) == ("digits:train", len(train))
    assert same_kid["kid_subset_size"] == 1000 and same_kid["kid_ref"] == "digits:train"


def test_kid_subset_size_is_clamped_and_recorded(registry, fake_model, digits):
    test = digits.data("test")[:50]
    out = feed(make_metric(registry, "kid", fake_model, 50, subset_size=500), test)
    assert out["kid_subset_size"] == 50 and math.isfinite(out["kid"])


def test_isc_from_the_classifier_logits(registry, fake_model, digits):
    out = feed(make_metric(registry, "isc", fake_model, 360), digits.data("test"))
    assert 8 < out["isc"] <= 10  # ten balanced, confidently classified classes
    assert out["isc_extractor"].startswith("digits-classifier@")


def test_fid_and_kid_share_one_extractor_pass(registry, fake_model, digits, monkeypatch):
    fid = make_metric(registry, "fid", fake_model, 100)
    kid = make_metric(registry, "kid", fake_model, 100)
    calls = []
    module = fid.featurize.module
    monkeypatch.setattr(module, "forward", lambda x, f=module.forward: calls.append(1) or f(x))
    batch = digits.data("test")[:100]
    fid.update(batch)
    kid.update(batch)
    assert len(calls) == 1


# -- the reference cache ---------------------------------------------------------------------------
def run_sweep(tmp_path, name, *extra):
    from bench.cli import cli

    out = tmp_path / name
    args = [
        "--plugins-dir",
        PLUGIN_DIR,
        "run",
        "--model",
        "fakeimg",
        "--sdes",
        "vp",
        "--predictors",
        "euler",
        "--correctors",
        "none",
        "--steps",
        "2,3",
        "--samples",
        "40",
        "--batch-size",
        "20",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]
    result = CliRunner().invoke(cli, args)
    return result, out


def test_sweep_computes_the_reference_once(tmp_path):
    fidelity.COUNTS.clear()
    result, out = run_sweep(tmp_path, "first")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 2 and (rows.status == "ok").all()
    assert fidelity.COUNTS["reference"] == 1  # two cells (fid and kid each), one computation
    assert list(rows.metrics.unique()) == ["fid,kid"]  # the model's default metrics
    assert (rows.fid_n == 40).all() and (rows.kid_n == 40).all()
    assert (rows.kid_subset_size == 40).all()
    assert (rows.fid_ref == "digits:train").all() and (rows.fid_ref_n == 1437).all()
    assert rows.fid_extractor.str.startswith("digits-classifier@").all()
    assert np.isfinite(rows.fid).all() and (rows.fid > 0).all()

    fidelity.clear_memory_caches()  # a new process: only the disk cache is left
    result, out = run_sweep(tmp_path, "second")
    assert result.exit_code == 0, result.output
    assert fidelity.COUNTS["reference"] == 1 and fidelity.COUNTS["reference_disk_hit"] == 1
    again = pd.read_csv(out / "results.csv")
    assert np.allclose(again.fid, rows.fid) and np.allclose(again.kid, rows.kid)


def write_npz(path, images):
    np.savez(path, images=to_uint8(images).numpy())
    return f"npz:{path}"


def test_reference_key_follows_dataset_content(tmp_path, digits):
    from bench_plugins.datasets import NpzImages

    images = digits.data("test")[:64]
    edited = images.clone()
    edited[0, 0, 0, 0] = 1 - edited[0, 0, 0, 0]
    spec = fidelity.resolve_extractor(fidelity.DIGITS)
    fidelity.COUNTS.clear()
    a = fidelity.reference(
        NpzImages.load(write_npz(tmp_path / "a.npz", images)[4:]), "all", spec, None, CPU
    )
    b = fidelity.reference(
        NpzImages.load(write_npz(tmp_path / "b.npz", edited)[4:]), "all", spec, None, CPU
    )
    assert a.key != b.key and fidelity.COUNTS["reference"] == 2
    fidelity.clear_memory_caches()
    c = fidelity.reference(
        NpzImages.load(write_npz(tmp_path / "c.npz", images)[4:]), "all", spec, None, CPU
    )
    assert c.key == a.key and fidelity.COUNTS["reference_disk_hit"] == 1
    assert fidelity.COUNTS["reference"] == 2
    assert torch.equal(c.features, a.features)
    half = fidelity.reference(NpzImages.load(str(tmp_path / "a.npz")), "all", spec, 32, CPU)
    assert half.key != a.key and half.n == 32
    files = sorted(p.name for p in (fidelity.fidelity_cache()).glob("ref-*.safetensors"))
    assert len(files) == 3


# -- errors before any work ------------------------------------------------------------------------
def test_missing_inception_weights_fail_before_any_cell(tmp_path, monkeypatch):
    from bench.fidelity import inception

    monkeypatch.setattr(inception, "locate_fid_helper", lambda: None)
    monkeypatch.delenv(fidelity.WEIGHTS_ENV, raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("must never try to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    result, out = run_sweep(tmp_path, "run", "-o", "fid.extractor=inception-v3-compat")
    assert result.exit_code == 2
    message = result.output.strip().splitlines()
    assert len(message) == 1 and "sde-bench[inception]" in message[0]
    assert "--fid-weights" in message[0] and "Traceback" not in result.output
    assert not (out / "results.csv").exists()


def test_missing_user_weights_and_bad_options(registry, fake_model, monkeypatch, tmp_path):
    fid = metric_class(registry, "fid")
    monkeypatch.setenv(fidelity.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(BenchError, match="does not exist"):
        fid.prepare(fake_model, fid.Options(extractor=fidelity.INCEPTION), context(registry))
    with pytest.raises(ValueError, match="extractor must be one of"):
        fid.Options(extractor="vgg16")
    with pytest.raises(BenchError, match="ref_n=5000"):
        fid.prepare(fake_model, fid.Options(ref_n=5000), context(registry))


def test_non_image_and_datasetless_models(registry, fake_model):
    fid = metric_class(registry, "fid")
    ring = registry.get("score-models", "ring8").obj.load(None, device=CPU, dtype=torch.float32)
    with pytest.raises(Unsupported, match="image model"):
        fid.supports(ring)

    class NoData(type(fake_model)):
        dataset = None

    with pytest.raises(BenchError, match="-o fid.dataset="):
        fid.prepare(NoData(), fid.Options(), context(registry))


def test_isc_refuses_weights_without_logits(registry, fake_model, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "inception-no-fc.safetensors"
    save_file({"fc.weight": torch.full((4, 4), float("nan"))}, str(path))
    isc = metric_class(registry, "isc")
    with pytest.raises(BenchError, match="Inception Score is undefined"):
        isc.prepare(
            fake_model,
            isc.Options(extractor=fidelity.INCEPTION, weights=str(path)),
            context(registry),
        )


# -- the noise floor -------------------------------------------------------------------------------
def test_noise_floor_command():
    from bench.cli import cli

    result = CliRunner().invoke(
        cli,
        [
            "fid-floor",
            "--n",
            "300",
            "--repeats",
            "2",
            "--json",
            "--device",
            "cpu",
            "--kid-subsets",
            "10",
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["n"] == 300 and row["ref_n"] == 1797 - 300 and row["repeats"] == 2
    assert 5 < row["fid_mean"] < 40 and row["kid_subset_size"] == 300


def test_noise_floor_against_another_split(digits):
    floor = fidelity.noise_floor(
        digits, 100, split="test", against="train", repeats=2, kid_subsets=5
    )
    summary = floor.summary()
    assert (summary["n"], summary["ref_n"], summary["split"]) == (100, 1437, "test vs train")
    assert 5 < summary["fid_mean"] < 80
    with pytest.raises(BenchError, match="n=400 is impossible"):
        fidelity.noise_floor(digits, 400, split="test", against="train")


def test_tf32_is_off_during_extraction_and_restored(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with fidelity.exact_fp32():
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


# -- bounded memory: FID keeps running sums, KID a capped reservoir --------------------------------
def state_size(obj, seen=None) -> int:
    """Tensor elements plus container entries reachable from ``obj`` (its per-sample state)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, torch.nn.Module):
        return 0  # the extractor network: fixed, shared between metrics
    if isinstance(obj, dict):
        return len(obj) + sum(state_size(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return len(obj) + sum(state_size(v, seen) for v in obj)
    return state_size(getattr(obj, "__dict__", {}), seen)


def fake_images(n, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_fid_state_does_not_grow_with_n(registry, fake_model):
    fid = make_metric(registry, "fid", fake_model, 5000)
    images = fake_images(5000)
    fid.update(images[:100])
    fid.update(images[100:200])
    size = state_size(fid)
    sums = (fid.stats.sum.shape, fid.stats.outer.shape)
    for start in range(200, 5000, 100):
        fid.update(images[start : start + 100])
    assert state_size(fid) == size  # no per-sample state: only D + D² running sums
    assert (fid.stats.sum.shape, fid.stats.outer.shape) == sums == ((128,), (128, 128))
    assert fid.stats.n == 5000 and math.isfinite(fid.compute()["fid"])


def test_kid_holds_at_most_max_features(registry, fake_model):
    cap = 300
    kid = make_metric(registry, "kid", fake_model, 3000, max_features=cap, subsets=5)
    images = fake_images(3000)
    sizes = []
    for start in range(0, 3000, 64):  # 64 does not divide the cap: one batch straddles it
        kid.update(images[start : start + 64])
        assert kid.pool.held <= cap
        sizes.append(state_size(kid))
    assert kid.pool.held == cap and kid.pool.seen == 3000
    assert len(set(sizes[cap // 64 + 1 :])) == 1  # full: the state no longer grows
    out = kid.compute()
    assert out["kid_pool_n"] == cap and out["kid_subset_size"] == cap
    assert math.isfinite(out["kid"])
    # The held rows are real sample features, each at most once.
    layer = kid.setting.spec.fid_layer
    everything = torch.cat(
        [kid.featurize(images[start : start + 64])[layer] for start in range(0, 3000, 64)]
    )
    rows = {tuple(f.tolist()): i for i, f in enumerate(everything)}
    found = [rows.get(tuple(f.tolist())) for f in kid.pool.features()]
    assert None not in found and len(set(found)) == cap


def test_kid_below_the_cap_is_unchanged(registry, fake_model, digits):
    """Up to max_features, KID sees every feature in order: the value KID had before the cap."""
    test = digits.data("test")
    spec = fidelity.resolve_extractor(fidelity.DIGITS)
    ref = fidelity.reference(digits, "train", spec, None, CPU)
    featurize = fidelity.Featurizer(spec, CPU)
    chunks = [featurize(test[start : start + 100]) for start in range(0, len(test), 100)]
    features = torch.cat([c[spec.fid_layer] for c in chunks])  # what KID kept before the cap
    expected = fidelity.kid_from_features(features, ref.features, 360, 20)
    for cap in (fidelity.KID_MAX_FEATURES, len(test)):
        kid = make_metric(registry, "kid", fake_model, len(test), subsets=20, max_features=cap)
        out = feed(kid, test)
        assert torch.equal(kid.pool.features(), features)
        assert (out["kid"], out["kid_std"]) == expected
        assert out["kid_pool_n"] == len(test) and out["kid_subset_size"] == 360
    with pytest.raises(ValueError, match="max_features"):
        metric_class(registry, "kid").Options(max_features=1)


def test_reservoir_is_a_uniform_seeded_subset():
    cap, batches, size = 2000, 20, 1000

    def fill(seed):
        pool = fidelity.FeatureReservoir(cap, seed)
        for b in range(batches):
            rows = torch.arange(b * size, (b + 1) * size, dtype=torch.float32)
            pool.add(torch.stack([rows, torch.full_like(rows, b)], 1))
            assert pool.held <= cap
        return pool.features()

    held = fill(7)
    assert held.shape == (cap, 2) and len(set(held[:, 0].tolist())) == cap
    assert torch.equal(fill(7), held)  # seeded: reproducible
    assert not torch.equal(fill(8), held)
    # Every batch is represented in proportion: cap / batches = 100 rows each (chi² test,
    # 19 degrees of freedom, 43.8 is the 0.1 % quantile).
    counts = torch.bincount(held[:, 1].long(), minlength=batches).double()
    expected = cap / batches
    assert float(((counts - expected) ** 2 / expected).sum()) < 43.8
    assert counts.min() > 0


def test_reservoir_keeps_every_row_with_equal_probability():
    """Inclusion frequency of each stream position over many seeds is cap / n (bottom-k)."""
    cap, n, trials = 5, 50, 2000
    hits = torch.zeros(n)
    for seed in range(trials):
        pool = fidelity.FeatureReservoir(cap, seed)
        for start in range(0, n, 7):
            pool.add(torch.arange(start, min(start + 7, n), dtype=torch.float32)[:, None])
        hits[pool.features()[:, 0].long()] += 1
    frequency = hits / trials
    # Binomial sd of each frequency: sqrt(0.1 · 0.9 / 2000) ≈ 0.0067.
    assert (frequency - cap / n).abs().max() < 0.03
    assert abs(float(frequency[:25].mean() - frequency[25:].mean())) < 0.01


# -- the default reference split -------------------------------------------------------------------
def test_reference_split_defaults_to_train_else_all(registry, fake_model, digits, tmp_path):
    from bench_plugins.datasets import NpzImages

    images = digits.data("test")[:64]
    only_all = write_npz(tmp_path / "images.npz", images)
    with_train = tmp_path / "train.npz"
    np.savez(with_train, train=to_uint8(images[:40]).numpy(), test=to_uint8(images[40:]).numpy())
    assert fidelity.default_split(digits) == "train"
    assert fidelity.default_split(NpzImages.load(only_all[4:])) == "all"
    assert fidelity.default_split(NpzImages.load(str(with_train))) == "train"

    class OnNpz(type(fake_model)):
        dataset = only_all

    out = feed(make_metric(registry, "fid", OnNpz(), 64), images, batch=32)
    assert out["fid_ref"] == f"{only_all}:all" and out["fid_ref_n"] == 64
    assert abs(out["fid"]) < 1e-3  # the same images as the reference
    out = feed(make_metric(registry, "kid", OnNpz(), 64, subsets=5), images, batch=32)
    assert out["kid_ref"] == f"{only_all}:all"
    out = feed(make_metric(registry, "fid", fake_model, 64, dataset=f"npz:{with_train}"), images)
    assert (out["fid_ref"], out["fid_ref_n"]) == (f"npz:{with_train}:train", 40)
    out = feed(make_metric(registry, "fid", fake_model, 64, split="test"), images)
    assert out["fid_ref"] == "digits:test"  # an explicit split still wins

    class TestOnly:
        spec, splits = "testonly", ("test",)

    with pytest.raises(BenchError, match="-o kid.split=NAME"):
        fidelity.default_split(TestOnly(), "kid")


EVENS = '''
import bench
from bench.core.dataset import Dataset
from bench_plugins.datasets import Digits


class Evens(Dataset):
    """The even digits of the digits data (a third party's dataset, from a -p file)."""

    name = "evens"
    splits = ("train", "all")
    spec = "evens"

    @classmethod
    def load(cls, arg):
        return cls()

    def _data(self, split):
        digits = Digits()
        return digits.data(split)[digits.labels(split) % 2 == 0]


@bench.hookimpl
def register_datasets(register):
    register(Evens)
'''


def test_a_dataset_from_a_plugin_file_is_a_reference(tmp_path, monkeypatch):
    """`-p` datasets reach the metrics: `-o fid.dataset=evens` measures against them."""
    from click.testing import CliRunner

    from bench.cli import cli

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    plugin = tmp_path / "evens.py"
    plugin.write_text(EVENS)
    out = tmp_path / "r"
    args = ["-p", str(plugin), "run", "--model", "digits-vp", "--sdes", "vp"]
    args += ["--predictors", "euler", "--correctors", "none", "--steps", "25", "--samples", "16"]
    args += ["--metrics", "fid", "-o", "fid.dataset=evens", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads("[" + ",".join((out / "rows.jsonl").read_text().splitlines()) + "]")
    assert row["status"] == "ok" and row["fid_ref"] == "evens:train"
    assert 500 < row["fid_ref_n"] < 1437 and math.isfinite(row["fid"])


def test_fid_and_kid_carry_the_datas_own_floor_at_n(registry, fake_model, digits):
    """The floor: n real reference images against the disjoint rest, over 5 draws."""
    fid = make_metric(registry, "fid", fake_model, 100)
    kid = make_metric(registry, "kid", fake_model, 100, subsets=5)
    test = digits.data("test")[:100]
    out = {**feed(fid, test), **feed(kid, test)}
    floor = fidelity.noise_floor(digits, 100, split="train", repeats=5)
    assert out["fid_floor"] == pytest.approx(sum(floor.fid) / 5, rel=1e-12)
    assert out["fid_floor_std"] > 0 and out["floor_draws"] == 5
    assert out["kid_floor"] == pytest.approx(sum(floor.kid) / 5, rel=1e-12)
    assert out["fid_floor_of"] == "digits:train split-half, n=100"
