"""EDM network pickles (Karras et al. 2022): read without running their code, and reproduced.

The reference vectors are tiny seeded networks saved by EDM's own training code, with inputs and
the outputs the original networks computed in float32 and float64; the tests that need them skip
when they are absent.
"""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from bench_plugins.score_models.edm import EDMPrecond, load_edm, read_edm_network, unpickle_edm
from bench_plugins.score_models.edm import loader as edm_loader
from bench_plugins.score_models.edm.unpickler import ModuleRecord, PersistentRecord
from safetensors.torch import load_file

from bench.errors import BenchError
from tests.files import Exploit, fake_edm_persistence

CHECKPOINTS = Path(__file__).resolve().parents[2] / "shared" / "checkpoints"
FOLDERS = ["edm_vp_ddpmpp", "edm_ve_ncsnpp", "edm_edm_ddpmpp", "edm_edm_adm"]
KINDS = {
    "edm_vp_ddpmpp": "vp",
    "edm_ve_ncsnpp": "ve",
    "edm_edm_ddpmpp": "edm",
    "edm_edm_adm": "edm",
}
TOL32, TOL64 = 1e-4, 1e-9


def _folder(name: str) -> Path:
    folder = CHECKPOINTS / name
    if not (folder / "network.pkl").is_file():
        pytest.skip(f"shared test vectors not found at {folder}")
    return folder


@pytest.fixture(scope="module")
def reference():
    """Per folder: the float32 and float64 networks, the info dict and the vectors (cached)."""
    cache: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in cache:
            folder = _folder(name)
            net32, info = load_edm(folder / "network.pkl", dtype=torch.float32)
            net64, _ = load_edm(folder / "network.pkl", dtype=torch.float64)
            cache[name] = (net32, net64, info, load_file(folder / "vectors.safetensors"))
        return cache[name]

    return get


