"""Standard normals from the hash's words (:mod:`bench.core.noise`): Box–Muller (Box & Muller
1958) on uniforms made of the words' bits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bench.core.noise.counter import words

BITS = {torch.float32: (40, 24), torch.float64: (53, 53)}
"""Bits of u₁ and u₂ per normals' dtype (float32: u₁ rounded to 24 significant bits, so its
small values, the tail of |z|, keep their precision; u₂ at float32's resolution of θ)."""


def uniform_bits(base: Tensor, pairs: Sequence[int], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Integers U ∈ [1, 2^b₁] and V ∈ [0, 2^b₂) of u₁ = U/2^b₁ ∈ (0, 1] and u₂ = V/2^b₂ ∈
    [0, 1), (b₁, b₂) = :data:`BITS`, shape (len(pairs), B, numel).

    U − 1 is bits 24–63 of word 0 (float64: then bits 51–63 of word 1) with the leading bit
    flipped (read as signed, plus half the range); V is bits 0–23 of word 0 (float64: then bits
    0–28 of word 1). A float32 draw's U and V are the top bits of its float64 twin's, so the
    two agree to about 1e-6 (tests/test_noise.py).
    """
    if dtype == torch.float32:
        a = words(base, pairs, 1)[:, 0]
        return (a >> 24).add_(2**39 + 1), a.bitwise_and_(2**24 - 1)
    a, b = words(base, pairs, 2).unbind(1)
    u = ((a >> 24) << 13).bitwise_or_((b >> 51).bitwise_and_(2**13 - 1)).add_(2**52 + 1)
    v = ((a & (2**24 - 1)) << 29).bitwise_or_(b.bitwise_and_(2**29 - 1))
    return u, v


CHUNK_ELEMENTS = 1 << 16
"""Elements per thread of a slice of a CPU draw (pairs × B × numel): 512 KiB of int64 words, so
the hash's dozen passes stay in a core's L2 cache (1.35× faster for 20 pairs of an 8×8 batch of
256 than one pass over all, 1 thread; with 2 threads a slice of twice this is 1.1× faster than
one of this); elementwise, so the numbers are the same whatever the slices."""


def normals(
    base: Tensor, pairs: Sequence[int], dtype: torch.dtype, out: Tensor | None = None
) -> Tensor:
    """Standard normals of draws 2q (``[0, i]``) and 2q + 1 (``[1, i]``) of the i-th pair q:
    shape (2, len(pairs), B, numel) (``base`` from :func:`word_base`), float64 or float32.

    Box–Muller: draws 2q and 2q + 1 are r·cos θ and r·sin θ, r = sqrt(−2 ln u₁), θ = 2π·u₂.
    On the CPU the pairs go in slices of about :data:`CHUNK_ELEMENTS` elements. ``out``, if
    given, is written instead of a new tensor (any view of that shape and ``dtype``).
    """
    if out is None:
        out = torch.empty(2, len(pairs), *base.shape, dtype=dtype, device=base.device)
    step = len(pairs)
    if base.device.type == "cpu":
        step = max(1, CHUNK_ELEMENTS * torch.get_num_threads() // max(1, base.numel()))
    for i in range(0, len(pairs), step):
        _box_muller(out[:, i : i + step], base, pairs[i : i + step], dtype)
    return out


def _box_muller(out: Tensor, base: Tensor, pairs: Sequence[int], dtype: torch.dtype) -> None:
    """Fill ``out`` (2, len(pairs), B, numel) with the pairs' r·cos θ and r·sin θ."""
    b1, b2 = BITS[dtype]
    u, v = uniform_bits(base, pairs, dtype)
    r = u.to(dtype).mul_(2.0**-b1).log_().mul_(-2.0).sqrt_()
    theta = v.to(dtype).mul_(2 * torch.pi * 2.0**-b2)
    torch.mul(torch.cos(theta), r, out=out[0])  # contiguous cos, sin: ``out`` may be strided
    torch.mul(theta.sin_(), r, out=out[1])
