"""``dpmpp_2m``, ``dpmpp_3m`` and ``unipc`` by default are their official codes' methods.

The suite's N steps ending at σ = 0 are the official codes' ``sample(steps=N − 1,
denoise_to_zero=True)`` on the same σ_0 … σ_{N−1}, the same N evaluations
(docs/solvers/dpmpp_unipc.md). DPM-Solver's and UniPC's own code is not on PyPI, so:

* the step orders of the default (``lower_order_final=official``) are the official loop's,
  written here in that loop's own indexing (steps 1 … S = N − 1, warm-up, then
  min(order, S + 1 − step): DPM-Solver only when S < 10, UniPC always), and tabulated for N = 5,
  10, 11, 20; whole runs in that loop structure (UniPC: corrector after every step but the last,
  denoising at the end) equal the suite's default runs;
* every update is checked against the exact integral x_t = (std_t/std_s)·x_s +
  a_t·∫ e^{−(λ_t − λ)}·D(λ) dλ by quadrature for denoisers that are polynomials in λ: an order-k
  extrapolation is exact up to degree k − 1 (the corrector UniC-p up to p), and the published
  simplified weights (DPM-Solver's midpoint 2M, the φ₃-weighted 3M, UniPC's ρ = ½) leave an
  O(h³) local error, i.e. second order;
* k-diffusion (installable, tests/kdiffusion.py) is a third implementation: its
  ``sample_dpmpp_2m`` and ``sample_dpmpp_3m_sde`` at eta = 0 equal the suite's to round-off on
  the same denoiser, σ grid and x_T, with the options that match its rules (it has no
  ``lower_order_final``; its 3M's second-order step has the Taylor form).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from bench.core.schedule import TimeGrid
from bench.core.views import ModelView
from tests import kdiffusion
from tests.oracle import flow_limit, gaussian_model, max_err, prior, run

pytestmark = pytest.mark.usefixtures("one_thread")

DPM_FEW_STEPS = 10  # DPM-Solver's sample(): lower_order_final only "for steps < 10"


@pytest.fixture(scope="module")
def model():
    return gaussian_model(4)


def make(registry, name: str, **options):
    cls = registry.get("samplers", name).obj
    return cls(cls.Options(**options))


def grid_of(registry, sde_name: str, schedule: str, N: int):
    sde = registry.get("sdes", sde_name).obj(1000)
    return sde, registry.get("schedules", schedule).obj().grid(sde, N)


def view_of(model, sde, grid) -> ModelView:
    sde.discrete = grid.paper
    return ModelView(model.native_fn(sde), model.native, sde)


# -- the official rules, in the official loop's indexing --------------------------------------


def official_orders(order: int, S: int, below: int | None) -> list[int]:
    """Orders of the official multistep loop's steps 1 … S (``sample(steps=S)``, step k from
    timesteps[k − 1] to timesteps[k]): step k < order warms up at order k, then
    ``lower_order_final`` gives min(order, S + 1 − k), where ``below`` (DPM-Solver: 10) limits it
    to S < below."""
    out = []
    for k in range(1, S + 1):
        if k < order:
            out.append(k)
        elif below is None or S < below:
            out.append(min(order, S + 1 - k))
        else:
            out.append(order)
    return out


def suite_orders(sampler, registry, N: int) -> list[int]:
    _, grid = grid_of(registry, "vp", "logsnr", N)
    return [sampler.step_order(i, grid) for i in range(N)]


TABLES = {  # written from the rules: N → orders of steps 0 … N − 1 (the last: denoise_to_zero)
    ("dpmpp_2m", 2): {
        5: [1, 2, 2, 1, 1],
        10: [1, 2, 2, 2, 2, 2, 2, 2, 1, 1],
        11: [1] + [2] * 9 + [1],
        20: [1] + [2] * 18 + [1],
    },
    ("dpmpp_3m", 3): {
        5: [1, 2, 2, 1, 1],
        10: [1, 2, 3, 3, 3, 3, 3, 2, 1, 1],
        11: [1, 2] + [3] * 8 + [1],
        20: [1, 2] + [3] * 17 + [1],
    },
    ("unipc", 2): {
        5: [1, 2, 2, 1, 1],
        10: [1] + [2] * 7 + [1, 1],
        11: [1] + [2] * 8 + [1, 1],
        20: [1] + [2] * 17 + [1, 1],
    },
    ("unipc", 3): {
        5: [1, 2, 2, 1, 1],
        10: [1, 2, 3, 3, 3, 3, 3, 2, 1, 1],
        11: [1, 2] + [3] * 6 + [2, 1, 1],
        20: [1, 2] + [3] * 15 + [2, 1, 1],
    },
}


@pytest.mark.parametrize("key", TABLES, ids=lambda k: f"{k[0]}-{k[1]}")
def test_default_step_orders_are_the_official_rule(registry, key):
    name, order = key
    sampler = make(registry, name, **({"order": order} if name == "unipc" else {}))
    below = None if name == "unipc" else DPM_FEW_STEPS
    for N, table in TABLES[key].items():
        assert suite_orders(sampler, registry, N) == table, N
    for N in range(order + 1, 31):  # the official code asserts steps ≥ order
        assert suite_orders(sampler, registry, N) == [*official_orders(order, N - 1, below), 1]


def dpm_official_loop(sampler, grid, view, x, order: int):
    """DPM-Solver's multistep ``sample(steps=S, denoise_to_zero=True)``, S = N − 1, in its own
    bookkeeping; the update weights are the suite's (checked by quadrature below)."""
    S, lam = grid.steps - 1, grid.lambdas()
    ms = [view.denoise(x, grid.t[0])]
    for k, step_order in enumerate(official_orders(order, S, DPM_FEW_STEPS), start=1):
        c_x, cs = sampler.coefficients(lam, grid, k - 1, step_order)
        x = c_x * x + sum(c * m for c, m in zip(cs, reversed(ms)))
        if k < S:  # "we do not need to evaluate the final model value"
            ms.append(view.denoise(x, grid.t[k]))
    return view.denoise(x, grid.t[S])  # denoise_to_zero: x_N = D(x_{N−1}) (a_N = 1)


