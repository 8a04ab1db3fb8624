"""``ipndm_v`` and the published defaults of ``ipndm`` (docs/solvers/ipndm_ode.md).

diff-sampler, the official code of both, is not on PyPI, so the evidence is closed form, in
float64 on the exact Gaussian oracle (tests/oracle.py):

* iPNDM_v's weights equal the published formula, written here in backward differences of ε̂ and
  evaluated in exact rational arithmetic, on equal, geometric and irregular σ̃ steps; orders 1–2
  are variable-step Adams–Bashforth, order 3 is AB3 on equal steps and off it by a closed-form
  term elsewhere, order 4 is AB3 + (11/24)·∇³ on equal steps and sums to 1 only on equal or
  geometric steps;
* measured global orders: 3 for ``order=3``; 2 (edm) and 3 (logsnr, geometric steps) for 4;
* both samplers, run whole, equal a loop written in EDM's σ parameterisation (diff-sampler's):
  x ← x + (σ_{i+1} − σ_i)·Σ_j c_j·d_{i−j}, d = (x − D(x; σ))/σ, on σ_0 … σ_{N−1}, then the final
  denoising evaluation x ← D(x; σ_{N−1}) — the suite's N steps ending at σ = 0.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from bench.core.views import ModelView
from tests.oracle import exact_flow, gaussian_model, marginal, max_err, prior, run, slope

AB = {  # constant-step Adams–Bashforth, newest first
    1: [Fraction(1)],
    2: [Fraction(3, 2), Fraction(-1, 2)],
    3: [Fraction(23, 12), Fraction(-16, 12), Fraction(5, 12)],
    4: [Fraction(55, 24), Fraction(-59, 24), Fraction(37, 24), Fraction(-9, 24)],
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread is fastest and steady on a shared machine."""


@pytest.fixture(scope="module")
def model():
    return gaussian_model(4)


def make(registry, name: str, **options):
    cls = registry.get("samplers", name).obj
    return cls(cls.Options(**options))


def weights_of(steps):
    from bench_plugins.samplers.ipndm_v import ipndm_v_weights

    return ipndm_v_weights([float(h) for h in steps])


# -- the weights ---------------------------------------------------------------------------------


def published(steps: list[Fraction]) -> list[Fraction]:
    """The published iPNDM_v combination in backward differences δ_j = ε̂_{i−j} − ε̂_{i−j−1}, read
    off as weights of ε̂_i, ε̂_{i−1}, … (exact rationals). h = σ̃_{i+1} − σ̃_i, h_j the earlier
    steps, newest first."""
    k = len(steps)

    def combination(f: list[Fraction]) -> Fraction:
        d = [f[j] - f[j + 1] for j in range(k - 1)]
        out = f[0]
        if k >= 2:
            h, h1 = steps[0], steps[1]
            out += h / h1 / 2 * d[0]
        if k >= 3:
            h2 = steps[2]
            q = h1 / h2
            tau3 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
            out += tau3 * (d[0] - q * d[1])
        if k == 4:
            h3 = steps[3]
            p = h1 * (h1 + h2) / (h2 * (h2 + h3))
            scale = h * (h + h1) * (h + h1 + h2) / (h1 * (h1 + h2) * (h1 + h2 + h3))
            bracket = (1 - h / (3 * (h + h1))) / 2
            bracket += (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2))
            tau4 = bracket * scale
            out += tau4 * (d[0] - (q + p) * d[1] + p * h2 / h3 * d[2] + p * (h2 / h3 - q) * f[3])
        return out

    unit = [[Fraction(int(m == j)) for m in range(k)] for j in range(k)]
    return [combination(e) for e in unit]


GRIDS = {
    "equal": [Fraction(-1)] * 4,
    "geometric": [Fraction(-2, 5) * Fraction(3, 2) ** j for j in range(4)],
    "irregular": [Fraction(-1), Fraction(-2), Fraction(-3), Fraction(-5)],
    "edm-like": [Fraction(-3, 10), Fraction(-7, 10), Fraction(-13, 10), Fraction(-9, 4)],
}


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_weights_are_the_published_formula(k, grid):
    steps = GRIDS[grid][:k]
    want = published(steps)
    got = weights_of(steps)
    assert got == pytest.approx([float(w) for w in want], rel=1e-14, abs=1e-15)


