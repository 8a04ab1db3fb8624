"""Safe reading of score_sde training checkpoints, and networks built from their configs.

A score_sde checkpoint is ``torch.save({"optimizer", "model", "ema", "step"})``: the model's
state dict (keys prefixed ``module.`` by ``DataParallel``) and the EMA (``decay``,
``num_updates``, ``shadow_params``: one tensor per trainable parameter, in
``named_parameters()`` order). Song et al. 2021 (App. H) evaluate and sample with the EMA weights,
so :func:`load_network` loads ``model`` and then overwrites every trainable parameter with its
shadow; the Gaussian Fourier projection ``W`` is not trainable and keeps its ``model`` value.

The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only, never
code. The released checkpoints also pickle a numpy float64 (the learning rate), so exactly the
numpy globals needed for that are allowed: the scalar reconstructor (under its numpy-2 name and
its numpy-1 name ``numpy.core.multiarray.scalar``), ``numpy.dtype`` and the float64 dtype class.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from bench_plugins.score_models.score_sde.configs import ScoreSdeConfig
from bench_plugins.score_models.score_sde.ddpm import DDPM
from bench_plugins.score_models.score_sde.ncsnpp import NCSNpp
from torch import nn

from bench.errors import BenchError

_PREFIX = "module."
_SHOWN = 3  # tensor names shown per kind in a misfit message


def build_network(config: ScoreSdeConfig) -> nn.Module:
    """A freshly initialised network for a config (NCSN++/DDPM++ or DDPM).

    Raises:
        BenchError: the network cannot be built with these values.
    """
    cls = {"ncsnpp": NCSNpp, "ddpm": DDPM}[config.model.name]
    try:
        return cls(config)
    except (ValueError, RuntimeError) as exc:
        raise BenchError(
            f"{config.name}: cannot build the {config.model.name} network: {exc}"
        ) from None


def _numpy_safe_globals() -> list[Any]:
    """The numpy objects a score_sde checkpoint may pickle (a float64 learning rate)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    allowed: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    float64_dtype = getattr(getattr(np, "dtypes", None), "Float64DType", None)
    return allowed + ([float64_dtype] if float64_dtype is not None else [])


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of a score_sde checkpoint, read safely.

    Args:
        path: the ``checkpoint_*.pth`` file.

    Returns:
        The checkpoint dict; ``model`` is a dict of tensors and ``ema["shadow_params"]`` a list
        of tensors.

    Raises:
        BenchError: a missing, unreadable or unsafe file (nothing in it is run), or one without
            a ``model`` state dict and an ``ema`` with ``shadow_params``.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"score_sde checkpoint {str(path)!r} does not exist")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_safe_globals()):
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BenchError(
            f"{path}: refused to load: the checkpoint pickles objects other than tensors and "
            f"plain data, or it is damaged; nothing in it was run ({_refusal(exc)})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise BenchError(
            f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {_first(exc)}"
        ) from None
    _check_layout(ckpt, path)
    return ckpt


def _check_layout(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict):
        raise BenchError(
            f"{path}: a score_sde checkpoint is a dict with 'model' and 'ema', "
            f"got {type(ckpt).__name__}"
        )
    missing = [k for k in ("model", "ema") if k not in ckpt]
    if missing:
        raise BenchError(
            f"{path}: not a score_sde checkpoint: no {' or '.join(map(repr, missing))} entry "
            f"(keys: {', '.join(map(str, list(ckpt)[:8]))})"
        )
    model = ckpt["model"]
    if not isinstance(model, Mapping) or not _all_tensors(model.values()):
        raise BenchError(f"{path}: 'model' is not a state dict of tensors")
    shadows = ckpt["ema"].get("shadow_params") if isinstance(ckpt["ema"], Mapping) else None
    if not isinstance(shadows, list | tuple) or not _all_tensors(shadows):
        raise BenchError(f"{path}: 'ema' has no list of tensors 'shadow_params'")


def _all_tensors(values: Iterable[Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in values)


def _refusal(exc: BaseException) -> str:
    """What the weights-only unpickler refused, without its advice to load unsafely."""
    for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return " ".join(line.split()).split(" was not an allowed global")[0].rstrip(".")
    return "rejected by the weights-only unpickler"


def _first(exc: BaseException) -> str:
    """The first sentence of an exception message, prefixed with its type."""
    text = " ".join(str(exc).split()).split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {text}".rstrip(": ")


def _names(keys: list[str]) -> str:
    more = f", … ({len(keys)} in all)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _shape(t: torch.Tensor | torch.Size) -> str:
    return "[" + ",".join(map(str, tuple(t.shape if isinstance(t, torch.Tensor) else t))) + "]"


def _check_fit(net: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """One :class:`BenchError` naming missing, unexpected and wrongly shaped tensors."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [
        f"{k} {_shape(state[k])} (expected {_shape(expected[k])})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    parts = [
        f"{kind}: {_names(keys)}"
        for kind, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
        if keys
    ]
    if parts:
        raise BenchError(f"{where} ({'; '.join(parts)})")


def _apply_ema(net: nn.Module, shadows: list[torch.Tensor], where: str) -> None:
    """Copy ``shadow_params`` onto the trainable parameters, in ``named_parameters()`` order."""
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if len(shadows) != len(trainable):
        raise BenchError(
            f"{where}: the EMA has {len(shadows)} shadow parameters, the network "
            f"{len(trainable)} trainable ones"
        )
    wrong = [
        f"{name} {_shape(s)} (expected {_shape(p)})"
        for (name, p), s in zip(trainable, shadows)
        if s.shape != p.shape
    ]
    if wrong:
        raise BenchError(f"{where}: EMA shadow parameters of the wrong shape: {_names(wrong)}")
    with torch.no_grad():
        for (_, p), s in zip(trainable, shadows):
            p.copy_(s)


def load_network(
    path: str | os.PathLike[str],
    config: ScoreSdeConfig,
    *,
    use_ema: bool = True,
    checkpoint: dict[str, Any] | None = None,
) -> nn.Module:
    """A network for ``config`` with the weights of a score_sde checkpoint, in eval mode.

    Args:
        path: the checkpoint file (read with :func:`read_checkpoint` unless ``checkpoint`` is
            given, in which case it only names the source in messages).
        config: the config the checkpoint was trained with.
        use_ema: overwrite the trainable parameters with the EMA shadows (as the paper's
            evaluation does); ``False`` keeps the raw training weights.
        checkpoint: an already-read checkpoint.

    Returns:
        The float32 network (call ``.double()`` for float64).

    Raises:
        BenchError: see :func:`read_checkpoint`; or tensors that do not fit the config (one line
            naming the first few missing, unexpected and wrongly shaped ones, with counts).
    """
    ckpt = read_checkpoint(path) if checkpoint is None else checkpoint
    if checkpoint is not None:
        _check_layout(checkpoint, Path(path))
    net = build_network(config)
    where = f"{path}: the checkpoint does not fit config {config.name!r}"
    state = {k.removeprefix(_PREFIX): v for k, v in ckpt["model"].items()}
    _check_fit(net, state, where)
    net.load_state_dict(state, strict=True)
    if use_ema:
        _apply_ema(net, list(ckpt["ema"]["shadow_params"]), where)
    return net.eval()
