"""The counter-based hash of the noise (:mod:`bench.core.noise`): SplitMix64 (Steele, Lea & Flood
2014) on Python ints and, vectorised, on int64 tensors, whose products wrap mod 2⁶⁴ as intended."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
"""SplitMix64's increment: 2⁶⁴ divided by the golden ratio, made odd."""
M1, M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
"""SplitMix64's finaliser multipliers (Stafford's "Mix13")."""
WORD_BITS = 32
"""Word (s, e) of pair q is counter q·2³² + s·2³¹ + e: up to 2³¹ numbers per sample, 2³² draws."""


def splitmix64(x: int) -> int:
    """A 64-bit mixing function: independent seeds from (seed, index) pairs (63 bits, a valid
    ``torch.Generator`` seed)."""
    return mix64(x + GAMMA) & 0x7FFFFFFFFFFFFFFF


def derive_seed(seed: int, *parts: int) -> int:
    """A seed for a ``torch.Generator`` named by integers under the user's seed."""
    out = splitmix64(seed)
    for p in parts:
        out = splitmix64(out ^ splitmix64(p + 1))
    return out


def mix64(x: int) -> int:
    """SplitMix64's finaliser on a Python int (mod 2⁶⁴): the integer reference of :func:`mix`."""
    x &= MASK64
    x = ((x ^ (x >> 30)) * M1) & MASK64
    x = ((x ^ (x >> 27)) * M2) & MASK64
    return x ^ (x >> 31)


def stream_key(seed: int, stream: int, numel: int) -> int:
    """K = H(seed, stream, n): the 64-bit seed of a stream's per-sample keys."""
    key = mix64(seed + GAMMA)
    for part in (stream, numel):  # absorbed raw into a mixed key: (a, b) and (b, a) differ
        key = mix64((key ^ part) + GAMMA)
    return key


def signed(x: int) -> int:
    """The int64 with the bits of an unsigned 64-bit ``x``."""
    x &= MASK64
    return x - (1 << 64) if x >> 63 else x


def _shift_xor_(z: Tensor, s: int) -> Tensor:
    """z ^= z >>> s in place; torch's >> on int64 is arithmetic, so the sign fill is masked."""
    return z.bitwise_xor_((z >> s).bitwise_and_((1 << (64 - s)) - 1))


def mix(z: Tensor) -> Tensor:
    """SplitMix64's finaliser on an int64 tensor, in place (products wrap mod 2⁶⁴ as intended)."""
    _shift_xor_(z, 30).mul_(signed(M1))
    _shift_xor_(z, 27).mul_(signed(M2))
    return _shift_xor_(z, 31)


def sample_keys(seed: int, stream: int, numel: int, start: int, size: int, device: Any) -> Tensor:
    """κ_j for samples start..start+size: output j of SplitMix64 seeded with the stream key."""
    j = torch.arange(start + 1, start + size + 1, dtype=torch.int64, device=device)
    return mix(j.mul_(signed(GAMMA)).add_(signed(stream_key(seed, stream, numel))))


def words(base: Tensor, pairs: Sequence[int], kinds: int) -> Tensor:
    """Words of the given pairs of draws: int64 of shape (len(pairs), kinds, B, numel).

    Word (s, e) of pair q is counter c = q·2³² + s·2³¹ + e, for element e of draws 2q and
    2q + 1: s = 0 for float32 draws, s = 0 and 1 for float64 draws.

    Args:
        base: κ_j + (e + 1)·γ of the batch's samples and elements, shape (B, numel).
        pairs: the pair indices q.
        kinds: how many words per element (1 or 2).
    """
    steps = [
        signed(((q << WORD_BITS) + (s << (WORD_BITS - 1))) * GAMMA)
        for q in pairs
        for s in range(kinds)
    ]
    if base.device.type == "cpu":
        return _words_cpu(base, steps).view(len(pairs), kinds, *base.shape)
    step = torch.tensor(steps, dtype=torch.int64, device=base.device)  # (q·2³² + s·2³¹)·γ
    return mix(step.view(-1, kinds, 1, 1) + base)


def _words_cpu(base: Tensor, steps: list[int]) -> Tensor:
    """mix(step + base) for every step, in NumPy's unsigned 64-bit arithmetic: the same
    integers as :func:`mix` (logical shifts need no masks), in about half the time on a CPU."""
    out = np.empty((len(steps), *base.shape), dtype=np.uint64)
    step = np.array(steps, dtype=np.int64).view(np.uint64).reshape(-1, *[1] * base.dim())
    np.add(step, base.numpy().view(np.uint64), out=out)  # wraps mod 2⁶⁴
    tmp = np.empty_like(out)
    for shift, factor in ((30, M1), (27, M2), (31, None)):
        np.right_shift(out, np.uint64(shift), out=tmp)
        np.bitwise_xor(out, tmp, out=out)
        if factor is not None:
            np.multiply(out, np.uint64(factor), out=out)
    return torch.from_numpy(out.view(np.int64))


def word_base(keys: Tensor, numel: int) -> Tensor:
    """κ_j + (e + 1)·γ for every sample j and element e: shape (B, numel)."""
    e = torch.arange(1, numel + 1, dtype=torch.int64, device=keys.device)
    return e.mul_(signed(GAMMA)) + keys.view(-1, 1)