def unipc_official_loop(sampler, grid, view, x, order: int):
    """UniPC's multistep ``sample(steps=S, denoise_to_zero=True)``: each step predicts, then
    (but at the last step) evaluates the model there and corrects; that evaluation, taken at the
    predicted point, joins the history."""
    S, lam = grid.steps - 1, grid.lambdas()
    ms = [view.denoise(x, grid.t[0])]
    for k, step_order in enumerate(official_orders(order, S, None), start=1):
        c = sampler.coefficients(lam, grid, k - 1, step_order)
        predicted = c.c_x * x + sum(w * m for w, m in zip(c.predictor, reversed(ms)))
        if k == S:  # "do not run corrector at the last step"
            x = predicted
            break
        m_new = view.denoise(predicted, grid.t[k])
        x = c.c_x * x + sum(w * m for w, m in zip(c.corrector, [m_new, *reversed(ms)]))
        ms.append(m_new)
    return view.denoise(x, grid.t[S])


LOOP_CASES = [
    (sde, schedule, N)
    for sde, schedule in [("vp", "logsnr"), ("ve", "edm")]
    for N in (5, 10, 11, 20)
]


@pytest.mark.parametrize("case", LOOP_CASES, ids=lambda c: "-".join(map(str, c)))
def test_default_runs_are_the_official_loops(registry, model, case):
    """dpmpp_2m, dpmpp_3m and unipc (orders 1–3, bh1 and bh2) by default = the official loops:
    same final sample (to 1e-12, float64) and the same N evaluations."""
    sde_name, schedule, N = case
    sde, grid = grid_of(registry, sde_name, schedule, N)
    x_T = prior(sde, 8, 4)
    configs = [("dpmpp_2m", {}, 2, dpm_official_loop), ("dpmpp_3m", {}, 3, dpm_official_loop)]
    for order in (1, 2, 3):
        for variant in ("bh1", "bh2"):
            options = {"order": order, "variant": variant}
            configs.append(("unipc", options, order, unipc_official_loop))
    for name, options, order, loop in configs:
        sampler = make(registry, name, **options)
        ours, calls = run(sampler, sde, grid, model, x_T)
        view = view_of(model, sde, grid)
        with torch.no_grad():
            official = loop(sampler, grid, view, x_T, order)
        assert max_err(ours, official) < 1e-12, (name, options)
        assert calls == view.calls == N


