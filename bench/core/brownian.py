"""Brownian paths that do not depend on the step count: one path W per (seed, sample) on [0, T].

A stochastic sampler at N and at 2N steps, on any schedule and at any batch size, sees the same
path, so its strong error can be measured and paired comparisons across N are tight. The path
is a dyadic Brownian bridge (Lévy's construction; in the Schauder basis, Ciesielski 1961) whose
node values are addressed draws of the counter-based noise (:mod:`bench.core.noise`, stream
:data:`BROWNIAN`):

* W(0) = 0 and W(T) = sqrt(T)·ξ_0;
* the midpoint m of a level-l cell [a, b] (width h_l = T/2^l, cell k, l = 0 … L − 1) is
  W(m) = (W(a) + W(b))/2 + (sqrt(h_l)/2)·ξ_{2^l + k}, the exact conditional law (the Brownian
  bridge) given the cell's ends;
* a time t inside a level-L cell [a, b] (θ = (t − a)/h_L ∈ (0, 1)) gets the bridge between the
  cell's ends, W(t) = (1 − θ)·W(a) + θ·W(b) + sqrt(h_L·θ·(1 − θ))·ζ(t), with ζ(t) a draw
  addressed by t itself (:func:`remainder_index`): W at a given t is a pure function of t.

Unrolled, W(t) = (t/T)·sqrt(T)·ξ_0 + Σ_l Λ_l(t)·(sqrt(h_l)/2)·ξ_{2^l + k_l(t)} + remainder, Λ_l
the tent of t's level-l cell (1 at its midpoint, 0 at its ends): at most L + 2 draws per time,
and none below the level at which t is a node. The law is exact at every set of times that lie
in distinct level-L cells (the nodes are exact Brownian values and, given them, the bridges of
distinct cells are independent); two times in one level-L cell (closer than T/2^L, about
1e-9·T at the default L = 30) would share the cell's bridge in a way Brownian motion does not,
so :meth:`BrownianPath.increment` refuses them.

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
"""L, the levels of dyadic nodes: times closer than T/2^L share a level-L cell."""
MAX_DEPTH = 31
"""Node ids are below 2^L ≤ 2^31; the remainder draws take [2^31, 2^32)."""
REMAINDER = 1 << 31


def remainder_index(t: float) -> int:
    """The draw index of ζ(t): 2^31 plus 31 bits of a 64-bit hash of t's float64 bits."""
    bits = struct.unpack("<Q", struct.pack("<d", t))[0]
    return REMAINDER + (mix64(bits) >> 33)


@functools.lru_cache(maxsize=1 << 14)
def weights(t: float, T: float, depth: int) -> dict[int, float]:
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
        if level == depth:
            out[remainder_index(t)] = math.sqrt(h * theta * (1.0 - theta))
        else:
            out[2**level + k] = (1.0 - abs(2.0 * theta - 1.0)) * math.sqrt(h) / 2.0
    return out


def cell(t: float, T: float, depth: int) -> int:
    """The index of t's level-L cell (the last cell, 2^L − 1, holds t = T)."""
    return min(math.floor(t / T * 2.0**depth), 2**depth - 1)


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
        depth: L, the levels of dyadic nodes (at most 31).
    """

    def __init__(self, seed: int, start: int, size: int, T: float, depth: int = DEPTH) -> None:
        if not 1 <= depth <= MAX_DEPTH:
            raise BenchError(f"a Brownian path's depth lies in [1, {MAX_DEPTH}], got {depth}")
        if not T > 0.0:
            raise BenchError(f"a Brownian path needs T > 0, got {T}")
        self.noise = SampleNoise(seed, start, size, BROWNIAN)
        self.T, self.depth = float(T), depth
        self._kind: tuple[Any, ...] | None = None
        self._kept: dict[int, Tensor] = {}  # ξ_k of the previous call's times

    @classmethod
    def of(cls, noise: Any, T: float, depth: int = DEPTH) -> BrownianPath:
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
        path = cls(noise.seed, noise.start, noise.size, T, depth)
        path.noise = type(noise)(noise.seed, noise.start, noise.size, BROWNIAN)  # same kind
        return path

    def at(self, t: float, like: Tensor) -> Tensor:
        """W(t) (W(0) = 0)."""
        return self._combine(weights(float(t), self.T, self.depth), like)

    def increment(self, t_from: float, t_to: float, like: Tensor) -> Tensor:
        """W(t_to) − W(t_from) (either order: reverse-time samplers pass t_from > t_to).

        Raises:
            BenchError: the two times are distinct but share a level-L cell (see the module doc).
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
        if t_from != t_to and self._bridged(t_from) and self._bridged(t_to):
            if cell(t_from, self.T, self.depth) == cell(t_to, self.T, self.depth):
                raise BenchError(
                    f"times {t_from!r} and {t_to!r} are closer than the Brownian path resolves "
                    f"(T/2^{self.depth} = {self.T / 2**self.depth:.3g}): they share a cell; "
                    "use fewer steps or a deeper path"
                )
        out = dict(weights(t_to, self.T, self.depth))  # a copy: the cached dict stays intact
        for k, w in weights(t_from, self.T, self.depth).items():
            out[k] = out.get(k, 0.0) - w
        return {k: w for k, w in out.items() if w != 0.0}

    def _bridged(self, t: float) -> bool:
        """Whether W(t) has a remainder draw (t is no dyadic node of the L levels)."""
        return (t / self.T * 2.0**self.depth) % 1.0 != 0.0

    def _combine(self, w: dict[int, float], like: Tensor) -> Tensor:
        """Σ_k w[k]·ξ_k, shaped like ``like`` (float32 arithmetic for a half-precision state)."""
        if not w:
            return torch.zeros_like(like)
        work = like if like.dtype in (torch.float32, torch.float64) else like.float()
        ids = sorted(w)
        z = self._draws(ids, work)
        c = torch.tensor([w[k] for k in ids], dtype=torch.float64).to(z.device, z.dtype)
        return torch.tensordot(c, z, dims=1).to(like.dtype)

    def _draws(self, ids: list[int], like: Tensor) -> Tensor:
        """ξ_k for ``ids``, stacked. Those of the previous call's times are kept, not redrawn:
        a sampler walking its grid draws only the new time's deep nodes at each step."""
        kind = (like.shape, like.dtype, like.device)
        if kind != self._kind:
            self._kind, self._kept = kind, {}
        new = [k for k in ids if k not in self._kept]
        fresh = dict(zip(new, self.noise.draws(new, like).unbind(0))) if new else {}
        self._kept = {k: fresh[k] if k in fresh else self._kept[k] for k in ids}
        return torch.stack([self._kept[k] for k in ids])


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
