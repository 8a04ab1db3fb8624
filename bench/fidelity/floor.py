"""The data's own FID/KID noise floor at a sample size (``bench fid-floor``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bench.errors import BenchError
from bench.fidelity.extractors import DIGITS, Featurizer, resolve_extractor
from bench.fidelity.scores import fid_from_stats, kid_from_features, kid_subset_size


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


_floors: dict[tuple[Any, ...], Floor | None] = {}


def floor_of_setting(setting: Any, n: int, device: torch.device, repeats: int = 5) -> Floor | None:
    """The data's own FID/KID at n (memoised per process): n random real images of the metric's
    reference split against its disjoint rest, over ``repeats`` draws (split-half), so the floor
    has the spread FID has at n. ``None`` when the split holds fewer than n + 2 images.

    (``bench fid-floor --split test --against train`` gives the other floor, n held-out images
    against the whole reference; docs/digits-results.md shows both.)
    """
    data, split, spec = setting.dataset, setting.split, setting.spec
    if data is None or split is None:
        return None
    key = (data.spec, split, spec.sha256, n, repeats)
    if key not in _floors:
        kwargs = dict(extractor=spec.name, weights=str(spec.weights), repeats=repeats)
        fits = 2 <= n <= len(data.data(split)) - 2
        _floors[key] = noise_floor(data, n, split=split, device=device, **kwargs) if fits else None
    return _floors[key]


def floor_columns(metric: str, floor: Floor | None) -> dict[str, Any]:
    """``<metric>_floor``, ``<metric>_floor_std`` and how the floor was drawn."""
    if floor is None:
        return {}
    values = floor.fid if metric == "fid" else floor.kid
    t = torch.tensor(values, dtype=torch.float64)
    return {
        f"{metric}_floor": float(t.mean()),
        f"{metric}_floor_std": float(t.std()) if t.numel() > 1 else 0.0,
        f"{metric}_floor_of": f"{floor.dataset}:{floor.split} split-half, n={floor.n}",
        "floor_draws": len(values),
    }