# -- the update formulas against the exact integral -------------------------------------------


def exact_integral(a_t: float, lam_s: float, lam_t: float, poly) -> float:
    """a_t·∫_{λ_s}^{λ_t} e^{−(λ_t − λ)}·P(λ) dλ by adaptive quadrature (relative 1e-13)."""
    f = lambda lam: math.exp(lam - lam_t) * poly(lam)  # noqa: E731
    value, _ = integrate.quad(f, lam_s, lam_t, epsabs=0.0, epsrel=1e-13, limit=200)
    return a_t * value


def polynomial(degree: int, lam0: float):
    """A polynomial of exactly ``degree`` in λ − λ0 with O(1) coefficients."""
    return np.polynomial.Polynomial(
        [0.7, -1.3, 0.9, 0.6, -0.8][: degree + 1], domain=[lam0, lam0 + 2]
    )


def data_terms(sampler, grid, i: int, order: int, poly) -> dict[str, float]:
    """Σ_k c_k·P(λ_k) of step i's update(s): what replaces a_t·∫ e^{−(λ_t − λ)}·D dλ."""
    lam = grid.lambdas()
    past = [poly(lam[i - k]) for k in range(order)]  # D_i, D_{i−1}, … (newest first)
    c = sampler.coefficients(lam, grid, i, order)
    if isinstance(c, tuple) and hasattr(c, "corrector"):
        corrected = [poly(lam[i + 1]), *past]
        return {
            "predictor": sum(w * d for w, d in zip(c.predictor, past)),
            "corrector": sum(w * d for w, d in zip(c.corrector, corrected)),
        }
    return {"update": sum(w * d for w, d in zip(c[1], past))}


# (name, options, order, part, degree up to which the step is exact)
EXACTNESS = [
    ("dpmpp_2m", {}, 1, "update", 0),
    ("dpmpp_2m", {}, 2, "update", 0),  # the midpoint form: not exact for linear D
    ("dpmpp_2m", {"solver_type": "taylor"}, 2, "update", 1),
    ("dpmpp_3m", {}, 3, "update", 1),  # the published φ₃ weight: not exact for quadratic D
    ("dpmpp_3m", {"variant": "taylor"}, 3, "update", 2),
    *[
        (name, {"variant": v}, p, part, degree)
        for v in ("bh1", "bh2")
        for name, p, part, degree in [
            ("unipc", 1, "predictor", 0),
            ("unipc", 1, "corrector", 0),  # ρ^c = ½: not exact for linear D
            ("unipc", 2, "predictor", 0),  # ρ^p = ½: not exact for linear D
            ("unipc", 2, "corrector", 2),
            ("unipc", 3, "predictor", 2),
            ("unipc", 3, "corrector", 3),
        ]
    ],
]


@pytest.mark.parametrize(
    "name, options, order, part, degree",
    EXACTNESS,
    ids=[f"{e[0]}-{e[1]}-{e[2]}-{e[3]}" for e in EXACTNESS],
)
def test_updates_are_exact_up_to_their_degree(registry, name, options, order, part, degree):
    """On a non-uniform λ grid (VP, edm schedule), for D(λ) a polynomial: exact to 1e-12
    (relative) up to ``degree``, and off by more than 1e-6 at degree + 1."""
    sampler = make(registry, name, **options)
    _, grid = grid_of(registry, "vp", "edm", 12)
    lam = grid.lambdas()
    for i in (3, 6, 9):
        for deg in range(degree + 2):
            poly = polynomial(deg, lam[i])
            exact = exact_integral(grid.alpha[i + 1], lam[i], lam[i + 1], poly)
            ours = data_terms(sampler, grid, i, order, poly)[part]
            error = abs(ours - exact) / abs(exact)
            if deg <= degree:
                assert error < 1e-12, (i, deg, error)
            else:
                assert error > 1e-6, (i, deg, error)


SIMPLIFIED = [  # the published simplified weights and the degree where they are first off
    ("dpmpp_2m", {}, 2, "update", 1),
    ("dpmpp_3m", {}, 3, "update", 2),
    ("unipc", {"variant": "bh1"}, 2, "predictor", 1),
    ("unipc", {"variant": "bh2"}, 2, "predictor", 1),
    ("unipc", {"variant": "bh1"}, 1, "corrector", 1),
    ("unipc", {"variant": "bh2"}, 1, "corrector", 1),
]


