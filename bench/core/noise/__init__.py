"""Seeded noise as an addressable stream: every random number is a pure function of (seed, stream,
sample index, draw index, element), so a cell's samples do not depend on the batch size, the
sample's place in it, an out-of-memory halving or how many ranks share the work, and a draw costs
what it holds. It is a counter-based generator (Salmon et al. 2011, "Parallel random numbers: as
easy as 1, 2, 3"): a 64-bit hash of the address, computed with int64 torch ops for a whole block
of draws at once, turned into normals by Box–Muller (Box & Muller 1958).

* A *stream* is a purpose: :data:`PRIOR` (0) for x_T (:func:`prior_noise`; every sampler in a
  grid starts from the same points: common random numbers), :data:`STEPS` (1) for a sampler's
  draws (:class:`SampleNoise`: predictor and corrector noise, churn, η noise). A new purpose
  (the nodes of a Brownian path: stream 2) takes the next id and addresses its draws with
  ``SampleNoise(seed, start, size, stream).draw(k, like=x)`` (the Brownian nodes with
  ``halves=True``: both values of a Box–Muller pair in one draw, see :class:`SampleNoise`).
* Sample j's key: κ_j = output j of SplitMix64 seeded with K = H(seed, stream, n), n the numbers
  per sample (so draws of two sizes never share numbers).
* Word (s, e) of pair q of sample j: output c = q·2³² + s·2³¹ + e of SplitMix64 seeded with κ_j,
  h = mix(κ_j + (c + 1)·γ) mod 2⁶⁴ (Steele, Lea & Flood 2014: ``mix`` is its finaliser,
  γ = 0x9E3779B97F4A7C15). γ is odd, so distinct (q, s, e) of a sample are distinct inputs;
  two samples or streams share a word only if their random keys fall within the counters used
  of each other (probability about (words used)² / 2⁶⁴).
* Draws 2q and 2q + 1 (element e) are r·cos θ and r·sin θ, r = sqrt(−2 ln u₁), θ = 2π·u₂, with
  u₁ ∈ (0, 1] and u₂ ∈ [0, 1) made of word (0, e) for float32 draws (u₁ of 40 bits rounded to
  float32, so |z| ≤ 7.4 and the tail keeps float32's relative precision; u₂ of 24 bits) and of
  words (0, e) and (1, e) for float64 draws (53 bits each, |z| ≤ 8.6). The float32 bits are the
  top bits of the float64 ones, so a float32 draw is its float64 twin to about 1e-6
  (:func:`uniform_bits`): a float32 cell sees the float64 cell's noise.

The integers are exact, hence identical on every device (on the CPU the hash runs in NumPy's
unsigned 64-bit arithmetic, on other devices in torch's int64: the same integers). The normals go
through log, sqrt, cos and sin: on one CPU they are bit-identical whatever the batch, position, block or thread
count (tests/test_noise.py); CUDA's and the CPU's libraries may round these functions
differently in the last bit, so across devices expect agreement to a few ulp (about 1e-7
relative in float32, 1e-15 in float64), not bit for bit (not yet measured on a GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bench.core.noise.counter import (
    GAMMA,
    WORD_BITS,
    derive_seed,
    mix,
    mix64,
    sample_keys,
    signed,
    splitmix64,
    stream_key,
    word_base,
    words,
)
from bench.core.noise.normals import BITS, normals, uniform_bits

__all__ = [
    "BITS",
    "BLOCK_NUMBERS",
    "GAMMA",
    "PRIOR",
    "STEPS",
    "SampleNoise",
    "derive_seed",
    "mix",
    "mix64",
    "normals",
    "prior_noise",
    "sample_keys",
    "signed",
    "source_dtype",
    "splitmix64",
    "stream_key",
    "uniform_bits",
    "word_base",
    "words",
]

PRIOR, STEPS = 0, 1
"""Stream ids: the prior noise x_T and the sampler's draws."""
BLOCK_NUMBERS = 1 << 16
"""Most numbers a sequential block holds (see :class:`SampleNoise`)."""


def prior_noise(
    seed: int,
    start: int,
    size: int,
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    device: Any = "cpu",
) -> Tensor:
    """Standard-normal z for samples start..start+size of a seed: draw 0 of the prior stream.

    It depends only on (seed, sample index), not on the batch size or on which sampler uses it.
    """
    like = torch.empty(size, *shape, dtype=dtype, device=device)
    return SampleNoise(seed, start, size, PRIOR).draw(0, like)


