"""Safe checkpoint reading: safetensors, or ``torch.load(weights_only=True)``; never a plain pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Tensors of a weights file; a clear :class:`BenchError` for anything unsafe or broken.

    ``.safetensors`` files are read with safetensors. PyTorch files are read with
    ``torch.load(weights_only=True)``, which refuses pickled code and arbitrary objects.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"weights file {str(path)!r} does not exist")
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise BenchError(
                f"{path}: not a valid safetensors file (corrupt or truncated?): {exc}"
            ) from None
    if path.suffix in TORCH_SUFFIXES:
        import pickle

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BenchError(
                f"{path}: refused to load: the file holds more than tensors and "
                f"would need an unsafe unpickle ({first})"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise BenchError(
                f"{path}: not a readable PyTorch file (corrupt or truncated?): {exc}"
            ) from None
        if not isinstance(state, dict):
            raise BenchError(
                f"{path}: expected a state dict of tensors, got {type(state).__name__}"
            )
        return state
    raise BenchError(
        f"{path}: unknown weights format {path.suffix!r}; use .safetensors "
        f"(or a PyTorch state dict {', '.join(TORCH_SUFFIXES)})"
    )


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


def load_into(module: Any, state: dict[str, Any], source: str) -> None:
    """``module.load_state_dict(state)`` with shape/key mismatches as one clear message."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:4]) if len(lines) > 1 else lines[0] if lines else ""
        raise BenchError(f"{source}: weights do not fit the model ({detail})") from None
