"""Build an EDM network (Karras et al. 2022) from a pickle, without running anything in it.

:func:`load_edm` reads the pickle with the restricted unpickler of :mod:`.unpickler`, constructs
sde-bench's own preconditioner and UNet from the pickled constructor arguments, and loads the
pickled state dict strictly. The source code embedded in the pickle is never executed.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

import torch
from bench_plugins.score_models.edm.precond import PRECONDS
from bench_plugins.score_models.edm.unpickler import EdmNetworkRecord, read_edm_network

from bench.checkpoints import load_into
from bench.errors import BenchError

_CHECKED_ATTRIBUTES = (
    "img_resolution",
    "img_channels",
    "label_dim",
    "use_fp16",
    "sigma_min",
    "sigma_max",
    "sigma_data",
    "beta_d",
    "beta_min",
    "M",
    "epsilon_t",
)
"""Preconditioner attributes compared between the rebuilt network and the pickle."""


def build_network(record: EdmNetworkRecord) -> torch.nn.Module:
    """sde-bench's preconditioner and UNet for a pickled network (weights not yet loaded).

    Args:
        record: What :func:`~.unpickler.read_edm_network` read.

    Returns:
        The preconditioner module, its UNet at ``.model``.

    Raises:
        BenchError: One line, if the constructor arguments are not accepted or do not describe
            the pickled UNet class.
    """
    cls = PRECONDS[record.precond_class]
    kwargs = dict(record.precond_kwargs)
    model_type = kwargs.get("model_type", _default_model_type(cls))
    if model_type != record.model_class:
        raise BenchError(
            f"{record.path}: model_type {model_type!r} disagrees with the pickled UNet class "
            f"{record.model_class!r}"
        )
    try:
        return cls(*record.precond_args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise BenchError(
            f"{record.path}: cannot build {record.precond_class}/{record.model_class} from the "
            f"pickled arguments ({' '.join(str(exc).split())})"
        ) from None


def _default_model_type(cls: type) -> str:
    return inspect.signature(cls).parameters["model_type"].default


def load_edm(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load the ``ema`` network of an EDM pickle into sde-bench's implementation.

    Args:
        path: An EDM ``network-snapshot-*.pkl`` (VPPrecond, VEPrecond or EDMPrecond around a
            SongUNet or DhariwalUNet).
        device: Where to put the network.
        dtype: Parameter dtype (float32, or float64 for a float64 reference run).

    Returns:
        ``(net, info)``: the preconditioner in eval mode with gradients off, computing
        ``net(x, sigma, class_labels=None)`` = D(x; σ); and a dict with ``kind`` (``"vp"``,
        ``"ve"``, ``"edm"``), ``precond``, ``model``, ``sigma_min``, ``sigma_max``, ``sigma_data``
        (``None`` unless EDM), ``label_dim``, ``img_resolution``, ``img_channels``, ``use_fp16``,
        ``num_parameters`` and ``path``.

    Raises:
        BenchError: One line, if the file is missing, unreadable or refused, if the network is
            not supported, or if its state dict does not fit (naming the missing, unexpected and
            wrongly shaped tensors).
    """
    record = read_edm_network(path)
    net = build_network(record)
    what = f"{record.precond_class}/{record.model_class} network"
    load_into(net, record.state_dict, str(record.path), what=what)
    _check_attributes(net, record)
    net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return net, _info(net, record)


def _check_attributes(net: torch.nn.Module, record: EdmNetworkRecord) -> None:
    """The rebuilt preconditioner's hyperparameters must equal the pickled ones."""
    for name in _CHECKED_ATTRIBUTES:
        if name not in record.precond_attrs or not hasattr(net, name):
            continue
        ours, theirs = getattr(net, name), record.precond_attrs[name]
        if ours != theirs and not (_is_nan(ours) and _is_nan(theirs)):
            raise BenchError(
                f"{record.path}: {record.precond_class}.{name} is {theirs!r} in the pickle but "
                f"{ours!r} from its constructor arguments"
            )


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _info(net: torch.nn.Module, record: EdmNetworkRecord) -> dict[str, Any]:
    return {
        "kind": net.kind,
        "precond": record.precond_class,
        "model": record.model_class,
        "sigma_min": float(net.sigma_min),
        "sigma_max": float(net.sigma_max),
        "sigma_data": float(net.sigma_data) if hasattr(net, "sigma_data") else None,
        "label_dim": int(net.label_dim),
        "img_resolution": int(net.img_resolution),
        "img_channels": int(net.img_channels),
        "use_fp16": bool(net.use_fp16),
        "num_parameters": sum(p.numel() for p in net.parameters()),
        "path": str(record.path),
    }
