"""A restricted reader for EDM network pickles: data only, embedded source never executed.

The training code of Karras et al. (2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", NeurIPS) saves its networks with a persistence mechanism: every network layer
is pickled as a call ``_reconstruct_persistent_obj(meta)`` whose ``meta`` holds the *text of the
Python module* that defines the class (``module_src``), the class name, and the object's
``__dict__`` (``state``). Loading such a file with :mod:`pickle` executes that text. This module
never does: :class:`EdmUnpickler` allows a short, fixed list of globals and turns each persistent
object and each ``ModuleDict`` into an inert :class:`ModuleRecord` that only holds data. Any other
global (``os.system``, ``builtins.eval``, ``copyreg._reconstructor`` …) is refused with a one-line
:class:`~bench.errors.BenchError` before it could be called. The module source is kept as a string
and never compiled, imported or executed.

:func:`read_edm_network` then extracts what is needed to rebuild the network from sde-bench's own
implementation: the preconditioner's class name and constructor arguments, its scalar attributes,
the inner UNet's class and arguments, and the state dict, walked from the records the way
:meth:`torch.nn.Module.state_dict` walks a live module.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.errors import BenchError

PRECOND_CLASSES = ("VPPrecond", "VEPrecond", "EDMPrecond")
"""Preconditioner classes whose pickles can be read (EDM's iDDPMPrecond is not supported)."""

MODEL_CLASSES = ("SongUNet", "DhariwalUNet")
"""UNet classes that sde-bench reimplements."""

_NUMERIC_KINDS = "biufc"  # numpy dtype kinds: bool, int, uint, float, complex


class ModuleRecord:
    """An inert stand-in for a pickled ``torch.nn.Module`` (or another pickled object).

    Attributes:
        state: The object's pickled ``__dict__`` (for a module: ``_parameters``, ``_buffers``,
            ``_modules``, ``_non_persistent_buffers_set``, hyperparameters …), as plain data.
    """

    class_name = "ModuleDict"

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state: dict[str, Any] = {} if state is None else state

    def __setstate__(self, state: Any) -> None:
        """Keep the BUILD state of a pickled container as data (called by the unpickler)."""
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state of type {type(state).__name__}")
        self.state = state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.class_name}>"


class PersistentRecord(ModuleRecord):
    """An inert stand-in for an object pickled by EDM's persistence (``meta`` kept as data).

    Attributes:
        class_name: Name of the class in the embedded module (e.g. ``"EDMPrecond"``).
        module_src: The embedded module source text. Kept for inspection only: it is never
            compiled, imported or executed.
        version: The persistence format version (6 for the public EDM pickles).
        state: The object's pickled ``__dict__``.
    """

    def __init__(self, class_name: str, module_src: str, version: int, state: dict) -> None:
        super().__init__(state)
        self.class_name = class_name
        self.module_src = module_src
        self.version = version


