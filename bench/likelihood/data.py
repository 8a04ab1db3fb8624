"""Data for the likelihood: the points evaluated, the map between data and model space,
uniform dequantisation, bits per dimension, and closed-form densities of the Gaussian oracles.

Units. The log-density is reported in **data space** (images in [0, 1]; the oracles' own space),
whatever space the model works in: for data d = scale·y + shift of a model-space point y,
log p_data(d) = log p_model(y) − D·log|scale|. Bits per dimension of 8-bit images follow the
paper's convention (App. D.2 and the reference's offset, §5.3 of the notes): the pixel values
v ∈ {0..255} are dequantised as d = (v + u)/256 with u ~ U[0, 1)^D, and

    bpd = −log p_data(d)/(D·ln 2) + 8,

which is 7 + (…) for a model of [−1, 1] data (the reference's ``7 − inverse_scaler(−1)``) and an
upper bound on the discrete data's negative log-likelihood (by Jensen). For continuous data the
"bits per dimension" is −log p_data/(D·ln 2) without an offset (it may be negative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bench.core.model import ScoreModel
from bench.core.sde import SDE
from bench.errors import BenchError, Unsupported

EXACT_DATA = "exact"
"""``--data exact``: points drawn from an exact model's p_0."""

EXACT_SEED = 2022
"""Seed of the exact data points (the metrics' reference set uses 2021)."""


@dataclass(frozen=True)
class DataMap:
    """The affine map d = scale·y + shift from model space y to data space d (``to_data``)."""

    scale: float
    shift: float

    @classmethod
    def of(cls, model: ScoreModel) -> DataMap:
        """Read the map off ``model.to_data``; a model whose map is not affine is refused."""
        probe = torch.tensor([0.0, 1.0, 0.5, -3.0], dtype=torch.float64)
        d = model.to_data(probe).to(torch.float64)
        shift, scale = float(d[0]), float(d[1] - d[0])
        if scale == 0 or not torch.allclose(d, scale * probe + shift, rtol=1e-9, atol=1e-9):
            raise BenchError(
                f"model {model.spec!r} maps its samples to data space non-affinely; the "
                "likelihood needs an affine to_data"
            )
        return cls(scale, shift)

    def to_model(self, d: Tensor) -> Tensor:
        return (d - self.shift) / self.scale

    def logp_to_data(self, logp_model: Tensor, dim: int) -> Tensor:
        """log p_data = log p_model − D·log|scale| (the change of variables of the map)."""
        return logp_model - dim * math.log(abs(self.scale))


def quantize(images: Tensor, bits: int = 8) -> Tensor:
    """Images in [0, 1] as integer levels v = round(clip(d, 0, 1)·(2^bits − 1)) (float64).

    Rounding to nearest, as the suite's uint8 conversion; 8-bit data pass unchanged.
    """
    levels = 2**bits - 1
    return torch.round(images.to(torch.float64).clamp(0, 1) * levels)


def dequantize(levels: Tensor, generator: torch.Generator, bits: int = 8) -> Tensor:
    """Uniform dequantisation d = (v + u)/2^bits, u ~ U[0, 1) per value (the reference's
    ``(u + 255·img)/256``)."""
    u = torch.rand(levels.shape, generator=generator, dtype=torch.float64)
    return (levels + u) / 2**bits


def bits_per_dim(logp_data: Tensor, dim: int, bits: int | None) -> Tensor:
    """−log p_data/(D·ln 2), plus ``bits`` for dequantised ``bits``-bit data (else continuous)."""
    out = -logp_data / (dim * math.log(2))
    return out + bits if bits else out


def evaluation_points(
    model: ScoreModel,
    context: Any,
    data: str | None,
    split: str | None,
    points: int | None,
) -> tuple[Tensor, str]:
    """The data points evaluated (data space, float64) and a description of them.

    Args:
        model: the score model.
        context: what resolves a dataset spec (``MetricContext`` or anything with ``dataset``).
        data: ``exact`` (draws from an exact model's p_0), a dataset ``NAME[:ARG]``, or ``None``
            for the model's own (its dataset, or ``exact`` for an exact model).
        split: the dataset split (default: ``test`` if the dataset has one, else ``all``).
        points: how many (the first ``points`` of the split; all by default; exact: required).
    """
    spec = data or (EXACT_DATA if model.exact else model.dataset)
    if spec is None:
        raise BenchError(f"model {model.spec!r} names no dataset; give one with --data NAME[:ARG]")
    if spec == EXACT_DATA:
        if not model.exact:
            raise BenchError(f"model {model.spec!r} has no exact data distribution: use --data")
        n = points or 1000
        x = model.sample_data(n, torch.Generator().manual_seed(EXACT_SEED))
        return x.to(torch.float64), f"{n} exact draws from p_0 (seed {EXACT_SEED})"
    dataset = context.dataset(spec)
    split = split or ("test" if "test" in dataset.splits else "all")
    images = dataset.data(split)
    if points:
        images = images[:points]
    if images.shape[1:] != tuple(model.data_shape):
        raise BenchError(
            f"dataset {spec!r} holds {tuple(images.shape[1:])} images; model "
            f"{model.spec!r} takes {tuple(model.data_shape)}"
        )
    return images.to(torch.float64), f"{spec} {split} split, {images.shape[0]} points"


# -- the exact oracles --------------------------------------------------------------------------
def mixture_logp(model: ScoreModel, sde: SDE, x: Tensor, t: float) -> Tensor:
    """Closed-form log p_t(x) of an exact Gaussian-mixture model under ``sde``, per sample.

    p_t = Σ_k w_k N(a(t)μ_k, (a(t)²s_k² + std(t)²)I) (the perturbation kernel is affine in x₀).
    """
    mixture = getattr(model, "mixture", None)
    if mixture is None:
        raise Unsupported(f"model {model.spec!r} is not a Gaussian mixture")
    a, std = sde.marginal_coef(t)
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    var = a * a * mixture.stds.square() + std * std  # (K,)
    sq = (xf[:, None, :] - a * mixture.means[None]).square().sum(-1)  # (n, K)
    D = xf.shape[1]
    log_joint = mixture.weights.log() - 0.5 * D * torch.log(2 * math.pi * var) - sq / (2 * var)
    return torch.logsumexp(log_joint, dim=1)
