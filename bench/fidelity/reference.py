"""Reference statistics of a dataset split under an extractor, cached on disk, and what a
metric column is measured against (:func:`setup`)."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.fidelity.cache import COUNTS, fidelity_cache
from bench.fidelity.extractors import (
    WEIGHTS_ENV,
    ExtractorSpec,
    Featurizer,
    _extractors,
    resolve_extractor,
)

CACHE_VERSION = 1
REFERENCE_SEED = 2021
"""Seed of the subset drawn when a reference uses fewer images (``ref_n``) than its split has."""


# -- reference statistics, cached on disk ----------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """A dataset split's features and Gaussian statistics under one extractor."""

    key: str
    fields: dict[str, Any]
    features: Tensor  # (n, D) float32
    mu: Tensor  # (D,) float64
    sigma: Tensor  # (D, D) float64

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    def statistics(self) -> dict[str, Any]:
        """torch-fidelity's ``{"mu", "sigma"}`` (numpy, float64)."""
        return {"mu": self.mu.numpy(), "sigma": self.sigma.numpy()}


def reference_fields(dataset: Any, split: str, spec: ExtractorSpec, n: int) -> dict[str, Any]:
    """What a reference depends on: the cache key's ingredients."""
    return {
        "version": CACHE_VERSION,
        "content_sha256": dataset.content_hash(split),
        "split": split,
        "extractor": spec.name,
        "weights_sha256": spec.sha256,
        "layer": spec.fid_layer,
        "n": n,
        "subset_seed": REFERENCE_SEED,
    }


def reference_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


_references: collections.OrderedDict[str, Reference] = collections.OrderedDict()


def reference(
    dataset: Any, split: str, spec: ExtractorSpec, n: int | None, device: torch.device
) -> Reference:
    """Reference features and statistics of ``n`` images of a split (all if ``None``).

    Looked up in memory, then in ``$BENCH_CACHE_DIR/fidelity/ref-<key>.safetensors``, and
    computed (and written atomically) only on a miss, which :data:`COUNTS` records.
    """
    images = dataset.data(split)
    n = _reference_n(images.shape[0], n, f"{dataset.spec}:{split}")
    fields = {"dataset": dataset.spec, **reference_fields(dataset, split, spec, n)}
    key = reference_key({k: v for k, v in fields.items() if k != "dataset"})
    if key in _references:
        return _references[key]
    path = fidelity_cache() / f"ref-{key[:40]}.safetensors"
    ref = _read_reference(path, key, fields)
    if ref is None:
        ref = _compute_reference(reference_images(images, n), spec, device, key, fields)
        _write_reference(path, ref)
    else:
        COUNTS["reference_disk_hit"] += 1
    _references[key] = ref
    while len(_references) > 4:
        _references.popitem(last=False)
    return ref


def _reference_n(available: int, n: int | None, what: str) -> int:
    if n is None:
        return available
    if not 2 <= n <= available:
        raise BenchError(f"reference size ref_n={n} is impossible: {what} has {available} images")
    return n


def reference_images(images: Tensor, n: int) -> Tensor:
    """All images, or a fixed random subset of ``n`` (seed :data:`REFERENCE_SEED`, in order)."""
    if n == images.shape[0]:
        return images
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    return images[torch.randperm(images.shape[0], generator=generator)[:n].sort().values]


def _compute_reference(
    images: Tensor, spec: ExtractorSpec, device: torch.device, key: str, fields: dict[str, Any]
) -> Reference:
    from bench.fidelity.gaussian import GaussianStats

    COUNTS["reference"] += 1
    featurize = Featurizer(spec, device)
    stats = GaussianStats()
    chunks = []
    for start in range(0, images.shape[0], 1000):
        f = featurize(images[start : start + 1000])[spec.fid_layer]
        stats.update(f)
        chunks.append(f)
    s = stats.statistics()
    return Reference(
        key, fields, torch.cat(chunks), torch.from_numpy(s["mu"]), torch.from_numpy(s["sigma"])
    )


def _read_reference(path: Path, key: str, fields: dict[str, Any]) -> Reference | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            tensors = {k: f.get_tensor(k) for k in ("features", "mu", "sigma")}
    except Exception:  # noqa: BLE001 (a corrupt cache file is recomputed)
        return None
    return Reference(key, fields, tensors["features"], tensors["mu"], tensors["sigma"])


