"""Metric values from features through torch-fidelity's own functions, and a bounded
reservoir of streamed features for KID."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.core.noise import splitmix64
from bench.errors import BenchError
from bench.fidelity.reference import REFERENCE_SEED

KID_MAX_SUBSET = 1000
KID_MAX_FEATURES = 10_000
"""How many sample features KID keeps at most (a uniform random subset beyond that)."""


# -- a bounded, uniform random subset of streamed features ----------------------------------------
class FeatureReservoir:
    """At most ``cap`` rows of a stream of (B, D) feature batches: all of them while they fit,
    then a uniform random subset of them (bottom-k sampling).

    Row ``i`` of the stream gets a priority u_i, a uniform number that is a hash of (seed, i),
    and the ``cap`` rows of lowest priority are kept: every row is held with probability
    cap / seen, and the subset depends on which rows were seen, not on the order or the batches
    they came in. So the shards of one stream that several ranks see merge (:meth:`merge`) into
    exactly the subset one process keeps. Up to ``cap`` rows the held features are exactly the
    stream, in order. Memory is about 2·cap × D whatever the stream's length.
    """

    def __init__(self, cap: int, seed: int) -> None:
        if cap < 1:
            raise ValueError(f"the reservoir needs room for at least one row, not {cap}")
        self.cap = cap
        self.seed = seed
        self.seen = 0
        self._rows: list[tuple[Tensor, Tensor, Tensor]] = []  # (index, priority, features)

    @property
    def held(self) -> int:
        """Rows held now (at most ``cap``)."""
        self._compact(self.cap)
        return sum(int(i.shape[0]) for i, _, _ in self._rows)

    def add(self, batch: Tensor, start: int | None = None) -> None:
        """Offer one (B, D) batch whose first row has stream index ``start`` (default: the rows
        seen so far, i.e. the batches arrive in order)."""
        start = self.seen if start is None else start
        index = torch.arange(start, start + batch.shape[0])
        self._rows.append((index, priorities(self.seed, index), batch.detach()))
        self.seen += int(batch.shape[0])
        self._compact(2 * self.cap)

    def _compact(self, limit: int) -> None:
        """Keep the ``cap`` lowest priorities once more than ``limit`` rows are held."""
        if sum(int(i.shape[0]) for i, _, _ in self._rows) <= limit:
            return
        index, priority, features = (torch.cat(parts) for parts in zip(*self._rows))
        keep = torch.topk(priority, self.cap, largest=False).indices
        self._rows = [(index[keep], priority[keep], features[keep])]

    def features(self) -> Tensor:
        """The held rows, (min(seen, cap), D), in stream order."""
        self._compact(self.cap)
        if not self._rows:
            return torch.empty(0)
        index, _, features = (torch.cat(parts) for parts in zip(*self._rows))
        return features[torch.argsort(index)]

    def state(self) -> tuple[int, list[tuple[Tensor, Tensor, Tensor]]]:
        """What was seen and what is held (for merging the ranks of a distributed run)."""
        self._compact(self.cap)
        return self.seen, self._rows

    def merge(self, states: list[tuple[int, list[tuple[Tensor, Tensor, Tensor]]]]) -> None:
        """Hold the union of several reservoirs' streams (their rows are disjoint)."""
        self.seen = sum(seen for seen, _ in states)
        self._rows = [row for _, rows in states for row in rows]
        self._compact(self.cap)


def priorities(seed: int, index: Tensor) -> Tensor:
    """Uniform numbers in [0, 1) that are a fixed function of (seed, index) (splitmix64)."""
    x = index.numpy().astype(np.uint64) + np.uint64(splitmix64(seed))
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return torch.from_numpy((x >> np.uint64(11)).astype(np.float64) * 2.0**-53)


# -- metric values through torch-fidelity ----------------------------------------------------------
def fid_from_stats(stats_1: dict[str, Any], stats_2: dict[str, Any]) -> float:
    """FID of two ``{"mu", "sigma"}`` fits (torch-fidelity's ``fid_statistics_to_metric``)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    cast = {k: v.astype("float64") for k, v in stats_1.items()}
    other = {k: v.astype("float64") for k, v in stats_2.items()}
    return float(fid_statistics_to_metric(cast, other, verbose=False)[KEY_METRIC_FID])


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
