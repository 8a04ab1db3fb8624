"""The counter-based noise (bench/core/noise/): the hash against an independent pure-Python
implementation of the documented layout, the normals' distribution and independence, and the
invariances every cell relies on (batch size, position, block, thread count, dtype twin)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bench.core import noise as N
from bench.core.noise import SampleNoise, prior_noise

# -- an independent implementation of the documented layout, in Python integers ------------------
MASK = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15


def ref_mix(x: int) -> int:
    """SplitMix64's output function (Steele, Lea & Flood 2014), unsigned 64-bit arithmetic."""
    x &= MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def ref_word(seed: int, stream: int, numel: int, j: int, q: int, s: int, e: int) -> int:
    """Word (s, e) of pair q of sample j: the module docstring's recipe, step by step."""
    key = ref_mix(seed + GOLDEN)
    key = ref_mix((key ^ stream) + GOLDEN)
    key = ref_mix((key ^ numel) + GOLDEN)  # K = H(seed, stream, n)
    kappa = ref_mix(key + (j + 1) * GOLDEN)  # output j of SplitMix64(K)
    c = q * 2**32 + s * 2**31 + e
    return ref_mix(kappa + (c + 1) * GOLDEN)  # output c of SplitMix64(κ_j)


def ref_normal(seed: int, stream: int, numel: int, j: int, k: int, e: int, double: bool) -> float:
    """Element e of draw k of sample j by Box–Muller from the documented bits, in float64."""
    q, half = divmod(k, 2)
    return ref_box_muller(seed, stream, numel, j, q, half, e, double)


def ref_halves(seed: int, stream: int, numel: int, j: int, k: int, e: int, double: bool) -> float:
    """Element e of draw k of the halves layout: half e // h of pair k at element e mod h,
    h = ⌈numel/2⌉, under the key of numel."""
    h = (numel + 1) // 2
    return ref_box_muller(seed, stream, numel, j, k, e // h, e % h, double)


def ref_box_muller(
    seed: int, stream: int, numel: int, j: int, q: int, half: int, e: int, double: bool
) -> float:
    """Half (0: cos, 1: sin) of pair q at element e of sample j, in float64."""
    a = ref_word(seed, stream, numel, j, q, 0, e)
    if double:
        b = ref_word(seed, stream, numel, j, q, 1, e)
        U = (((a >> 24) ^ 2**39) << 13 | b >> 51) + 1
        V = (a & (2**24 - 1)) << 29 | b & (2**29 - 1)
        u1, u2 = U / 2**53, V / 2**53
    else:
        U = ((a >> 24) ^ 2**39) + 1
        u1, u2 = float(np.float32(U)) / 2**40, (a & (2**24 - 1)) / 2**24
    r, theta = math.sqrt(-2 * math.log(u1)), 2 * math.pi * u2
    return r * (math.sin(theta) if half else math.cos(theta))


def test_the_mixer_is_splitmix64():
    """Known outputs of SplitMix64 seeded with 0 (the published reference sequence)."""
    assert [ref_mix(i * GOLDEN) for i in (1, 2, 3)] == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]
    values = [0, 1, 2**63 - 1, 2**63, MASK, 0x0123456789ABCDEF, 0xFEDCBA9876543210]
    values += [int(x) for x in np.random.default_rng(0).integers(0, 2**63, 50, dtype=np.uint64)]
    got = N.mix(torch.tensor([N.signed(v) for v in values], dtype=torch.int64))
    assert [int(x) & MASK for x in got] == [ref_mix(v) for v in values]