def _write_reference(path: Path, ref: Reference) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ref-", suffix=".tmp")
    os.close(fd)
    try:
        tensors = {
            "features": ref.features.contiguous(),
            "mu": ref.mu.contiguous(),
            "sigma": ref.sigma.contiguous(),
        }
        save_file(tensors, tmp, metadata={"key": ref.key, "fields": json.dumps(ref.fields)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def clear_memory_caches() -> None:
    """Forget in-process references, extractors and memos (the disk cache stays)."""
    _setups.clear()
    _references.clear()
    _extractors.clear()
    Featurizer._last = None


# -- datasets --------------------------------------------------------------------------------------
def resolve_dataset(spec: str, registry: Any) -> Any:
    """A :class:`bench.Dataset` from ``NAME[:ARG]``, looked up in ``registry``."""
    name, _, arg = spec.partition(":")
    return registry.get("datasets", name).obj.load(arg or None)


# -- what one metric column is measured against ---------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """An extractor and (for FID/KID) a reference: everything a metric needs besides samples."""

    spec: ExtractorSpec
    reference: Reference | None = None
    ref_label: str = ""
    dataset: Any = None
    split: str | None = None


_setups: dict[tuple[Any, ...], Setup] = {}


def setup(
    model: Any,
    *,
    extractor: str,
    weights: str | None,
    dataset: str | None = None,
    split: str | None = None,
    ref_n: int | None = None,
    device: torch.device,
    datasets: Callable[[str], Any],
    with_reference: bool = True,
    metric: str = "fid",
) -> Setup:
    """Resolve the extractor and compute or load the reference once (memoised per process).

    ``dataset`` defaults to the model's own (``model.dataset``), resolved with ``datasets``
    (e.g. :meth:`bench.core.metric.MetricContext.dataset`); ``split`` to :func:`default_split`
    of it. Every problem (weights missing, no dataset, shapes that differ) is a
    :class:`BenchError` naming the fix.
    """
    spec_text = dataset or getattr(model, "dataset", None)
    key = (
        extractor,
        weights,
        os.environ.get(WEIGHTS_ENV),
        spec_text,
        _signature(spec_text),
        split,
        ref_n,
        str(device),
        with_reference,
    )
    if key in _setups:
        return _setups[key]
    spec = resolve_extractor(extractor, weights)
    if not with_reference:
        return _setups.setdefault(key, Setup(spec))
    if not spec_text:
        raise BenchError(
            f"metric {metric!r}: model {getattr(model, 'spec', model)!r} declares no "
            f"reference dataset; pass -o {metric}.dataset=NAME[:ARG]"
        )
    data = datasets(spec_text)
    split = split or default_split(data, metric)
    shape = tuple(data.data(split).shape[1:])
    if shape != tuple(model.data_shape):
        raise BenchError(
            f"metric {metric!r}: reference {data.spec}:{split} holds {shape} images "
            f"but model {model.spec!r} makes {tuple(model.data_shape)}"
        )
    ref = reference(data, split, spec, ref_n, device)
    return _setups.setdefault(key, Setup(spec, ref, f"{data.spec}:{split}", data, split))


def default_split(dataset: Any, metric: str = "fid") -> str:
    """The default reference split: ``train`` if the dataset has one, else ``all``.

    The same rule ``bench train`` uses to pick its training data, so a model trained on
    ``folder:DIR`` or an ``npz:`` file of ``images`` (split ``all`` only) is measured against
    the data it learnt, as a digits model is against ``digits:train``.
    """
    splits = tuple(dataset.splits)
    for split in ("train", "all"):
        if split in splits:
            return split
    raise BenchError(
        f"metric {metric!r}: dataset {dataset.spec!r} has neither a 'train' nor an 'all' split "
        f"(splits: {', '.join(splits)}); pass -o {metric}.split=NAME"
    )


def _signature(spec: str | None) -> tuple[int, int] | None:
    """Size and mtime of a dataset spec's file argument, so an edited file is not memoised."""
    if not spec or ":" not in spec:
        return None
    path = Path(spec.partition(":")[2])
    if not path.exists():
        return None
    stats = [path.stat()] if path.is_file() else [p.stat() for p in path.iterdir()]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
