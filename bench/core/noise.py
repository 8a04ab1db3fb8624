"""Seeded noise: every sample's prior noise from its own stream, and each batch's step noise.

A seed fixes the prior noise of every sample independently of which sampler consumes it, so two
samplers in one grid start from the same points (common random numbers).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def splitmix64(x: int) -> int:
    """A 64-bit mixing function: independent seeds from (seed, index) pairs."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF


def derive_seed(seed: int, *parts: int) -> int:
    """A seed for a stream named by integers under the user's seed."""
    out = splitmix64(seed)
    for p in parts:
        out = splitmix64(out ^ splitmix64(p + 1))
    return out


def prior_noise(seed: int, start: int, size: int, shape: tuple[int, ...]) -> Tensor:
    """Standard-normal z for samples start..start+size of a seed (float32, CPU).

    Each sample has its own generator, so its prior noise depends only on (seed, sample index) —
    not on the batch size or on which sampler consumes it.
    """
    out = torch.empty(size, *shape)
    generator = torch.Generator()
    for j in range(size):
        generator.manual_seed(derive_seed(seed, 0, start + j))
        out[j] = torch.randn(shape, generator=generator)
    return out


def step_noise(seed: int, batch: int, device: torch.device) -> Callable[[Tensor], Tensor]:
    """The per-step noise of one batch: a device generator seeded by (seed, batch index)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, 1, batch))

    def noise(x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    return noise