def _item_errors(ours: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """err_i = max|ours_i − ref_i| / max|ref_i| for each batch item."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    diff = (ours.double() - ref.double()).flatten(1).abs().amax(1)
    return (diff / ref.double().flatten(1).abs().amax(1)).tolist()


def _run(net: torch.nn.Module, x, sigma, labels=None) -> dict[str, torch.Tensor]:
    """D, and what the preconditioner passed to the UNet and got back."""
    seen: dict[str, torch.Tensor] = {}

    def hook(module, args, output):
        seen.update(x_in=args[0], c_noise=args[1], F=output)

    handle = net.model.register_forward_hook(hook)
    try:
        with torch.no_grad():
            seen["D"] = net(x, sigma, labels)
    finally:
        handle.remove()
    return seen


# ---------------------------------------------------------------------------- reproduction


@pytest.mark.parametrize("name", FOLDERS)
def test_float32_matches_reference(name, reference):
    net, _, _, v = reference(name)
    got = _run(net, v["x"], v["sigma"], v.get("class_labels"))
    for key, ref_key in (("D", "D"), ("F", "unet_F"), ("x_in", "unet_x_in")):
        assert max(_item_errors(got[key], v[ref_key])) <= TOL32, key
    # VPPrecond's c_noise is EDM's float32 expression, computed the same way (not log1p).
    assert max(_item_errors(got["c_noise"][:, None], v["unet_c_noise"][:, None])) <= 1e-6


@pytest.mark.parametrize("name", FOLDERS)
def test_float64_matches_reference(name, reference):
    _, net, _, v = reference(name)
    labels = v["class_labels"].double() if "class_labels" in v else None
    got = _run(net, v["x"].double(), v["sigma"].double(), labels)
    for key, ref_key in (("D", "D64"), ("F", "unet_F64"), ("x_in", "unet_x_in64")):
        assert max(_item_errors(got[key], v[ref_key])) <= TOL64, key
    assert max(_item_errors(got["c_noise"][:, None], v["unet_c_noise64"][:, None])) <= TOL64


def test_adm_class_labels(reference):
    net, _, info, v = reference("edm_edm_adm")
    assert info["label_dim"] == 10 and v["class_labels"].shape == (4, 10)
    with torch.no_grad():
        without = net(v["x"], v["sigma"])  # EDMPrecond replaces missing labels by zeros
        zeros = net(v["x"], v["sigma"], torch.zeros(4, 10))
    assert max(_item_errors(without, v["D_nolabels"])) <= TOL32
    assert torch.equal(without, zeros)
    assert max(_item_errors(v["D"], v["D_nolabels"])) > 1e-3  # the labels do matter here


@pytest.mark.parametrize("name", FOLDERS)
def test_structure_matches_the_pickle(name, reference):
    net, _, info, _ = reference(name)
    folder = _folder(name)
    structure = json.loads((folder / "structure.json").read_text())
    record = read_edm_network(folder / "network.pkl")
    listing = [
        [k, list(t.shape), str(t.dtype).removeprefix("torch.")]
        for k, t in record.state_dict.items()
    ]
    assert listing == structure["state_dict"]
    assert list(net.state_dict()) == [k for k, _, _ in structure["state_dict"]]
    for path, cls, _ in structure["persistent_modules [path, class, init_kwargs]"]:
        assert type(net.get_submodule(path)).__name__ == cls, path
    attrs = structure["precond_attributes (pickled object __dict__, not in state_dict)"]
    for key, value in attrs.items():
        assert getattr(net, key) == (float(value) if value == "inf" else value), key
    meta = json.loads((folder / "meta.json").read_text())
    for path, heads in meta["attention_heads_per_UNetBlock"]:
        assert net.get_submodule(path).num_heads == heads
    assert info["kind"] == KINDS[name] and info["num_parameters"] == meta["num_parameters"]
    assert (info["img_resolution"], info["img_channels"]) == (16, 3)
    assert info["sigma_min"] == net.sigma_min and info["sigma_max"] == net.sigma_max
    assert (info["sigma_data"] == 0.5) == (KINDS[name] == "edm")


def test_records_are_inert_data():
    record = unpickle_edm(_folder("edm_ve_ncsnpp") / "network.pkl")
    assert set(record) == {"ema", "loss_fn", "augment_pipe", "dataset_kwargs"}
    ema = record["ema"]
    assert isinstance(ema, PersistentRecord) and ema.class_name == "VEPrecond"
    assert ema.module_src.startswith("# training.networks: source omitted")
    assert isinstance(ema.state["_modules"]["model"].state["_modules"]["enc"], ModuleRecord)
    assert record["loss_fn"].class_name == "VELoss"


def test_fp16_unet_path(reference):
    """``use_fp16`` is CPU-inert in the preconditioner; the UNet itself runs in float16."""
    net, _, info, v = reference("edm_edm_adm")
    assert info["use_fp16"]
    with torch.no_grad():
        forced = net(v["x"], v["sigma"], v["class_labels"], force_fp32=True)
        half = net.model(v["unet_x_in"].half(), v["unet_c_noise"], v["class_labels"])
    assert torch.equal(forced, net(v["x"], v["sigma"], v["class_labels"]))
    assert half.dtype == torch.float16
    assert max(_item_errors(half.float(), v["unet_F"])) <= 1e-2


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(embedding_type="fourier", encoder_type="skip", decoder_type="skip", label_dim=3),
        dict(model_type="DhariwalUNet", model_channels=16, channel_mult=[1, 4], augment_dim=9),
    ],
)
def test_other_configurations_run_in_float64(kwargs):
    """Options the reference vectors do not cover: progressive skip paths, SongUNet labels."""
    torch.manual_seed(0)
    defaults = dict(model_type="SongUNet", model_channels=8, channel_mult=[1, 2], num_blocks=1)
    net = EDMPrecond(8, 3, attn_resolutions=[4], **{**defaults, **kwargs}).double().eval()
    names = set(net.state_dict())
    if kwargs.get("encoder_type") == "skip":
        assert {"model.enc.4x4_aux_skip.weight", "model.dec.8x8_aux_up.resample_filter"} <= names
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    labels = torch.eye(3, dtype=torch.float64)[:2] if kwargs.get("label_dim") else None
    extra = (
        {"augment_labels": torch.randn(2, 9, dtype=torch.float64)}
        if "augment_dim" in kwargs
        else {}
    )
    with torch.no_grad():
        out = net(x, torch.tensor([0.5, 3.0], dtype=torch.float64), labels, **extra)
    assert out.shape == x.shape and out.dtype == torch.float64 and out.isfinite().all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="use_fp16 only applies on CUDA")
def test_use_fp16_on_cuda():
    net, _ = load_edm(_folder("edm_edm_adm") / "network.pkl", device="cuda")
    v = {k: t.cuda() for k, t in load_file(_folder("edm_edm_adm") / "vectors.safetensors").items()}
    with torch.no_grad():
        out = net(v["x"], v["sigma"], v["class_labels"])
    assert out.dtype == torch.float32
    assert max(_item_errors(out.cpu(), v["D"].cpu())) <= 1e-2


# ---------------------------------------------------------------------------- safety


class _Persistent:
    """Pickles as ``_reconstruct_persistent_obj(meta)``, like an EDM persistent object."""

    def __init__(self, reconstruct, meta: dict) -> None:
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return (self.reconstruct, (self.meta,))


def _record(reconstruct, class_name: str, src: str, modules: dict | None = None) -> _Persistent:
    state = {"_parameters": {}, "_buffers": {}, "_modules": modules or {}, "_init_kwargs": {}}
    meta = dict(type="class", version=6, module_src=src, class_name=class_name, state=state)
    return _Persistent(reconstruct, meta)


def _one_line_error(path: Path, match: str) -> str:
    with pytest.raises(BenchError, match=match) as info:
        load_edm(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_embedded_module_source_is_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass EDMPrecond: pass\n"
    reconstruct = fake_edm_persistence(monkeypatch)
    unet = _record(reconstruct, "DhariwalUNet", src)
    path = tmp_path / "network.pkl"
    path.write_bytes(
        pickle.dumps({"ema": _record(reconstruct, "EDMPrecond", src, {"model": unet})})
    )
    monkeypatch.delitem(sys.modules, "torch_utils.persistence")

    record = unpickle_edm(path)["ema"]
    assert record.module_src == src and record.class_name == "EDMPrecond"
    _one_line_error(path, "cannot build EDMPrecond/DhariwalUNet")  # no constructor arguments
    assert not marker.exists()
    exec(compile(src, "<control>", "exec"), {})  # control: the text really would do it
    assert marker.exists()


def test_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "network.pkl"
    path.write_bytes(pickle.dumps({"ema": Exploit(marker)}))
    message = _one_line_error(path, r"refused to load: .*\b(os|posix)\.system\b")
    assert str(path) in message
    assert not marker.exists()


def test_code_inside_a_tensor_blob_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Blob:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (pickle.dumps(Exploit(marker), protocol=2),))

    path = tmp_path / "network.pkl"
    path.write_bytes(pickle.dumps({"ema": Blob()}))
    _one_line_error(path, "refused to load a tensor storage")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["builtins\neval", "builtins\ngetattr", "copyreg\n_reconstructor"])
def test_other_globals_are_refused(tmp_path, name):
    path = tmp_path / "network.pkl"
    path.write_bytes(b"\x80\x02c" + name.encode() + b"\nX\x01\x00\x00\x001\x85R.")
    _one_line_error(
        path, "refused to load: the pickle references the global " + name.replace("\n", ".")
    )


def test_broken_files_give_one_line(tmp_path):
    original = (_folder("edm_vp_ddpmpp") / "network.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(original[: len(original) // 2])
    _one_line_error(tmp_path / "cut.pkl", "corrupt or truncated")
    (tmp_path / "junk.pkl").write_bytes(b"\x00garbage" * 100)
    _one_line_error(tmp_path / "junk.pkl", "corrupt or truncated")
    (tmp_path / "empty.pkl").write_bytes(b"")
    _one_line_error(tmp_path / "empty.pkl", "corrupt or truncated")
    _one_line_error(tmp_path / "missing.pkl", "does not exist")


def test_wrong_contents_give_one_line(tmp_path, monkeypatch):
    (tmp_path / "no_ema.pkl").write_bytes(pickle.dumps({"net": 1}))
    _one_line_error(tmp_path / "no_ema.pkl", "no 'ema' network")
    reconstruct = fake_edm_persistence(monkeypatch)
    for cls, unet, match in [
        ("iDDPMPrecond", "DhariwalUNet", "unsupported preconditioner 'ema' class 'iDDPMPrecond'"),
        ("EDMPrecond", "StyleGAN", "unsupported UNet class 'StyleGAN'"),
    ]:
        root = {"ema": _record(reconstruct, cls, "#", {"model": _record(reconstruct, unet, "#")})}
        (tmp_path / f"{cls}.pkl").write_bytes(pickle.dumps(root))
        _one_line_error(tmp_path / f"{cls}.pkl", match)


def test_state_dict_misfit_names_the_tensors(monkeypatch):
    record = read_edm_network(_folder("edm_edm_ddpmpp") / "network.pkl")
    state = dict(record.state_dict)
    del state["model.map_layer0.bias"]
    state["model.extra.weight"] = torch.zeros(1)
    state["model.map_layer1.weight"] = torch.zeros(3, 3)
    monkeypatch.setattr(edm_loader, "read_edm_network", lambda p: replace(record, state_dict=state))
    message = _one_line_error(record.path, "do not fit")
    for key in ("missing: model.map_layer0.bias", "unexpected: model.extra.weight"):
        assert key in message
    assert "wrong shape: model.map_layer1.weight" in message