@pytest.mark.parametrize("seed,stream,numel", [(0, 1, 2), (7, 0, 64), (2**40 + 3, 5, 3)])
def test_words_equal_the_reference_exactly(seed, stream, numel):
    start, size = 5, 4
    base = SampleNoise(seed, start, size, stream).base(numel, torch.device("cpu"))
    pairs = [0, 3, 2**31 - 1]
    h = N.words(base, pairs, 2)
    for a, q in enumerate(pairs):
        for s in (0, 1):
            for i in range(size):
                want = [ref_word(seed, stream, numel, start + i, q, s, e) for e in range(numel)]
                assert [int(x) & MASK for x in h[a, s, i]] == want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normals_equal_the_reference(dtype):
    seed, start, shape = 11, 3, (3,)
    noise = SampleNoise(seed, start, 2)
    ks = [0, 1, 6, 9]
    z = noise.draws(ks, torch.empty(2, *shape, dtype=dtype))
    ref = [
        [
            [ref_normal(seed, 1, 3, start + i, k, e, dtype == torch.float64) for e in range(3)]
            for i in range(2)
        ]
        for k in ks
    ]
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    np.testing.assert_allclose(z.double().numpy(), np.array(ref), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("numel", [1, 4, 5])
def test_halves_layout_equals_the_reference(dtype, numel):
    """The Brownian nodes' layout: both halves of each pair, split across the elements, whether
    drawn together, one at a time or sequentially."""
    seed, stream, start, ks = 11, 2, 3, [0, 1, 7, 2**31 + 5]
    like = torch.empty(2, numel, dtype=dtype)
    noise = SampleNoise(seed, start, 2, stream, halves=True)
    z = noise.draws(ks, like)
    ref = [
        [
            [
                ref_halves(seed, stream, numel, start + i, k, e, dtype == torch.float64)
                for e in range(numel)
            ]
            for i in range(2)
        ]
        for k in ks
    ]
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    np.testing.assert_allclose(z.double().numpy(), np.array(ref), rtol=tol, atol=tol)
    for i, k in enumerate(ks):
        assert torch.equal(noise.draw(k, like), z[i])
    again = SampleNoise(seed, start, 2, stream, halves=True)
    assert torch.equal(again(like), z[0]) and torch.equal(again(like), z[1])


# -- distribution -------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["f32", "f64"])
def sample(request):
    """1,000 samples × 100 draws × 10 elements = 10⁶ normals, shape (draw, sample, element)."""
    noise = SampleNoise(2024, 0, 1000)
    return noise.draws(range(100), torch.empty(1000, 10, dtype=request.param)).double().numpy()


def test_moments_and_normality(sample):
    z = sample.ravel()
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    for c in (1.0, 2.0, 3.0, 4.0):  # the tails
        p = 2 * stats.norm.sf(c)
        assert abs((np.abs(z) > c).mean() - p) < 5 * math.sqrt(p * (1 - p) / n), c


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_draws_samples_and_elements_are_uncorrelated(sample):
    """Neighbours along every axis, and their squares (Box–Muller's pairs share a radius)."""
    pairs = [
        (sample[:-1], sample[1:]),  # consecutive draws (even k: the two of a Box–Muller pair)
        (sample[0::2], sample[1::2]),
        (sample[:, :-1], sample[:, 1:]),  # consecutive samples
        (sample[..., :-1], sample[..., 1:]),  # consecutive elements
    ]
    for a, b in pairs:
        bound = 5 / math.sqrt(a.size)
        assert abs(correlation(a, b)) < bound
        assert abs(correlation(a**2, b**2)) < bound


def test_streams_seeds_and_sizes_share_no_words():
    """Every 64-bit word of 3 streams × 2 seeds × 2 sizes, 500 samples × 40 pairs, is distinct."""
    seen = []
    for seed in (0, 1):
        for stream in (0, 1, 2):
            for numel in (1, 2):
                base = SampleNoise(seed, 0, 500, stream).base(numel, torch.device("cpu"))
                seen.append(N.words(base, range(40), 2).ravel())
    every = torch.cat(seen)
    assert len(torch.unique(every)) == len(every)


def test_streams_are_uncorrelated():
    like = torch.empty(10000, 2, dtype=torch.float64)
    a = SampleNoise(0, 0, 10000, N.PRIOR).draws(range(10), like).numpy()
    b = SampleNoise(0, 0, 10000, N.STEPS).draws(range(10), like).numpy()
    assert abs(correlation(a, b)) < 5 / math.sqrt(a.size)


# -- invariances --------------------------------------------------------------------------------
SHAPES = [(2,), (3,), (1, 8, 8), (3, 5, 5)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_a_draw_is_the_same_whatever_the_batch(shape, dtype):
    """Bit for bit: batches of 1, 5 and 12 at any offset, and any block the draw is computed in."""
    full = SampleNoise(3, 0, 12).draws(range(6), torch.empty(12, *shape, dtype=dtype))
    for size in (1, 5, 12):
        for start in range(0, 12 - size + 1, 4):
            part = SampleNoise(3, start, size)
            got = part.draws([5, 0, 3], torch.empty(size, *shape, dtype=dtype))
            assert torch.equal(got, full[[5, 0, 3], start : start + size])
            assert torch.equal(
                part.draw(4, torch.empty(size, *shape, dtype=dtype)), full[4, start : start + size]
            )


def test_sequential_calls_are_the_addressed_draws():
    """noise(x) is draw 0, 1, 2, … through several blocks (more draws than one block holds)."""
    x = torch.empty(64, 2)
    noise = SampleNoise(1, 0, 64)
    n = 3 * N.BLOCK_NUMBERS // x.numel()
    sequential = torch.stack([noise(x) for _ in range(n)])
    assert torch.equal(sequential, SampleNoise(1, 0, 64).draws(range(n), x))


def test_shapes_and_dtypes_of_one_size_take_disjoint_draws():
    """Two shapes (or dtypes) of one size per sample never get the same numbers."""
    noise = SampleNoise(0, 0, 8)
    a, b = noise(torch.empty(8, 4)), noise(torch.empty(8, 2, 2))
    c = noise(torch.empty(8, 4, dtype=torch.float64))
    assert not torch.allclose(a, b.reshape(8, 4))
    assert not torch.allclose(a.double(), c, atol=1e-3)
    assert torch.equal(a, noise.draw(0, torch.empty(8, 4)))


def test_a_float32_draw_is_its_float64_twin_rounded():
    """A float32 cell sees the float64 cell's noise to float32 precision."""
    noise = SampleNoise(3, 0, 100000)
    a = noise.draws(range(10), torch.empty(100000, 1)).double()
    b = noise.draws(range(10), torch.empty(100000, 1, dtype=torch.float64))
    diff = (a - b).abs()
    assert float(diff.max()) < 3e-4 and float(diff.quantile(0.999)) < 3e-6
    assert float(diff.median()) < 3e-7


def test_the_thread_count_changes_nothing():
    like = torch.empty(4096, 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = SampleNoise(0, 0, 4096).draws(range(4), like)
        torch.set_num_threads(2)
        two = SampleNoise(0, 0, 4096).draws(range(4), like)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_prior_noise_is_draw_0_of_the_prior_stream():
    z = prior_noise(5, 2, 3, (1, 2, 2))
    assert z.dtype == torch.float32 and z.shape == (3, 1, 2, 2)
    like = torch.empty(3, 1, 2, 2)
    assert torch.equal(z, SampleNoise(5, 2, 3, N.PRIOR).draw(0, like))
    assert not torch.allclose(z, SampleNoise(5, 2, 3).draw(0, like))
    z64 = prior_noise(5, 2, 3, (1, 2, 2), dtype=torch.float64)
    assert float((z64 - z.double()).abs().max()) < 1e-5


def test_bfloat16_states_get_rounded_float32_draws():
    x = torch.empty(4, 3, dtype=torch.bfloat16)
    z = SampleNoise(0, 0, 4).draw(1, x)
    assert z.dtype == torch.bfloat16
    assert torch.equal(z, SampleNoise(0, 0, 4).draw(1, x.float()).bfloat16())


# -- cost and errors ----------------------------------------------------------------------------
def test_cost_is_proportional_to_the_draws(monkeypatch):
    """No page: the first call computes 4 draws, and d calls compute fewer than 2d + 4."""
    computed = []
    real = N.normals

    def counting(base, pairs, dtype):
        computed.append(2 * len(pairs))
        return real(base, pairs, dtype)

    monkeypatch.setattr(N, "normals", counting)
    x = torch.empty(4000, 2)
    noise = SampleNoise(0, 0, 4000)
    noise(x)
    assert computed == [4]
    for d in range(2, 40):
        noise(x)
        assert sum(computed) < 2 * d + 4
    assert max(computed) * x.numel() <= N.BLOCK_NUMBERS


def test_bad_requests_say_what_is_wrong():
    noise = SampleNoise(0, 0, 4)
    with pytest.raises(ValueError, match="3 samples asked of a batch of 4"):
        noise(torch.empty(3, 2))
    with pytest.raises(ValueError, match="draw indices"):
        noise.draw(-1, torch.empty(4, 2))
    with pytest.raises(ValueError, match="draw indices"):
        noise.draw(2**32, torch.empty(4, 2))
