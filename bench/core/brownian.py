"""Brownian paths that do not depend on the step count: one path W per (seed, sample) on [0, T].

A stochastic sampler at N and at 2N steps, on any schedule and at any batch size, sees the same
path, so its strong error can be measured and paired comparisons across N are tight. The path
is a dyadic Brownian bridge (Lévy's construction; in the Schauder basis, Ciesielski 1961) whose
node values are addressed draws of the counter-based noise (:mod:`bench.core.noise`, stream
:data:`BROWNIAN`, in its halves layout: each node's draw uses both values of its Box–Muller
pairs):

* W(0) = 0 and W(T) = sqrt(T)·ξ_0;
* the midpoint m of a split level-l cell [a, b] (width h_l = T/2^l, cell k) is
  W(m) = (W(a) + W(b))/2 + (sqrt(h_l)/2)·ξ_{2^l + k}, the exact conditional law (the Brownian
  bridge) given the cell's ends;
* a cell is split while l < L and it is one of the 2^R cells of its level nearest 0 or T
  (min(k, 2^l − 1 − k) < 2^R); the others are leaves. A leaf's distance d to the nearer end is
  at least 2^R·h_l, so it is at most 2^-R·d wide (relative resolution, R = 20: about 1e-6·d)
  and at most T/2^L (L = 30: about 1e-9·T, reached near 0 and T);
* a time t inside a leaf [a, b] (θ = (t − a)/(b − a) ∈ (0, 1)) gets the bridge between the
  leaf's ends, W(t) = (1 − θ)·W(a) + θ·W(b) + sqrt((b − a)·θ·(1 − θ))·ζ(t), with ζ(t) a draw
  addressed by t itself (:func:`remainder_index`): W at a given t is a pure function of t.

Unrolled, W(t) = (t/T)·sqrt(T)·ξ_0 + Σ_l Λ_l(t)·(sqrt(h_l)/2)·ξ_{2^l + k_l(t)} + remainder, Λ_l
the tent of t's level-l cell (1 at its midpoint, 0 at its ends), over the split cells holding
t: at most L + 2 draws per time (about R + log2(T/d)), and none below the level at which t is
a node. The law is exact at every set of times that lie in distinct leaves (the nodes are exact
Brownian values and, given them, the bridges of distinct leaves are independent); two times in
one leaf would share its bridge in a way Brownian motion does not, so
:meth:`BrownianPath.increment` refuses them. Grids of different N whose times are not shared
see one path except where a time of one lies within a leaf of a time of the other (a chance of
about 2^-R·d over their spacing).

An increment W(t) − W(s) is computed from its own weights (the difference of the two times'
weights, in float64 on the host), never as a difference of two values of W: its rounding error
is relative to the increment, not to |W| (a float32 increment over 1e-6·T would otherwise keep
three digits).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bench.core.noise import SampleNoise, mix64
from bench.errors import BenchError

BROWNIAN = 2
"""Stream id of the Brownian path's node values (after the noise module's PRIOR = 0, STEPS = 1)."""
DEPTH = 30
"""L, the most levels of dyadic nodes: a leaf cell is at most T/2^L wide."""
FINE = 20
"""R: only the 2^R cells of a level nearest 0 or T are split, so a leaf at t is about
2^-R·min(t, T − t) wide (and at most T/2^L): the resolution is relative to the nearer end, where
the grids' small steps are (the data end; the noise end of the flow SDE's σ grids)."""
LAYOUT = 2
"""The version of the path's draws: 1 split every cell to 2^-30·T and used one value of each
Box–Muller pair; 2 is this module's. Recorded in a run folder's identity (bench/run/sweep.py),
so a resume does not mix the two in one folder's Brownian cells."""
MAX_DEPTH = 31
"""Node ids are below 2^L ≤ 2^31; the remainder draws take [2^31, 2^32)."""
REMAINDER = 1 << 31


def remainder_index(t: float) -> int:
    """The draw index of ζ(t): 2^31 plus 31 bits of a 64-bit hash of t's float64 bits."""
    bits = struct.unpack("<Q", struct.pack("<d", t))[0]
    return REMAINDER + (mix64(bits) >> 33)


@functools.lru_cache(maxsize=1 << 14)
def weights(t: float, T: float, depth: int, fine: int = FINE) -> dict[int, float]:
    """W(t) = Σ_k w[k]·ξ_k: the draw indices k with nonzero weight and their weights."""
    u = t / T
    if not 0.0 <= u <= 1.0:
        raise BenchError(f"a Brownian path on [0, {T:g}] has no time {t!r}")
    out = {0: u * math.sqrt(T)} if u > 0.0 else {}
    for level in range(depth + 1):
        scaled = u * 2.0**level  # exact: a power-of-two scaling
        k = min(math.floor(scaled), 2**level - 1)
        theta = scaled - k  # where t lies in its level-l cell, in [0, 1]
        if theta in (0.0, 1.0):
            break  # t is a node: no deeper level moves it
        h = T / 2.0**level
        if level == depth or not split(level, k, fine):  # a leaf: the bridge between its ends
            out[remainder_index(t)] = math.sqrt(h * theta * (1.0 - theta))
            break
        out[2**level + k] = (1.0 - abs(2.0 * theta - 1.0)) * math.sqrt(h) / 2.0
    return out