def test_weights_on_equal_steps():
    """Orders 1–3 are the constant-step table; order 4 is (57, −65, 43, −11)/24 = AB3 + (11/24)·∇³,
    where AB4 has (3/8)·∇³."""
    for k in (1, 2, 3):
        assert published([Fraction(-1)] * k) == AB[k]
        assert weights_of([-1.0] * k) == pytest.approx([float(w) for w in AB[k]], abs=1e-15)
    four = published([Fraction(-1)] * 4)
    assert four == [Fraction(57, 24), Fraction(-65, 24), Fraction(43, 24), Fraction(-11, 24)]
    nabla3 = [1, -3, 3, -1]
    assert four == [a + Fraction(11, 24) * n for a, n in zip([*AB[3], 0], nabla3)]
    assert AB[4] == [a + Fraction(3, 8) * n for a, n in zip([*AB[3], 0], nabla3)]


@pytest.mark.parametrize("grid", ["geometric", "irregular", "edm-like"])
def test_low_orders_against_variable_step_adams_bashforth(grid):
    """Order 2 is exact variable-step AB2 (Lagrange weights, :func:`adams_bashforth`); order 3
    differs from exact AB3 by (τ₃ − τ₃^AB)·(1, −(1 + q), q), τ₃^AB = h(2h + 3h₁)/(6h₁(h₁ + h₂)),
    which vanishes on equal steps only."""
    from bench_plugins.samplers.ipndm import adams_bashforth

    h, h1, h2 = GRIDS[grid][:3]
    nodes = [0.0, float(-h1 / h), float(-(h1 + h2) / h)]
    assert weights_of([h, h1]) == pytest.approx(adams_bashforth(nodes[:2]), rel=1e-14)
    q = h1 / h2
    tau3 = Fraction(1, 2) - h * h / (6 * h1 * (h1 + h2))
    tau_ab = h * (2 * h + 3 * h1) / (6 * h1 * (h1 + h2))
    assert tau3 != tau_ab
    correction = [(tau3 - tau_ab) * c for c in (1, -(1 + q), q)]
    want = [a + float(c) for a, c in zip(adams_bashforth(nodes), correction)]
    assert weights_of([h, h1, h2]) == pytest.approx(want, rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("grid", GRIDS)
def test_order_4_weights_sum_to_one_on_equal_or_geometric_steps(grid):
    """Σ_j c_j = 1 + p·τ₄·(h₂/h₃ − h₁/h₂): consistent only where h₂² = h₁·h₃."""
    steps = GRIDS[grid]
    h, h1, h2, h3 = steps
    total = sum(published(steps))
    assert sum(weights_of(steps)) == pytest.approx(float(total), rel=1e-14)
    assert (total == 1) == (h2 * h2 == h1 * h3)
    assert (total == 1) == (grid in ("equal", "geometric"))


# -- convergence ---------------------------------------------------------------------------------

# Order 3 converges at 3. Order 4 is AB3 + 11/24·∇³ on equal steps (third order) and, on steps
# whose ratios change (edm's ρ = 7), its weights sum to 1 + O(1/N²): a local O(h³) error, global
# order 2. Log-SNR steps are geometric in σ̃ (σ̃ = e^{−λ}), where the sum is exactly 1: order 3.
# N = 256 … 2048: below N ≈ 256 order 4 on edm is pre-asymptotic (slopes 0.6–1.2 over 64 … 512).
V_STEPS = [256, 512, 1024, 2048]
V_ORDERS = {(3, "edm"): 3.0, (3, "logsnr"): 3.0, (4, "edm"): 2.0, (4, "logsnr"): 3.0}


def tweedie_limit(sde, x_T):
    """The N → ∞ limit of the final sample: the exact flow to eps, then D at eps."""
    x = exact_flow(sde, x_T, sde.eps)
    a, std = sde.marginal_coef(sde.eps)
    m, v = marginal(sde, sde.eps)
    return (x - std**2 * (x - m) / v) / a


@pytest.mark.parametrize("order, schedule", V_ORDERS)
@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp", "flow"])
def test_ipndm_v_convergence_order(registry, model, sde_name, order, schedule):
    sampler = make(registry, "ipndm_v", order=order)
    errors = []
    for N in V_STEPS:
        sde = registry.get("sdes", sde_name).obj(N)
        grid = registry.get("schedules", schedule).obj().grid(sde, N)
        x_T = prior(sde, 64, 4)
        x, nfe = run(sampler, sde, grid, model, x_T)
        assert nfe == N
        errors.append(max_err(x, tweedie_limit(sde, x_T)))
    measured = slope(V_STEPS, errors)
    print(f"ipndm_v order={order} {sde_name} {schedule}: {measured:.2f} {errors}")
    assert measured == pytest.approx(V_ORDERS[order, schedule], abs=0.3), errors


# -- whole runs against diff-sampler's loop in σ -------------------------------------------------


def sigma_space_loop(sde, grid, model, x_T, weights):
    """diff-sampler's loop in EDM's parameterisation, on x̃ = x/a and σ̃ (EDM: a = 1, σ̃ = t):
    steps on σ̃_0 … σ̃_{N−1} with the last ``len(weights(...))`` slopes d, then the final
    denoising evaluation at σ̃_{N−1}. ``weights(steps)`` takes the σ̃ steps newest first."""
    view = ModelView(model.native_fn(sde), model.native, sde)
    sigmas = [s / a for s, a in zip(grid.sigma, grid.alpha)]
    N, x, slopes = grid.steps, x_T / grid.alpha[0], []

    def denoised(x, i):
        return view.denoise(x * grid.alpha[i], grid.t[i])

    for i in range(N - 1):
        slopes.insert(0, (x - denoised(x, i)) / sigmas[i])
        order = min(4, i + 1)
        steps = [sigmas[i + 1 - j] - sigmas[i - j] for j in range(order)]
        c = weights(steps)
        x = x + (sigmas[i + 1] - sigmas[i]) * sum(w * d for w, d in zip(c, slopes[:order]))
    x = denoised(x, N - 1)  # the final denoising: the N-th evaluation
    return x, view.calls


def constant_steps(steps):
    return [float(w) for w in AB[len(steps)]]


@pytest.mark.parametrize("N", [5, 6, 10])
@pytest.mark.parametrize("sde_name, schedule", [("edm", "edm"), ("vp", "logsnr"), ("ve", "edm")])
@pytest.mark.parametrize("name", ["ipndm", "ipndm_v"])
def test_defaults_are_diff_samplers_loop(registry, model, name, sde_name, schedule, N):
    """The defaults of ``ipndm`` and ``ipndm_v`` are diff-sampler's ``ipndm_sampler`` and
    ``ipndm_v_sampler`` (max order 4) on σ̃_0 … σ̃_{N−1} with ``denoise_to_zero``: N evaluations."""
    sde = registry.get("sdes", sde_name).obj(N)
    grid = registry.get("schedules", schedule).obj().grid(sde, N)
    x_T = prior(sde, 16, 4, seed=1)
    ours, nfe = run(make(registry, name), sde, grid, model, x_T)
    rule = constant_steps if name == "ipndm" else lambda s: [float(w) for w in published(s)]
    theirs, their_nfe = sigma_space_loop(sde, grid, model, x_T, rule)
    assert nfe == their_nfe == N
    assert max_err(ours, theirs) <= 1e-12 * (1 + theirs.abs().max().item())


def test_ipndm_multistep_last_step_differs(registry, model):
    """``last_step=multistep`` (diffusers' AB step into σ̃ = 0) is another method: same steps up to
    t_{N−1}, a different last one."""
    sde = registry.get("sdes", "edm").obj(8)
    grid = registry.get("schedules", "edm").obj().grid(sde, 8)
    x_T = prior(sde, 16, 4, seed=2)
    default, _ = run(make(registry, "ipndm"), sde, grid, model, x_T)
    multistep, nfe = run(make(registry, "ipndm", last_step="multistep"), sde, grid, model, x_T)
    assert nfe == 8 and max_err(default, multistep) > 1e-3


# -- the API -------------------------------------------------------------------------------------


def test_ipndm_v_options_and_registration(registry):
    cls = registry.get("samplers", "ipndm_v").obj
    assert cls.name == "ipndm_v" and cls.default_schedule == "edm" and not cls.adaptive
    assert cls().options.order == 4 and cls().nfe_nominal(7) == 7
    assert (cls.__doc__ or "").startswith("iPNDM_v")
    for bad in (0, 5, 2.5, True):
        with pytest.raises(ValueError):
            cls.Options(order=bad)


def test_ipndm_v_order_1_is_ddim(registry, model):
    sde = registry.get("sdes", "vp").obj(10)
    grid = registry.get("schedules", "logsnr").obj().grid(sde, 10)
    x_T = prior(sde, 8, 4)
    a, _ = run(make(registry, "ipndm_v", order=1), sde, grid, model, x_T)
    b, _ = run(make(registry, "ipndm", order=1), sde, grid, model, x_T)
    assert max_err(a, b) == 0.0
    assert math.isfinite(a.abs().max().item())
    c, _ = run(make(registry, "ipndm_v", order=2), sde, grid, model, x_T)
    assert max_err(a, c) > 1e-4
