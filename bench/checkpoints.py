"""Safe checkpoint reading: safetensors, or ``torch.load(weights_only=True)``; never a plain pickle."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def load_state_dict(path: str | os.PathLike[str], what: str = "weights") -> dict[str, Any]:
    """Tensors of a weights file; a one-line :class:`BenchError` for anything unsafe or broken.

    ``.safetensors`` files are read with safetensors. PyTorch files are read with
    ``torch.load(weights_only=True)``, which refuses pickled code and arbitrary objects; the
    refusal never suggests the unsafe load. Every value must be a tensor.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} file {str(path)!r} does not exist")
    if path.suffix in SAFETENSORS_SUFFIXES:
        state = _read_safetensors(path, what)
    elif path.suffix in TORCH_SUFFIXES:
        state = _read_torch(path, what)
    else:
        raise BenchError(
            f"{path}: unknown {what} format {path.suffix!r}; use .safetensors "
            f"(or a PyTorch state dict {', '.join(TORCH_SUFFIXES)})"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def _read_safetensors(path: Path, what: str) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BenchError(
            f"{path}: not a valid safetensors {what} file (corrupt or truncated?): {_first(exc)}"
        ) from None


def _read_torch(path: Path, what: str) -> Any:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": noise here
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets one clear line
        text = str(exc)
        if "Weights only load failed" in text:  # the safe unpickler stopped: nothing was run
            raise BenchError(
                f"{path}: refused to load: the {what} file is not plain tensors (it pickles "
                f"other objects or code, or it is damaged); nothing in it was run "
                f"({_unpickler_detail(text)})"
            ) from None
        raise BenchError(
            f"{path}: not a readable PyTorch {what} file (corrupt or truncated?): {_first(exc)}"
        ) from None


def _unpickler_detail(text: str) -> str:
    """The one informative line of torch's weights-only refusal (what it would not load)."""
    lines = [" ".join(ln.split()) for ln in text.splitlines() if ln.strip()]
    for key in ("GLOBAL", "Unsupported"):
        for line in lines:
            if key in line:
                return line
    return "rejected by the weights-only unpickler"


def _first(exc: BaseException) -> str:
    """The first sentence of an exception's message (library messages run to paragraphs)."""
    text = " ".join(str(exc).split())
    head = text.split(". ")[0].rstrip(".")
    return head if " " in head else f"{type(exc).__name__}: {head}".rstrip(": ")


def read_json(path: str | os.PathLike[str], what: str = "metadata") -> dict[str, Any]:
    """A JSON object from disk: parsed, never evaluated; a clear error if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path}: unreadable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: {what} must be a JSON object")
    return data


def load_into(module: Any, state: dict[str, Any], source: str, what: str = "model") -> None:
    """``module.load_state_dict(state, strict=True)``; missing, unexpected or wrongly shaped
    tensors are one :class:`BenchError` naming the first few of each."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if missing or extra or wrong:
        detail = "; ".join(
            f"{kind}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
            for kind, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if keys
        )
        raise BenchError(f"{source}: weights do not fit the {what} ({detail})")
    module.load_state_dict(state, strict=True)


def state_sha256(state: dict[str, Any]) -> str:
    """sha256 of a state dict as loaded: every name, dtype, shape and the raw bytes, in order.

    Args:
        state: the tensors, e.g. ``module.state_dict()`` before any dtype conversion.

    Returns:
        The hex digest; equal for equal tensors whatever file they came from.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|".encode())
        digest.update(f"{list(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