def split(level: int, k: int, fine: int) -> bool:
    """Whether cell k of a level (below L) is split: it is one of the 2^R cells at either end."""
    return min(k, 2**level - 1 - k) < 2**fine


@functools.lru_cache(maxsize=1 << 14)
def leaf(t: float, T: float, depth: int, fine: int = FINE) -> tuple[int, int]:
    """(level, index) of the leaf cell holding t: the first cell of t's chain that is not split,
    or its level-L cell (the last cell of a level holds its right end)."""
    u = t / T
    for level in range(depth + 1):
        k = min(math.floor(u * 2.0**level), 2**level - 1)
        if not split(level, k, fine):
            return level, k
    return depth, k


class BrownianPath:
    """W on [0, T] for samples start … start + size − 1 of a seed (see the module docstring).

    ``path.increment(s, t, like=x)`` is W(t) − W(s) for every sample of the batch, shaped like
    x (one draw per element: a Brownian motion in x's per-sample shape), in x's dtype on x's
    device; ``path.normal(s, t, like=x)`` is the same divided by sqrt(|t − s|), a standard
    normal (k-diffusion's ``BrownianTreeNoiseSampler`` convention); ``path.increments(times,
    like=x)`` stacks the increments between consecutive times in one call.

    Args:
        seed: the cell's seed.
        start: the global index of the batch's first sample.
        size: the number of samples in the batch.
        T: the end of the time interval (the SDE's T).
        depth: L, the most levels of dyadic nodes (at most 31).
        fine: R, the relative resolution 2^-R (the 2^R cells of a level nearest 0 or T are
            split).
    """

    def __init__(
        self, seed: int, start: int, size: int, T: float, depth: int = DEPTH, fine: int = FINE
    ) -> None:
        if not 1 <= depth <= MAX_DEPTH:
            raise BenchError(f"a Brownian path's depth lies in [1, {MAX_DEPTH}], got {depth}")
        if fine < 0:
            raise BenchError(f"a Brownian path's fine level is at least 0, got {fine}")
        if not T > 0.0:
            raise BenchError(f"a Brownian path needs T > 0, got {T}")
        self.noise = SampleNoise(seed, start, size, BROWNIAN, halves=True)
        self.T, self.depth, self.fine = float(T), depth, fine
        self._kind: tuple[Any, ...] | None = None
        self._kept: dict[int, Tensor] = {}  # ξ_k of the previous call's times

    @classmethod
    def of(cls, noise: Any, T: float, depth: int = DEPTH, fine: int = FINE) -> BrownianPath:
        """The path of the batch a cell's step noise serves (a :class:`SampleNoise`): the same
        seed, samples and per-sample independence, on [0, T] (a sampler passes ``model.sde.T``).

        Raises:
            BenchError: ``noise`` is not the cell's seeded noise (e.g. a bare function).
        """
        if not isinstance(noise, SampleNoise):
            raise BenchError(
                "Brownian increments need the cell's seeded noise (bench.core.noise.SampleNoise), "
                f"got {type(noise).__name__}; or give the sampler the option noise=iid"
            )
        path = cls(noise.seed, noise.start, noise.size, T, depth, fine)
        path.noise = type(noise)(noise.seed, noise.start, noise.size, BROWNIAN, halves=True)
        return path

    def at(self, t: float, like: Tensor) -> Tensor:
        """W(t) (W(0) = 0)."""
        return self._combine(self._weights(float(t)), like)

    def increment(self, t_from: float, t_to: float, like: Tensor) -> Tensor:
        """W(t_to) − W(t_from) (either order: reverse-time samplers pass t_from > t_to).

        Raises:
            BenchError: the two times are distinct but share a leaf (see the module doc).
        """
        return self._combine(self._difference(float(t_from), float(t_to)), like)

    def normal(self, t_from: float, t_to: float, like: Tensor) -> Tensor:
        """(W(t_to) − W(t_from))/sqrt(|t_to − t_from|): standard normal, independent over
        disjoint intervals."""
        return self.increment(t_from, t_to, like).div_(math.sqrt(abs(t_to - t_from)))

    def increments(self, times: Sequence[float], like: Tensor) -> Tensor:
        """W(t_{j+1}) − W(t_j) for consecutive ``times``, stacked: shape (len − 1, *like.shape),
        from one set of draws (memory: the distinct draws × the batch)."""
        rows = [self._difference(float(s), float(t)) for s, t in zip(times[:-1], times[1:])]
        ids = sorted({k for row in rows for k in row})
        if not ids:
            return like.new_zeros(len(rows), *like.shape)
        z = self.noise.draws(ids, like).flatten(1)
        place = {k: i for i, k in enumerate(ids)}
        c = torch.zeros(len(rows), len(ids), dtype=torch.float64)
        for r, row in enumerate(rows):
            for k, w in row.items():
                c[r, place[k]] = w
        return (c.to(z.device, z.dtype) @ z).view(len(rows), *like.shape)

    def _difference(self, t_from: float, t_to: float) -> dict[int, float]:
        w_to, w_from = self._weights(t_to), self._weights(t_from)
        if t_from != t_to and _bridged(w_to) and _bridged(w_from):
            level, k = leaf(t_to, self.T, self.depth, self.fine)
            if (level, k) == leaf(t_from, self.T, self.depth, self.fine):
                h = self.T / 2**level
                raise BenchError(
                    f"times {t_from!r} and {t_to!r} are closer than the Brownian path resolves: "
                    f"they share its cell [{k * h:.9g}, {(k + 1) * h:.9g}]; use fewer steps"
                )
        out = dict(w_to)  # a copy: the cached dict stays intact
        for k, w in w_from.items():
            out[k] = out.get(k, 0.0) - w
        return {k: w for k, w in out.items() if w != 0.0}

    def _weights(self, t: float) -> dict[int, float]:
        return weights(t, self.T, self.depth, self.fine)

    def _combine(self, w: dict[int, float], like: Tensor) -> Tensor:
        """Σ_k w[k]·ξ_k, shaped like ``like`` (float32 arithmetic for a half-precision state),
        summed in the ids' order: the same floats whatever was drawn before."""
        if not w:
            return torch.zeros_like(like)
        work = like if like.dtype in (torch.float32, torch.float64) else like.float()
        ids = sorted(w)
        z = self._draws(ids, work)
        out = torch.mul(z[ids[0]], w[ids[0]])
        for k in ids[1:]:
            out.add_(z[k], alpha=w[k])
        return out.to(like.dtype)

    def _draws(self, ids: list[int], like: Tensor) -> dict[int, Tensor]:
        """ξ_k for ``ids``. Those of the previous call's times are kept, not redrawn: a
        sampler walking its grid draws only the new time's deep nodes at each step."""
        kind = (like.shape, like.dtype, like.device)
        if kind != self._kind:
            self._kind, self._kept = kind, {}
        new = [k for k in ids if k not in self._kept]
        fresh = dict(zip(new, self.noise.draws(new, like).unbind(0))) if new else {}
        self._kept = {k: fresh[k] if k in fresh else self._kept[k] for k in ids}
        return self._kept


