"""Seeded noise: every random number a sampler uses is a function of (seed, sample index, draw
index) only, so a cell's samples do not depend on the batch size, on an out-of-memory halving or
on how many ranks share the work (EDM's per-seed generators are the precedent).

* The prior noise of sample j is drawn from its own generator seeded with (seed, 0, j)
  (:func:`prior_noise`): every sampler in a grid starts from the same points (common random
  numbers).
* Every later draw (a predictor's or corrector's noise, churn, η noise) comes from
  :class:`SampleNoise`: sample j has its own generator seeded with (seed, 1, j, numel), read in
  fixed pages of max(1, 4096 // numel) draws; a page of every sample of the batch is generated at
  once, so the cost is one generator call per sample and page (not per step), and draw k of
  sample j is the same numbers whatever the batch or the rank.
"""

from __future__ import annotations

from typing import Any

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


PAGE_NUMBERS = 4096
"""Numbers per page of a sample's stream (a page holds max(1, 4096 // numel) draws). Pages are
the unit a generator is read in, so the draws do not depend on how many pages a block holds."""


class SampleNoise:
    """Standard-normal draws of a batch that depend only on (seed, sample index, draw index).

    Call it with a tensor x of shape (B, *shape), B = the batch's samples: it returns the next
    draw, shaped like x, in x's dtype (from float64 streams for float64 states, float32
    otherwise) on x's device. Each per-sample size (numel of ``shape``) has its own streams, so a
    sampler that draws noise of two shapes stays reproducible too.

    Args:
        seed: the cell's seed.
        start: the global index of the batch's first sample.
        size: the number of samples in the batch.
    """

    def __init__(self, seed: int, start: int, size: int) -> None:
        self.seed, self.start, self.size = seed, start, size
        self._streams: dict[tuple[Any, ...], _Stream] = {}
        self._last: _Stream | None = None

    def __call__(self, x: Tensor) -> Tensor:
        stream = self._last
        if stream is None or not stream.serves(x):
            stream = self._last = self._stream(x)
        if not stream.draws:
            stream.refill()
        return stream.draws.pop()

    def _stream(self, x: Tensor) -> _Stream:
        if x.shape[0] != self.size:
            raise ValueError(f"noise for {x.shape[0]} samples asked of a batch of {self.size}")
        key = (x.shape, x.dtype, x.device)
        if key not in self._streams:
            self._streams[key] = _Stream(self, x)
        return self._streams[key]


class _Stream:
    """The draws of one shape: a page of every sample's generator, split into draws."""

    def __init__(self, owner: SampleNoise, x: Tensor) -> None:
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        numel = x[0].numel()
        self.numel = numel
        self.source = torch.float64 if x.dtype == torch.float64 else torch.float32
        self.page = max(1, PAGE_NUMBERS // numel)
        self.generators = []
        for j in range(owner.start, owner.start + owner.size):
            generator = torch.Generator(device=x.device)
            generator.manual_seed(derive_seed(owner.seed, 1, j, numel))
            self.generators.append(generator)
        self.draws: list[Tensor] = []

    def serves(self, x: Tensor) -> bool:
        return x.shape == self.shape and x.dtype == self.dtype and x.device == self.device

    def refill(self) -> None:
        """The next page of every sample's stream: one generator call per sample."""
        shape = (self.page, self.numel)
        pages = [
            torch.randn(shape, generator=g, dtype=self.source, device=self.device)
            for g in self.generators
        ]
        block = torch.stack(pages, dim=1).to(self.dtype).view(self.page, *self.shape)
        self.draws = list(reversed(block.unbind(0)))  # popped from the end: first draw first
