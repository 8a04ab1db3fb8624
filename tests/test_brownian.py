"""The Brownian paths (bench/core/brownian.py): the construction against an independent
recursive bisection of the same draws, the law of W (covariance min(s, t), increments' mean and
variance, independence of disjoint increments, agreement in law with torchsde's BrownianTree),
and the invariances a stochastic sampler relies on (path consistency, batch size and position,
refinement of the grid, float32 twin)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench.core import brownian as B
from bench.core.brownian import BrownianPath, StepNoise
from bench.core.noise import SampleNoise
from bench.errors import BenchError

pytestmark = pytest.mark.usefixtures("one_thread")

M = 20000  # samples for the statistical tests (each a 1-d Brownian motion)
Z = 4.5  # a |z| beyond this fails (two-sided p ≈ 7e-6 per check)


def like(n: int = M, dtype=torch.float64) -> torch.Tensor:
    return torch.empty(n, 1, dtype=dtype)


def reference_w(
    seed: int, start: int, size: int, T: float, depth: int, t: float, fine: int = B.FINE
) -> np.ndarray:
    """W(t) by recursive bisection (Lévy's construction), written from the module docstring:
    keep the cell [a, b] holding t with W(a), W(b); its midpoint gets the bridge mean plus
    (sqrt(b − a)/2)·ξ_{2^l + k}; stop at a node, or bridge inside the leaf: the level-L cell, or
    the first cell more than 2^R cells from both ends of its level."""
    noise = SampleNoise(seed, start, size, B.BROWNIAN, halves=True)
    xi = lambda k: noise.draw(k, like(size)).numpy()[:, 0]  # noqa: E731
    a, b, wa, wb, k = 0.0, T, np.zeros(size), math.sqrt(T) * xi(0), 0
    if t == 0.0:
        return wa
    if t == T:
        return wb
    for level in range(depth):
        if k >= 2**fine and 2**level - 1 - k >= 2**fine:
            break
        m = (a + b) / 2
        wm = (wa + wb) / 2 + math.sqrt(b - a) / 2 * xi(2**level + k)
        if t == m:
            return wm
        a, b, wa, wb, k = (a, m, wa, wm, 2 * k) if t < m else (m, b, wm, wb, 2 * k + 1)
    theta = (t - a) / (b - a)
    rest = math.sqrt((b - a) * theta * (1 - theta)) * xi(B.remainder_index(t))
    return (1 - theta) * wa + theta * wb + rest


@pytest.mark.parametrize("T", [1.0, 80.0])
@pytest.mark.parametrize("depth,fine", [(3, 20), (30, 20), (30, 30), (12, 4)])
def test_values_equal_the_recursive_bisection(T, depth, fine):
    """At nodes, between nodes, at 0 and T: the unrolled weights are the bisection's."""
    path = BrownianPath(7, 3, 5, T, depth, fine)
    for u in (0.0, 1.0, 0.5, 0.25, 0.375, 0.1, 0.123456789, 1 - 1e-9, 1e-7, 3e-3, 2**-10, 0.99):
        t = u * T
        want = reference_w(7, 3, 5, T, depth, t, fine)
        got = path.at(t, like(5)).numpy()[:, 0]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * math.sqrt(T))


def z_score(estimate: float, expected: float, se: float) -> float:
    return abs(estimate - expected) / se


@pytest.mark.parametrize("T,depth", [(1.0, 30), (80.0, 30), (1.0, 3)])
def test_covariance_is_min_s_t(T, depth):
    """Cov(W(s), W(t)) = min(s, t) at dyadic and non-dyadic times (sample covariance within
    Z standard errors: se of a product moment is sqrt((σ_s²σ_t² + c²)/M)); at depth 3 the
    times lie in distinct level-3 cells, where the remainder draws carry much of the law."""
    times = [T * u for u in (0.5, 0.1, 0.37, 0.9, 1.0, 0.2)]
    path = BrownianPath(11, 0, M, T, depth)
    W = torch.stack([path.at(t, like())[:, 0] for t in times]).numpy()
    for i, s in enumerate(times):
        for j, t in enumerate(times):
            c = min(s, t)
            se = math.sqrt((s * t + c * c) / M)
            assert z_score(float(np.mean(W[i] * W[j])), c, se) < Z, (s, t)


def test_increments_mean_variance_and_independence():
    """Increments over disjoint intervals of an uneven grid: mean 0, variance t_j − t_i (each
    within Z se), pairwise uncorrelated (|r|·sqrt(M) < Z), normal (KS p > 1e-4)."""
    times = [1.0, 0.81, 0.5, 0.4999, 0.3, 0.05, 1e-3, 0.0]
    path = BrownianPath(3, 0, M, 1.0)
    inc = path.increments(times, like())[:, :, 0].numpy()
    for k, (s, t) in enumerate(zip(times, times[1:])):
        var = s - t
        assert z_score(float(inc[k].mean()), 0.0, math.sqrt(var / M)) < Z
        assert z_score(float(inc[k].var()), var, var * math.sqrt(2 / M)) < Z
        assert stats.kstest(inc[k] / math.sqrt(var), "norm").pvalue > 1e-4
    r = np.corrcoef(inc)
    assert np.abs(r - np.eye(len(inc))).max() * math.sqrt(M) < Z


