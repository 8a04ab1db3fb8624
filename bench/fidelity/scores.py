"""Metric values from features through torch-fidelity's own functions, and a bounded
reservoir of streamed features for KID."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.fidelity.reference import REFERENCE_SEED

KID_MAX_SUBSET = 1000
KID_MAX_FEATURES = 10_000
"""How many sample features KID keeps at most (a uniform random subset beyond that)."""


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