@pytest.mark.parametrize(
    "name, options, order, part, degree",
    SIMPLIFIED,
    ids=[f"{e[0]}-{e[1]}-{e[2]}-{e[3]}" for e in SIMPLIFIED],
)
def test_simplified_weights_have_a_third_order_local_error(
    registry, make_sde, name, options, order, part, degree
):
    """Halving h on a uniform λ grid divides their error by 8 (7.6–8.4 checked): O(h³) local, so
    a method built on them is second order (DPM-Solver++(2M), the published 3M, UniPC-1's
    corrector and UniP-2 under UniC-2, whose corrector lifts it)."""
    sampler = make(registry, name, **options)
    sde = make_sde("edm")  # a = 1, std = t: λ = −log t
    errors = []
    for h in (0.1, 0.05):
        lam = [-1.0 + j * h for j in range(6)]
        grid = TimeGrid.build(sde, [math.exp(-v) for v in lam])
        poly = polynomial(degree, lam[3])
        exact = exact_integral(1.0, lam[3], lam[4], poly)
        errors.append(abs(data_terms(sampler, grid, 3, order, poly)[part] - exact))
    assert 7.6 < errors[0] / errors[1] < 8.4, errors


# -- k-diffusion -------------------------------------------------------------------------------

KD_CASES = [
    (sde, schedule, N)
    for sde, schedule in [("edm", "edm"), ("edm", "logsnr"), ("vp", "logsnr")]
    for N in (5, 10, 11, 20)
]


def kdiffusion_run(fn, model, sde, grid, x_T, **kwargs):
    """k-diffusion's sampler ``fn`` on σ̃_i = std_i/a_i (and 0) in its variables x̃ = x/a, fed
    the suite's exact denoiser at the grid's t_i: (final sample, counted evaluations)."""
    view = view_of(model, sde, grid)
    sigmas = [s / a for a, s in zip(grid.alpha, grid.sigma)]
    index = {s: i for i, s in enumerate(sigmas[:-1])}

    def denoiser(x_tilde, sigma):
        i = index[float(sigma[0])]
        return view.denoise(grid.alpha[i] * x_tilde, grid.t[i])

    sigmas_t = torch.tensor(sigmas, dtype=torch.float64)
    with torch.no_grad():
        x = fn(denoiser, x_T / grid.alpha[0], sigmas_t, disable=True, **kwargs)
    return x, view.calls


def no_noise(*args):
    raise AssertionError("k-diffusion drew noise at eta = 0")