def test_same_law_as_torchsde_brownian_tree():
    """torchsde's BrownianTree (k-diffusion's noise sampler) as an independent implementation:
    two-sample KS tests on W(t) and on an increment at non-dyadic times agree (p > 1e-4)."""
    torchsde = pytest.importorskip("torchsde")
    n, s, t = 4000, 0.3, 0.7123
    ours = BrownianPath(5, 0, n, 1.0)
    ws, wt = ours.at(s, like(n))[:, 0], ours.at(t, like(n))[:, 0]
    tree = torchsde.BrownianTree(0.0, torch.zeros(n, dtype=torch.float64), 1.0, entropy=5)
    ts, tt = tree(0.0, s), tree(0.0, t)
    assert stats.ks_2samp(ws.numpy(), ts.numpy()).pvalue > 1e-4
    assert stats.ks_2samp((wt - ws).numpy(), (tt - ts).numpy()).pvalue > 1e-4


def test_path_consistency():
    """W(s) − W(r) = (W(s) − W(u)) + (W(u) − W(r)) to round-off, for dyadic and other u."""
    path = BrownianPath(0, 0, 64, 1.0)
    x = like(64)
    for r, u, s in [(0.9, 0.5, 0.1), (0.77, 0.3333, 0.0), (1.0, 0.25, 0.123), (0.6, 0.61, 0.2)]:
        whole = path.increment(r, s, x)
        parts = path.increment(r, u, x) + path.increment(u, s, x)
        torch.testing.assert_close(whole, parts, rtol=0, atol=1e-13)
        torch.testing.assert_close(whole, path.at(s, x) - path.at(r, x), rtol=0, atol=1e-13)


def test_same_path_at_any_batch_size_and_position():
    """Samples 3..9 of a batch of 12 equal a batch of 7 starting at 3, bit for bit, whatever
    was queried before (the kept draws)."""
    times = [1.0, 0.7, 0.41, 0.4, 0.0]
    big = BrownianPath(9, 0, 12, 1.0).increments(times, like(12))
    part = BrownianPath(9, 3, 7, 1.0)
    part.increment(0.2, 0.9, like(7))  # a different query first
    for k, (s, t) in enumerate(zip(times, times[1:])):
        assert torch.equal(part.increment(s, t, like(7)), big[k, 3:10])


def test_refinement_keeps_the_path():
    """A grid of N points and its refinement to 2N see the same W at the shared times, and the
    fine increments sum to the coarse ones."""
    coarse = [1.0 - i * (1.0 - 1e-3) / 9 for i in range(10)] + [0.0]
    fine = sorted({*coarse, *((a + b) / 2 for a, b in zip(coarse, coarse[1:]))}, reverse=True)
    one, two = BrownianPath(1, 0, 50, 1.0), BrownianPath(1, 0, 50, 1.0)
    for t in coarse:
        assert torch.equal(one.at(t, like(50)), two.at(t, like(50)))
    small = two.increments(fine, like(50))
    sums = small.view(-1, 2, 50, 1).sum(1)
    torch.testing.assert_close(sums, one.increments(coarse, like(50)), rtol=0, atol=1e-13)


def test_float32_is_the_float64_path():
    path = BrownianPath(2, 0, 100, 1.0)
    a = path.increment(0.8, 0.3, like(100, torch.float32))
    b = BrownianPath(2, 0, 100, 1.0).increment(0.8, 0.3, like(100))
    assert a.dtype == torch.float32
    torch.testing.assert_close(a.double(), b, rtol=0, atol=1e-5)


def test_times_closer_than_the_resolution_are_refused():
    path = BrownianPath(0, 0, 2, 1.0, depth=10)
    with pytest.raises(BenchError, match="closer than the Brownian path resolves"):
        path.increment(0.5001, 0.5002, like(2))
    path.increment(0.5, 0.50001, like(2))  # a node and a time in its cell: exact, allowed
    with pytest.raises(BenchError, match="has no time"):
        path.at(1.5, like(2))


def test_the_resolution_is_relative():
    """With R = 20 a leaf at t = 0.5 is 2^-21 wide; within 1e-5 of either end the leaves are the
    level-30 cells (2^-30 wide): times 1e-7 apart share a leaf there, 2e-9 apart do not here."""
    path = BrownianPath(0, 0, 2, 1.0)
    assert (B.DEPTH, B.FINE) == (30, 20)
    with pytest.raises(BenchError, match="closer than the Brownian path resolves"):
        path.increment(0.5 + 2e-7, 0.5 + 1e-7, like(2))
    path.increment(0.5 + 6e-7, 0.5 + 1e-7, like(2))
    for end in (0.0, 1.0 - 2e-5):
        path.increment(end + 1e-5 + 2e-9, end + 1e-5, like(2))
        with pytest.raises(BenchError, match="closer than the Brownian path resolves"):
            path.increment(end + 1e-5 + 2e-10, end + 1e-5, like(2))


def test_step_noise_kinds():
    """``brownian`` gives the path's normalised increments; ``iid`` the cell's sequential draws;
    a bare function has no path (a clear error)."""
    x = like(8)
    step = StepNoise(SampleNoise(4, 0, 8), 1.0, "brownian")
    want = BrownianPath(4, 0, 8, 1.0).increment(0.9, 0.5, x) / math.sqrt(0.4)
    torch.testing.assert_close(step.normal(0.9, 0.5, x), want, rtol=0, atol=1e-14)
    iid = StepNoise(SampleNoise(4, 0, 8), 1.0, "iid")
    assert torch.equal(iid.normal(0.9, 0.5, x), SampleNoise(4, 0, 8)(x))
    with pytest.raises(BenchError, match="need the cell's seeded noise"):
        StepNoise(torch.randn_like, 1.0, "brownian").normal(0.9, 0.5, x)
    with pytest.raises(ValueError, match="noise is one of"):
        StepNoise(torch.randn_like, 1.0, "gaussian")
