"""Helpers shared by metric plugins: exact reference samples and streaming Gaussian statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.core.model import ScoreModel

REFERENCE_SEED = 2021
"""Seed of the exact reference samples: the same for every cell, so cells share their reference."""

_reference_cache: dict[tuple[int, int, int], Tensor] = {}


def reference_samples(model: ScoreModel, n: int, seed: int = REFERENCE_SEED) -> Tensor:
    """n exact samples from the model's p_0, flattened to (n, D), float64 on the CPU (cached)."""
    key = (id(model), n, seed)
    if key not in _reference_cache:
        generator = torch.Generator().manual_seed(seed)
        samples = model.sample_data(n, generator).reshape(n, -1).to(torch.float64)
        _reference_cache.clear()  # one model and n at a time: bounded memory
        _reference_cache[key] = samples
    return _reference_cache[key]


class GaussianStats:
    """Running sums for the mean and covariance of streamed feature vectors (float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: Tensor | None = None
        self.outer: Tensor | None = None

    def update(self, features: Tensor) -> None:
        f = features.reshape(features.shape[0], -1).to("cpu", torch.float64)
        if self.sum is None:
            self.sum = torch.zeros(f.shape[1], dtype=torch.float64)
            self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def state(self) -> tuple[int, Tensor | None, Tensor | None]:
        """The running sums (for merging the ranks of a distributed run)."""
        return self.n, self.sum, self.outer

    def merge(self, states: list[tuple[int, Tensor | None, Tensor | None]]) -> None:
        """Hold the sums of several streams: n, Σf and Σff^T add up (float64)."""
        parts = [s for s in states if s[1] is not None]
        self.n = sum(n for n, _, _ in states)
        self.sum = sum(s for _, s, _ in parts) if parts else None  # type: ignore[assignment]
        self.outer = sum(o for _, _, o in parts) if parts else None  # type: ignore[assignment]

    def statistics(self) -> dict[str, Any]:
        """``{"mu", "sigma"}`` as numpy arrays, with the unbiased covariance of ``np.cov``."""
        if self.sum is None or self.outer is None or self.n < 2:
            raise ValueError("need at least two samples for a covariance")
        mu = self.sum / self.n
        sigma = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return {"mu": mu.numpy(), "sigma": np.atleast_2d(sigma.numpy())}


def frechet_distance(stats_1: dict[str, Any], stats_2: dict[str, Any]) -> float:
    """Fréchet distance of two Gaussian fits (Dowson & Landau 1982; Heusel et al. 2017, Eq. 6):

        d² = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2·tr (Σ₁Σ₂)^{1/2},

    the trace of the square root taken as the sum of the square roots of the eigenvalues of
    Σ₁Σ₂ in complex arithmetic (real part), which is also how torch-fidelity evaluates FID (a
    test checks the two agree). Written out here so that the exact-score oracles' ``fd`` does not
    import torch-fidelity (and torchvision's models with it).
    """
    mu1, sigma1 = stats_1["mu"], stats_1["sigma"]
    mu2, sigma2 = stats_2["mu"], stats_2["sigma"]
    diff = mu1 - mu2
    roots = np.sqrt(np.linalg.eigvals(sigma1.dot(sigma2)).astype("complex128")).real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sum(roots))
