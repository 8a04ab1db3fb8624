"""The metric: a streaming accumulator fed each batch of samples."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from bench.core.dataset import Dataset
from bench.core.model import ScoreModel
from bench.core.options import NoOptions, default_options


@dataclass(frozen=True)
class MetricContext:
    """What a metric may use besides its model, n and options (rather than module globals).

    Attributes:
        registry: the command's component registry (``-p`` plugins included).
        device: where the metric computes (feature extractors run here).
        cache_dir: the suite's cache folder (``$BENCH_CACHE_DIR``), e.g. for reference statistics.
        sde: the cell's SDE, for metrics that depend on it (e.g. a likelihood).
    """

    registry: Any
    device: torch.device
    cache_dir: Path
    sde: Any = None
    """The cell's SDE (``None`` before any cell, e.g. in :meth:`Metric.prepare`)."""
    seed: int | None = None
    """The cell's seed (what its prior noise x_T is a function of)."""
    conditioning: Any = None
    """A conditional model's cell: its labels and guidance (:class:`bench.core.labels.Conditioning`);
    ``None`` for an unconditional model."""

    def dataset(self, spec: str) -> Dataset:
        """The dataset ``NAME[:ARG]`` from the registry (e.g. a FID/KID reference set)."""
        name, _, arg = spec.partition(":")
        return self.registry.get("datasets", name).obj.load(arg or None)


class Metric(abc.ABC):
    """A streaming metric: ``update(batch)`` per batch of data-space samples, then ``compute()``.

    ``compute`` returns named values; the runner adds ``<name>_n`` (the number of samples).
    ``higher_is_better`` gives the direction of the column named like the metric;
    ``column_directions`` may name others (``"lower"``, ``"higher"`` or ``"info"``: not gated).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    higher_is_better: ClassVar[bool] = False
    column_directions: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        model: ScoreModel,
        n: int,
        *,
        device: torch.device,
        options: Any = None,
        context: MetricContext | None = None,
    ) -> None:
        self.model = model
        self.n = n
        self.device = device
        self.options = default_options(type(self), options)
        self.context = context

    @classmethod
    def supports(cls, model: ScoreModel) -> None:
        """Raise :class:`bench.Unsupported` if this metric cannot evaluate ``model``."""

    @classmethod
    def prepare(cls, model: ScoreModel, options: Any, context: MetricContext) -> None:
        """Check prerequisites once, before any cell runs (raise :class:`bench.BenchError`).

        For example a feature extractor whose weights file is missing: the user gets one clear
        error before any work starts, not a failure in every cell.
        """

    @abc.abstractmethod
    def update(self, samples: Tensor) -> None:
        """Accumulate one batch of data-space samples."""

    def update_at(self, samples: Tensor, start: int) -> None:
        """Accumulate a batch whose first sample has index ``start`` in the cell.

        The runner calls this; the default forgets the index and calls :meth:`update`. Under
        torchrun a rank sees only its shard's batches, so a metric whose result depends on the
        samples' order (a random subset, a shuffle) overrides this to key on the index.
        """
        self.update(samples)

    def state(self) -> Any:
        """What :meth:`update` accumulated, picklable (CPU tensors, numbers), so that the ranks
        of a torchrun sweep can be combined; ``None`` (the default) means the metric cannot
        run under torchrun, and such a run is refused before any work starts."""
        return None

    def merge(self, states: list[Any]) -> None:
        """Make this metric hold the combination of ``states`` — every rank's :meth:`state`,
        in rank order, this rank's included — before :meth:`compute` (rank 0 only). The result
        must equal what one process feeding every batch would compute, to float rounding."""
        raise NotImplementedError(f"metric {self.name!r} cannot merge states across ranks")

    @classmethod
    def mergeable(cls) -> bool:
        """Whether the metric implements :meth:`state` and :meth:`merge` (torchrun runs)."""
        return cls.state is not Metric.state and cls.merge is not Metric.merge

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric values over everything accumulated."""