def source_dtype(dtype: torch.dtype) -> torch.dtype:
    """The normals' dtype for a state's dtype: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class SampleNoise:
    """Standard-normal draws of a batch that depend only on (seed, sample index, draw index).

    ``noise.draw(k, like=x)`` is draw k (0, 1, …) of x's size per sample, shaped like x, in x's
    dtype (float64 normals for float64 states, float32 otherwise) on x's device; ``noise(x)``
    is the next draw. The sequential calls of one shape and dtype are draws 0, 1, 2, …; calls of
    several shapes or dtypes of one size take disjoint blocks of draws, so no two calls share
    numbers. Blocks hold 4, 8, 16, … draws (at most :data:`BLOCK_NUMBERS` numbers, at least 2
    draws): d sequential draws compute fewer than 2d + 4 draws, in few kernels per draw.

    With ``halves=True`` a draw of n numbers per sample uses both halves of its pairs (the
    layout of the Brownian path's nodes, where each draw is used alone): draw k holds r·cos θ
    of pair k at elements e < h = ⌈n/2⌉ and r·sin θ of pair k at element e − h for e ≥ h, from
    the words of h elements under the key of n. A draw then costs half the words and
    logarithms of a draw whose pair partner goes unused.

    Args:
        seed: the cell's seed.
        start: the global index of the batch's first sample.
        size: the number of samples in the batch.
        stream: the stream id (:data:`STEPS` for a sampler's draws).
        halves: the halves layout above (a stream takes one layout for all its draws).
    """

    def __init__(
        self, seed: int, start: int, size: int, stream: int = STEPS, *, halves: bool = False
    ) -> None:
        self.seed, self.start, self.size, self.stream = seed, start, size, stream
        self.halves = halves
        self._bases: dict[tuple[int, torch.device], Tensor] = {}
        self._queues: dict[tuple[Any, ...], _Queue] = {}
        self._last: _Queue | None = None
        self._reserved: dict[int, int] = {}  # numbers per sample → first draw not yet taken

    def __call__(self, x: Tensor) -> Tensor:
        queue = self._last
        if queue is None or not queue.serves(x):
            key = (x.shape, x.dtype, x.device)
            if key not in self._queues:
                self._queues[key] = _Queue(x, self._numel(x))
            queue = self._last = self._queues[key]
        if not queue.draws:
            queue.refill(self, x)
        return queue.draws.pop()  # popped from the end: first draw first

    def draw(self, index: int, like: Tensor) -> Tensor:
        """Draw ``index`` shaped like ``like``; :meth:`draws` computes several at once."""
        return self.draws([index], like)[0]

    def draws(self, indices: Sequence[int], like: Tensor) -> Tensor:
        """The draws ``indices`` stacked: shape (len(indices), *like.shape)."""
        if self.halves:
            return self._halves(indices, like)
        views = self.views(indices, like)
        return torch.stack(views) if views else like.new_empty((0, *like.shape))

    def views(self, indices: Sequence[int], like: Tensor) -> list[Tensor]:
        """The draws ``indices``, each shaped like ``like``: views into one computed block."""
        if self.halves:
            return list(self._halves(indices, like).unbind(0))
        numel = self._numel(like)
        _check_indices(indices)
        pairs = sorted({k // 2 for k in indices})
        place = {q: i for i, q in enumerate(pairs)}
        z = normals(self.base(numel, like.device), pairs, source_dtype(like.dtype))
        cos, sin = z.view(2, len(pairs), *like.shape).to(like.dtype).unbind(0)
        rows = (cos.unbind(0), sin.unbind(0))  # draws 2q and 2q + 1 of the i-th pair q
        return [rows[k % 2][place[k // 2]] for k in indices]

    def _halves(self, indices: Sequence[int], like: Tensor) -> Tensor:
        """The draws ``indices`` of the halves layout, stacked (class docstring)."""
        numel, count = self._numel(like), len(indices)
        _check_indices(indices)
        half, dtype = (numel + 1) // 2, source_dtype(like.dtype)
        out = torch.empty(count, self.size, 2, half, dtype=dtype, device=like.device)
        normals(self.base(numel, like.device), indices, dtype, out=out.permute(2, 0, 1, 3))
        z = out.view(count, self.size, 2 * half)[..., :numel]
        return z.reshape(count, *like.shape).to(like.dtype)

    def base(self, numel: int, device: torch.device) -> Tensor:
        """κ_j + (e + 1)·γ of the batch for ``numel`` numbers per sample (cached); for the
        halves layout, of its first ⌈numel/2⌉ elements."""
        if (numel, device) not in self._bases:
            keys = sample_keys(self.seed, self.stream, numel, self.start, self.size, device)
            width = (numel + 1) // 2 if self.halves else numel
            self._bases[numel, device] = word_base(keys, width)
        return self._bases[numel, device]

    def reserve(self, numel: int, count: int) -> range:
        """The next ``count`` (even) draws of this size not yet taken by a sequential call."""
        first = self._reserved.get(numel, 0)
        self._reserved[numel] = first + count
        return range(first, first + count)

    def _numel(self, x: Tensor) -> int:
        if x.dim() == 0 or x.shape[0] != self.size:
            n = x.shape[0] if x.dim() else "a scalar"
            raise ValueError(f"noise for {n} samples asked of a batch of {self.size}")
        if x[0].numel() >= 2 ** (WORD_BITS - 1):
            raise ValueError(f"noise of {x[0].numel()} numbers per sample: at most 2**31 - 1")
        return x[0].numel()


def _check_indices(indices: Sequence[int]) -> None:
    if not all(0 <= k < 2**WORD_BITS for k in indices):
        raise ValueError(f"draw indices must lie in [0, 2**32), got {list(indices)}")


class _Queue:
    """Upcoming sequential draws of one shape and dtype, computed a block at a time."""

    def __init__(self, x: Tensor, numel: int) -> None:
        self.shape, self.dtype, self.device, self.numel = x.shape, x.dtype, x.device, numel
        cap = max(2, BLOCK_NUMBERS // max(1, x.numel()))
        self.cap, self.block = cap - cap % 2, 4
        self.draws: list[Tensor] = []

    def serves(self, x: Tensor) -> bool:
        return x.shape == self.shape and x.dtype == self.dtype and x.device == self.device

    def refill(self, owner: SampleNoise, x: Tensor) -> None:
        count = min(self.block, self.cap)
        self.block = 2 * count
        self.draws = owner.views(owner.reserve(self.numel, count), x)[::-1]
