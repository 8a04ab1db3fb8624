"""Metrics for exact-score models, computed against fresh exact samples from p_0."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

import bench
from bench.core.metric import Metric
from bench.core.model import ScoreModel
from bench.errors import Unsupported
from bench.fidelity.gaussian import (
    REFERENCE_SEED,
    GaussianStats,
    frechet_distance,
    reference_samples,
)


class _ExactMetric(Metric):
    """Base for metrics that need the model's closed-form data distribution."""

    @classmethod
    def supports(cls, model: ScoreModel) -> None:
        if not model.exact:
            raise Unsupported(
                f"metric {cls.name!r} needs an exact-score model (a Gaussian mixture)"
            )

    def reference(self) -> Tensor:
        return reference_samples(self.model, self.n, self.options.seed)


@dataclasses.dataclass
class _ReferenceOptions:
    seed: int = REFERENCE_SEED


class SlicedWasserstein(_ExactMetric):
    """Sliced 2-Wasserstein distance to n exact samples over random 1-D projections."""

    name = "swd"

    @dataclasses.dataclass
    class Options(_ReferenceOptions):
        projections: int = 128

    def __init__(self, model, n, **kwargs):
        super().__init__(model, n, **kwargs)
        D = int(torch.tensor(model.data_shape).prod())
        generator = torch.Generator().manual_seed(self.options.seed + 1)
        directions = torch.randn(
            D, self.options.projections, generator=generator, dtype=torch.float64
        )
        self.directions = directions / directions.norm(dim=0, keepdim=True)
        self.projected: list[Tensor] = []

    def project(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).to("cpu", torch.float64) @ self.directions

    def update(self, samples: Tensor) -> None:
        self.projected.append(self.project(samples))

    def compute(self) -> dict[str, float]:
        ours = torch.cat(self.projected).sort(dim=0).values
        ref = self.project(self.reference()).sort(dim=0).values
        return {"swd": float((ours - ref).square().mean().sqrt())}


class FrechetDataSpace(_ExactMetric):
    """Fréchet distance between Gaussian fits of samples and exact samples, in data space."""

    name = "fd"
    Options = _ReferenceOptions

    def __init__(self, model, n, **kwargs):
        super().__init__(model, n, **kwargs)
        self.stats = GaussianStats()

    def update(self, samples: Tensor) -> None:
        self.stats.update(samples)

    def compute(self) -> dict[str, float]:
        reference = GaussianStats()
        reference.update(self.reference())
        return {"fd": frechet_distance(self.stats.statistics(), reference.statistics())}


class MeanLogDensity(_ExactMetric):
    """Mean log-density of the samples under p_0, beside exact samples' (logp_ref) and the gap.

    Higher is not simply better: over-concentrated samples score above ``logp_ref``. The gated
    value is ``logp_gap = |logp − logp_ref|``.
    """

    name = "logp"
    Options = _ReferenceOptions
    column_directions = {"logp": "info", "logp_gap": "lower"}

    def __init__(self, model, n, **kwargs):
        super().__init__(model, n, **kwargs)
        self.total = 0.0
        self.count = 0

    def update(self, samples: Tensor) -> None:
        self.total += float(self.model.log_prob(samples).sum())
        self.count += samples.shape[0]

    def compute(self) -> dict[str, float]:
        ref = float(self.model.log_prob(self.reference()).mean())
        logp = self.total / self.count
        return {"logp": logp, "logp_ref": ref, "logp_gap": abs(logp - ref)}


class ModeCoverage(_ExactMetric):
    """Per-mode coverage: share of samples nearest each component mean against its weight.

    ``coverage_tv`` is the total-variation distance between the shares and the weights,
    ``coverage_min`` the smallest share/weight ratio (0 when a mode is dropped), and
    ``coverage_tv_ref`` the same TV for exact samples (nonzero when components overlap).
    """

    name = "coverage"
    Options = _ReferenceOptions
    column_directions = {"coverage_tv": "lower", "coverage_min": "higher"}

    @classmethod
    def supports(cls, model: ScoreModel) -> None:
        super().supports(model)
        if not hasattr(model, "mixture"):
            raise Unsupported("metric 'coverage' needs a mixture model with component means")

    def __init__(self, model, n, **kwargs):
        super().__init__(model, n, **kwargs)
        self.mixture = model.mixture
        self.counts = torch.zeros(self.mixture.weights.numel(), dtype=torch.float64)

    def shares(self, samples: Tensor) -> Tensor:
        nearest = self.mixture.nearest(samples.reshape(samples.shape[0], -1).cpu())
        return torch.bincount(nearest, minlength=self.counts.numel()).to(torch.float64)

    def update(self, samples: Tensor) -> None:
        self.counts += self.shares(samples)

    def compute(self) -> dict[str, float]:
        weights = self.mixture.weights
        shares = self.counts / self.counts.sum()
        reference = self.shares(self.reference())
        reference /= reference.sum()
        return {
            "coverage_tv": float(0.5 * (shares - weights).abs().sum()),
            "coverage_min": float((shares / weights).min()),
            "coverage_tv_ref": float(0.5 * (reference - weights).abs().sum()),
        }


@bench.hookimpl
def register_metrics(register):
    register(SlicedWasserstein)
    register(FrechetDataSpace)
    register(MeanLogDensity)
    register(ModeCoverage)