def _bridged(w: dict[int, float]) -> bool:
    """Whether W(t) of weights ``w`` has a remainder draw (t is no node of the tree)."""
    return any(k >= REMAINDER for k in w)


NOISE_KINDS = ("brownian", "iid")
"""The values of a stochastic sampler's ``noise`` option (see :class:`StepNoise`)."""


def noise_kind(value: str) -> str:
    """``value`` if it names a noise kind, else a ValueError naming the choices."""
    if value not in NOISE_KINDS:
        raise ValueError(f"noise is one of {', '.join(NOISE_KINDS)}, got {value!r}")
    return value


class StepNoise:
    """The noise of a step from t to t_next for a sampler: k-diffusion's ``noise_sampler(σ,
    σ_next)`` in the suite's times.

    ``brownian``: the batch's Brownian path on [0, T] (:class:`BrownianPath`, built on first use
    from the cell's noise), so a run at N and at 2N steps follows one path; ``iid``: the cell's
    next sequential draw (a fresh standard normal per call). On a fixed grid the two have the
    same law (increments over disjoint intervals are independent).

    Args:
        noise: the cell's noise (the ``noise`` argument of :meth:`bench.Sampler.sample`).
        T: the end of the path's interval (the SDE's T).
        kind: ``brownian`` or ``iid``.
    """

    def __init__(self, noise: Any, T: float, kind: str) -> None:
        self.noise, self.T, self.kind = noise, T, noise_kind(kind)
        self.path: BrownianPath | None = None

    def normal(self, t: float, t_next: float, like: Tensor) -> Tensor:
        """A standard normal shaped like ``like``: (W(t_next) − W(t))/sqrt(|t_next − t|) or a
        fresh draw."""
        if self.kind == "iid":
            return self.noise(like)
        return self._path().normal(t, t_next, like)

    def increment(self, t: float, t_next: float, like: Tensor) -> Tensor:
        """W(t_next) − W(t), or sqrt(|t_next − t|) times a fresh draw."""
        if self.kind == "iid":
            return self.noise(like) * math.sqrt(abs(t_next - t))
        return self._path().increment(t, t_next, like)

    def _path(self) -> BrownianPath:
        if self.path is None:
            self.path = BrownianPath.of(self.noise, self.T)
        return self.path