@pytest.mark.parametrize("case", KD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_dpmpp_2m_equals_kdiffusion(registry, model, case):
    """``sample_dpmpp_2m`` = ``dpmpp_2m lower_order_final=off`` (k-diffusion has no
    lower_order_final; its last step is x = D, as ours) to 1e-10, same NFE. For N ≥ 11 that is
    the default (DPM-Solver lowers orders only for N ≤ 10); at N ≤ 10 the default differs."""
    sampling = kdiffusion.sampling()
    sde_name, schedule, N = case
    sde, grid = grid_of(registry, sde_name, schedule, N)
    x_T = prior(sde, 8, 4)
    theirs, nfe = kdiffusion_run(sampling.sample_dpmpp_2m, model, sde, grid, x_T)
    ours, calls = run(make(registry, "dpmpp_2m", lower_order_final="off"), sde, grid, model, x_T)
    default, _ = run(make(registry, "dpmpp_2m"), sde, grid, model, x_T)
    print(f"\n2M {case}: |k-diffusion − off| {max_err(theirs, ours):.1e}", end="")
    print(f", |k-diffusion − default| {max_err(theirs, default):.1e}", end="")
    assert max_err(theirs, ours) < 1e-10 and nfe == calls == N
    if N > DPM_FEW_STEPS:
        assert max_err(theirs, default) < 1e-10
    else:
        assert max_err(theirs, default) > 1e-6


@pytest.mark.parametrize("case", KD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_dpmpp_3m_equals_kdiffusion_3m_sde_at_eta_0(registry, model, case):
    """``sample_dpmpp_3m_sde(eta=0)`` is the deterministic DPM-Solver++(3M) with the published φ₃
    weight, no lower_order_final, x = D into σ = 0, and a second (warm-up) step in the Taylor
    form φ₂·D1 (DPM-Solver's ``solver_type="taylor"``): it equals ``dpmpp_3m
    lower_order_final=off solver_type=taylor`` to 1e-10, same NFE; the default (the official
    code's midpoint warm-up and its N ≤ 10 rule) differs from it."""
    sampling = kdiffusion.sampling()
    sde_name, schedule, N = case
    sde, grid = grid_of(registry, sde_name, schedule, N)
    x_T = prior(sde, 8, 4)
    fn = sampling.sample_dpmpp_3m_sde
    theirs, nfe = kdiffusion_run(fn, model, sde, grid, x_T, eta=0.0, noise_sampler=no_noise)
    matching = make(registry, "dpmpp_3m", lower_order_final="off", solver_type="taylor")
    ours, calls = run(matching, sde, grid, model, x_T)
    default, _ = run(make(registry, "dpmpp_3m"), sde, grid, model, x_T)
    print(f"\n3M {case}: |k-diffusion − matching| {max_err(theirs, ours):.1e}", end="")
    print(f", |k-diffusion − default| {max_err(theirs, default):.1e}", end="")
    assert max_err(theirs, ours) < 1e-10 and nfe == calls == N
    assert max_err(theirs, default) > 1e-8


# -- what the rules do at few steps (docs/solvers/dpmpp_unipc.md) -----------------------------

RULES = ("official", "diffusers", "off")
FEW = (5, 10, 20)


def few_step_errors(registry, model, name, options, sde_name, schedule):
    sde = registry.get("sdes", sde_name).obj(1000)
    x_T = prior(sde, 8, 4)
    target = flow_limit(sde, x_T)
    sampler = make(registry, name, **options)
    out = []
    for N in FEW:
        x, _ = run(sampler, sde, registry.get("schedules", schedule).obj().grid(sde, N), model, x_T)
        out.append(max_err(x, target))
    return out


@pytest.mark.parametrize("sde_name, schedule", [("vp", "logsnr"), ("ve", "edm")])
def test_few_step_errors_of_the_rules(registry, model, sde_name, schedule):
    """Max error at N = 5, 10, 20 (printed with -s for the docs). DPM-Solver's rule changes
    nothing at N = 20 (bit-identical to off) and changes 2M at N = 5 and 10 (diffusers' rule never
    changes 2M); UniPC's official and diffusers' rules differ at every N; 3M's two weights differ
    wherever a third-order step runs."""
    table = {}
    configs = [("dpmpp_3m", {"variant": v}) for v in ("reference", "taylor")]
    configs += [("dpmpp_2m", {})]
    configs += [("unipc", {"order": p, "variant": v}) for p in (2, 3) for v in ("bh1", "bh2")]
    for name, options in configs:
        for rule in RULES:
            key = (name, tuple(options.items()), rule)
            opts = {**options, "lower_order_final": rule}
            table[key] = few_step_errors(registry, model, name, opts, sde_name, schedule)
            label = " ".join([name, *(f"{k}={v}" for k, v in opts.items())])
            errs = " | ".join(f"{e:.1e}" for e in table[key])
            print(f"\n{sde_name}/{schedule} | {label} | {errs}", end="")
    two = [table[("dpmpp_2m", (), rule)] for rule in RULES]
    assert two[0][2] == two[2][2] and two[0][0] != two[2][0] and two[0][1] != two[2][1]
    assert two[1] == two[2]  # diffusers' rule never lowers a 2M step below 2 before the last
    for p in (2, 3):
        official, diffusers, _ = (
            table[("unipc", (("order", p), ("variant", "bh1")), r)] for r in RULES
        )
        assert all(a != b for a, b in zip(official, diffusers))
    reference = table[("dpmpp_3m", (("variant", "reference"),), "official")]
    taylor = table[("dpmpp_3m", (("variant", "taylor"),), "official")]
    # N = 5 under the official rule: orders 1, 2, 2, 1, 1, no third-order step to differ in
    assert reference[0] == taylor[0] and reference[1:] != taylor[1:]