def _persistent_record(meta: Any) -> PersistentRecord:
    """Replacement for EDM's ``_reconstruct_persistent_obj``: records ``meta``, runs nothing."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("malformed persistent-object record (type is not 'class')")
    class_name, src, state = meta.get("class_name"), meta.get("module_src"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(src, str) or not isinstance(state, dict):
        raise pickle.UnpicklingError("malformed persistent-object record")
    return PersistentRecord(class_name, src, meta.get("version"), state)


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """``numpy.dtype`` for a type string only (what pickled numpy scalars reference)."""
    if not isinstance(spec, str):
        raise pickle.UnpicklingError("numpy.dtype is only allowed with a type string")
    return np.dtype(spec)


def _numpy_scalar(dtype: Any, data: Any = None) -> bool | int | float | complex:
    """A pickled numpy scalar of a numeric dtype, decoded to the Python value."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS:
        raise pickle.UnpicklingError(f"numpy scalar of non-numeric dtype {dtype!r} refused")
    if isinstance(data, str):  # protocol-0/1 pickles store the bytes as a latin-1 string
        data = data.encode("latin-1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("malformed numpy scalar")
    return np.frombuffer(data, dtype=dtype)[0].item()


def _no_hooks(hooks: Any) -> None:
    if hooks is not None and (not isinstance(hooks, dict) or hooks):
        raise pickle.UnpicklingError("tensors with backward hooks are refused")


def _rebuild_tensor(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, *meta: Any
) -> torch.Tensor:
    """torch's ``_rebuild_tensor_v2`` for a real storage and no hooks."""
    if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    _no_hooks(hooks)
    return torch._utils._rebuild_tensor_v2(
        storage, offset, size, stride, requires_grad, hooks, *meta
    )


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any) -> torch.nn.Parameter:
    """torch's ``_rebuild_parameter`` for a tensor and no hooks."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    _no_hooks(hooks)
    return torch._utils._rebuild_parameter(data, bool(requires_grad), OrderedDict())


class EdmUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that only resolves the globals an EDM network pickle needs.

    Allowed: ``collections.OrderedDict``, ``builtins.set``/``frozenset``, ``numpy.dtype`` (type
    strings), numeric numpy scalars (``numpy._core.multiarray.scalar`` and the numpy-1 spelling
    ``numpy.core.multiarray.scalar``, decoded to Python numbers), torch's tensor and parameter
    rebuild functions, ``torch.storage._load_from_bytes`` (each blob read with
    ``torch.load(weights_only=True)``), ``torch.nn.modules.container.ModuleDict`` and EDM's
    ``torch_utils.persistence._reconstruct_persistent_obj`` (both mapped to inert records).
    Everything else raises a one-line :class:`~bench.errors.BenchError` naming the global and
    the file.

    Args:
        file: A binary file object positioned at the pickle.
        source: The file name used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source
        self._allowed: dict[tuple[str, str], Callable[..., Any] | type] = {
            ("collections", "OrderedDict"): OrderedDict,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("numpy", "dtype"): _numpy_dtype,
            ("numpy._core.multiarray", "scalar"): _numpy_scalar,
            ("numpy.core.multiarray", "scalar"): _numpy_scalar,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch.storage", "_load_from_bytes"): self._load_storage,
            ("torch.nn.modules.container", "ModuleDict"): ModuleRecord,
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
        }

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; refuse every other one (nothing has been called)."""
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise BenchError(
                f"{self.source}: refused to load: the pickle references the global "
                f"{module}.{name}, which an EDM network pickle does not need; "
                "nothing in it was run"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids do not occur in EDM network pickles."""
        raise BenchError(f"{self.source}: refused to load: unexpected persistent id in the pickle")

    def _load_storage(self, blob: Any) -> Any:
        """One tensor storage, a nested ``torch.save`` stream read by torch's safe unpickler."""
        if not isinstance(blob, bytes | bytearray):
            raise pickle.UnpicklingError("storage blob is not bytes")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # legacy-format notices are noise here
                storage = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            raise BenchError(
                f"{self.source}: refused to load a tensor storage ({_one_line(exc)})"
            ) from None
        if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
            raise BenchError(f"{self.source}: a tensor blob does not hold a storage")
        return storage


def _one_line(exc: BaseException) -> str:
    """The most telling line of an exception message, whitespace collapsed."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line
    return lines[0] if lines else type(exc).__name__


def unpickle_edm(path: str | os.PathLike[str]) -> Any:
    """Unpickle an EDM network pickle with :class:`EdmUnpickler` (inert records, no code run).

    Args:
        path: The ``network-snapshot-*.pkl`` file.

    Returns:
        The unpickled object (for EDM: a dict with ``ema``, ``loss_fn``, ``augment_pipe``,
        ``dataset_kwargs``), with every persistent object as a :class:`PersistentRecord`.

    Raises:
        BenchError: One line, if the file is missing, unreadable, truncated or refused.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"EDM network pickle {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            return EdmUnpickler(f, str(path)).load()
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - garbage input may fail in many ways
        raise BenchError(
            f"{path}: not a readable EDM network pickle (corrupt or truncated?): "
            f"{type(exc).__name__}: {_one_line(exc)}"
        ) from None


@dataclass(frozen=True)
class EdmNetworkRecord:
    """What :func:`read_edm_network` extracts from an EDM pickle's ``ema`` network.

    Attributes:
        path: The pickle file.
        precond_class: Preconditioner class name (``VPPrecond``, ``VEPrecond``, ``EDMPrecond``).
        precond_args: Its positional constructor arguments (``_init_args``).
        precond_kwargs: Its keyword constructor arguments (``_init_kwargs``), including
            ``model_type`` and the UNet's keyword arguments.
        precond_attrs: Scalar attributes of the pickled preconditioner (``sigma_min``,
            ``sigma_max``, ``sigma_data``, ``beta_d``, ``use_fp16``, ``label_dim`` …).
        model_class: The inner UNet's class name (``SongUNet`` or ``DhariwalUNet``).
        model_kwargs: The inner UNet's keyword constructor arguments.
        state_dict: The network's state dict, in ``state_dict()`` order.
        top_level_keys: Keys of the pickled dict (``ema``, ``loss_fn`` …).
    """

    path: Path
    precond_class: str
    precond_args: tuple[Any, ...]
    precond_kwargs: dict[str, Any]
    precond_attrs: dict[str, Any]
    model_class: str
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    top_level_keys: tuple[str, ...]


def read_edm_network(path: str | os.PathLike[str]) -> EdmNetworkRecord:
    """Read the ``ema`` network of an EDM pickle as data (see :class:`EdmUnpickler`).

    Args:
        path: The pickle file.

    Returns:
        The constructor arguments, attributes and state dict of the network.

    Raises:
        BenchError: One line, if the file cannot be read safely, lacks ``ema``, or holds a
            preconditioner or UNet class that sde-bench does not implement.
    """
    path = Path(path)
    root = unpickle_edm(path)
    if not isinstance(root, dict) or "ema" not in root:
        raise BenchError(f"{path}: not an EDM network pickle (no 'ema' network at the top level)")
    ema = root["ema"]
    precond = _expect_class(ema, PRECOND_CLASSES, "preconditioner 'ema'", path)
    model = _expect_class(ema.state.get("_modules", {}).get("model"), MODEL_CLASSES, "UNet", path)
    return EdmNetworkRecord(
        path=path,
        precond_class=precond,
        precond_args=_init_args(ema, path),
        precond_kwargs=_init_kwargs(ema, path),
        precond_attrs=_scalar_attributes(ema.state),
        model_class=model,
        model_kwargs=_init_kwargs(ema.state["_modules"]["model"], path),
        state_dict=record_state_dict(ema, path),
        top_level_keys=tuple(str(k) for k in root),
    )


def _expect_class(record: Any, known: tuple[str, ...], what: str, path: Path) -> str:
    if not isinstance(record, PersistentRecord):
        raise BenchError(f"{path}: the {what} is not a persistent EDM object")
    if record.class_name not in known:
        raise BenchError(
            f"{path}: unsupported {what} class {record.class_name!r} "
            f"(sde-bench implements {', '.join(known)})"
        )
    return record.class_name


def _init_args(record: PersistentRecord, path: Path) -> tuple[Any, ...]:
    args = record.state.get("_init_args", ())
    if not isinstance(args, tuple | list):
        raise BenchError(f"{path}: malformed constructor arguments of {record.class_name}")
    return tuple(args)


def _init_kwargs(record: PersistentRecord, path: Path) -> dict[str, Any]:
    kwargs = record.state.get("_init_kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise BenchError(f"{path}: malformed constructor arguments of {record.class_name}")
    return dict(kwargs)


def _scalar_attributes(state: dict[str, Any]) -> dict[str, Any]:
    """Public attributes with plain scalar values (hyperparameters such as ``sigma_min``)."""
    return {
        k: v
        for k, v in state.items()
        if not k.startswith("_") and k != "training" and isinstance(v, bool | int | float | str)
    }


def record_state_dict(record: ModuleRecord, path: str | os.PathLike[str] = "") -> dict[str, Any]:
    """The state dict of a module record, as :meth:`torch.nn.Module.state_dict` would list it.

    Walks ``_parameters``, then ``_buffers`` minus ``_non_persistent_buffers_set``, then
    ``_modules`` recursively; ``None`` entries are skipped.

    Args:
        record: The root record (e.g. the ``ema`` preconditioner).
        path: The file name used in error messages.

    Returns:
        An ordered mapping from dotted key to tensor.
    """
    out: dict[str, torch.Tensor] = OrderedDict()
    _collect(record, "", out, str(path))
    return out


def _collect(record: ModuleRecord, prefix: str, out: dict[str, torch.Tensor], path: str) -> None:
    state = record.state
    skip = state.get("_non_persistent_buffers_set", set())
    for group in ("_parameters", "_buffers"):
        for name, value in _mapping(state, group, prefix, path).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise BenchError(f"{path}: {prefix}{name} is not a tensor")
            out[prefix + name] = value.detach()
    for name, child in _mapping(state, "_modules", prefix, path).items():
        if child is None:
            continue
        if not isinstance(child, ModuleRecord):
            raise BenchError(f"{path}: sub-module {prefix}{name} is not a module record")
        _collect(child, f"{prefix}{name}.", out, path)


def _mapping(state: dict[str, Any], group: str, prefix: str, path: str) -> dict[str, Any]:
    value = state.get(group, {})
    if not isinstance(value, dict):
        raise BenchError(f"{path}: malformed {group} of module {prefix.rstrip('.') or '(root)'}")
    return value
