"""``bench order``: the exact Gaussian oracle, the order fit, and the command end to end.

* The oracle's denoiser equals the Gaussian-mixture plugin's (an independent implementation, via
  the model views), and its closed-form flow equals the probability-flow ODE of each SDE
  (Eq. 13, the SDE's own drift and diffusion) integrated by scipy's RK45 at tight tolerance.
* The fit recovers the exponent of exact power laws, widens its interval towards a drifting
  slope's limit, and leaves out errors below round-off.
* The command finds the known orders of built-in samplers inside its interval, counts NFE,
  measures a plugin file (the README's, and a broken copy of it), a ``diffusers:CLASS`` sampler,
  refuses stochastic and adaptive samplers with exit status 2, and ``--json`` gives rows.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.core.views import ModelView
from bench.run.order import ROUND_OFF, GaussianOracle, Point, fit_order
from bench.run.order_command import order_rows
from tests.oracle import gaussian_model

pytestmark = pytest.mark.usefixtures("one_thread")

README = (Path(__file__).parents[1] / "README.md").read_text()
FAST = ("32", "48", "64", "96", "128", "192", "256")
"""N for the command tests: the fit uses 96…256, inside the asymptotic range of these samplers."""


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def my_heun_source() -> str:
    """The README's plugin sampler file, as written there."""
    return re.search(r"```python\n(# my_heun\.py\n.*?)```", README, re.S).group(1)


# -- the oracle --------------------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp", "edm", "flow"])
def test_denoiser_matches_the_gaussian_mixture_plugin(registry, sde_name):
    sde = registry.get("sdes", sde_name).obj(100)
    oracle, model = GaussianOracle(), gaussian_model(4)
    view = ModelView(model.native_fn(sde), model.native, sde)
    x = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for t in (sde.eps, 0.01 * sde.T, 0.3 * sde.T, sde.T):
        a, _ = sde.marginal_coef(t)
        x_t = a * 0.5 + 3 * x
        expected = view.denoise(x_t, t)
        assert torch.allclose(oracle.denoise(sde, x_t, t), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp", "flow"])
def test_closed_form_flow_solves_the_probability_flow_ode(registry, sde_name):
    from scipy.integrate import solve_ivp

    sde = registry.get("sdes", sde_name).obj(100)
    oracle, model = GaussianOracle(), gaussian_model(4)
    ode = sde.reverse(model.native_fn(sde), probability_flow=True)
    x_T = sde.prior_sampling(torch.randn(3, 4, dtype=torch.float64))

    def rhs(t, y):
        drift, _ = ode.sde(torch.from_numpy(y).reshape(3, 4), float(t))
        return drift.reshape(-1).numpy()

    solved = solve_ivp(rhs, (sde.T, sde.eps), x_T.reshape(-1).numpy(), rtol=1e-11, atol=1e-12)
    numeric = torch.from_numpy(solved.y[:, -1]).reshape(3, 4)
    exact = oracle.flow(sde, x_T, sde.T, sde.eps)
    assert torch.allclose(exact, numeric, rtol=0, atol=1e-7 * float(x_T.abs().max()))


# -- the fit -----------------------------------------------------------------------------------
def points(steps, errors):
    return [Point(n, n, n, e) for n, e in zip(steps, errors, strict=True)]


@pytest.mark.parametrize("p", [1.0, 2.0, 3.7])
def test_fit_recovers_an_exact_power_law(p):
    steps = [4, 8, 16, 32, 64, 128, 256]
    fit = fit_order(points(steps, [0.3 * n**-p for n in steps]))
    assert fit.order == pytest.approx(p, abs=1e-9)
    assert fit.low == pytest.approx(p, abs=1e-9) and fit.high == pytest.approx(p, abs=1e-9)
    assert fit.steps == (32, 64, 128, 256)  # the upper half (at least 3 points)
    assert fit.note is None


def test_interval_reaches_the_limit_of_a_drifting_slope():
    """e = N^-2·(1 + 5/N): every local slope is above 2 and falls towards it; the interval
    reaches down to 2 through the slopes' extrapolation to N → ∞."""
    steps = [16, 24, 32, 48, 64, 96, 128]
    fit = fit_order(points(steps, [n**-2.0 * (1 + 5 / n) for n in steps]))
    assert all(s > 2 for s in fit.local) and list(fit.local) == sorted(fit.local, reverse=True)
    assert fit.order > 2.02
    assert fit.low == pytest.approx(2.0, abs=0.01) and fit.high >= max(fit.local)


def test_round_off_points_are_left_out():
    steps = [8, 16, 32, 64, 128]
    errors = [1e-6, 1e-7, 1e-8, 1e-9, 0.5 * ROUND_OFF]
    fit = fit_order(points(steps, errors))
    assert 128 not in fit.steps and fit.order == pytest.approx(np.log2(10), rel=1e-9)
    short = fit_order(points(steps[:3], [1e-10, 1e-12, 1e-13]))
    assert short.order is None and "usable" in short.note


# -- the command -------------------------------------------------------------------------------
KNOWN = {"euler": 1, "ddim": 1, "heun": 2, "dpmpp_2m": 2}


def test_known_orders_lie_in_the_interval(registry):
    sdes = ("vp", "ve", "flow")
    rows = order_rows(
        registry, {"samplers": tuple(KNOWN), "sdes": sdes, "steps": tuple(map(int, FAST))}
    )
    assert len(rows) == len(sdes) * len(KNOWN)
    for r in rows:
        p, (low, high) = KNOWN[r["sampler"]], r["interval"]
        label = f"{r['sampler']} {r['sde']}: {r['order']:.3f} [{low:.3f}, {high:.3f}]"
        assert abs(r["order"] - p) < 0.05, label
        assert low - 0.01 <= p <= high + 0.01, label  # to the interval's printed precision
        assert r["fit_steps"] == [96, 128, 192, 256]
        nominal = [q["nfe_nominal"] for q in r["points"]]
        assert [q["nfe"] for q in r["points"]] == nominal
        if r["sampler"] == "heun":
            assert nominal == [2 * int(n) - 1 for n in FAST]


def test_readme_command_measures_the_plugin_sampler(tmp_path, monkeypatch):
    """The README's `bench -p my_heun.py order …` line runs, and my_heun (EDM's Heun) has
    order 2 with the same errors as the built-in heun to round-off."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_heun.py").write_text(my_heun_source())
    (line,) = [x for x in README.splitlines() if x.startswith("bench -p my_heun.py order")]
    args = shlex.split(line.partition("#")[0])[1:]
    assert invoke(*args).exit_code == 0
    assert list(tmp_path.glob("results/order-*.png"))
    result = invoke(*args, "--json", "--no-plot", "--steps", ",".join(FAST))
    assert result.exit_code == 0, result.output
    rows = {(r["sampler"], r["sde"]): r for r in json.loads(result.stdout)}
    for sde in ("vp", "ve"):
        mine, built_in = rows["my_heun", sde], rows["heun", sde]
        assert abs(mine["order"] - 2) < 0.05
        errors = [[q["error"] for q in r["points"]] for r in (mine, built_in)]
        assert np.allclose(*errors, rtol=1e-9, atol=0)


def test_a_sampler_that_misses_its_order_shows_it(tmp_path):
    """my_heun without the trapezoidal correction is Euler's method: order 1, not 2."""
    source = my_heun_source().replace("if s[i + 1] > 0:", "if False:")
    assert source != my_heun_source()
    (tmp_path / "my_heun.py").write_text(source)
    args = ["--samplers", "my_heun", "--sdes", "vp", "--steps", ",".join(FAST), "--json"]
    result = invoke("-p", str(tmp_path / "my_heun.py"), "order", *args, "--no-plot")
    (row,) = json.loads(result.stdout)
    assert abs(row["order"] - 1) < 0.05


def test_json_rows_and_plot(tmp_path):
    plot = tmp_path / "order.png"
    args = ["order", "--samplers", "euler,dpmpp_2m", "--sdes", "vp", "--steps", "64,128,256"]
    result = invoke(*args, "--schedules", "edm,logsnr", "--json", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # stdout holds the JSON alone; the plot's path goes to stderr
    assert [(r["sampler"], r["schedule"]) for r in rows] == [
        ("euler", "edm"),
        ("euler", "logsnr"),
        ("dpmpp_2m", "edm"),
        ("dpmpp_2m", "logsnr"),
    ]
    for r in rows:
        assert {"sampler", "sde", "schedule", "order", "interval", "points"} <= set(r)
        assert r["status"] == "ok" and isinstance(r["order"], float)
    assert plot.stat().st_size > 0 and str(plot) in result.stderr


def test_text_output_lists_every_point():
    result = invoke("order", "--samplers", "heun", "--sdes", "vp", "--steps", "16,32,64,128")
    assert result.exit_code == 0, result.output
    assert "heun · vp · edm: order" in result.output
    for n, nfe in [(16, 31), (32, 63), (64, 127), (128, 255)]:
        assert re.search(rf"^\s+{n}\*?\s+{nfe}\s+{nfe}\s+\d\.\d+e-\d+", result.output, re.M)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--samplers", "ddim", "-o", "ddim.eta=0.5"], "sampler 'ddim' draws noise"),
        (["--samplers", "euler,pc"], "sampler 'pc' (here: predictor euler_maruyama"),
        (["--samplers", "ode"], "chooses its own steps"),
        (["--samplers", "eulr"], "Did you mean 'euler'"),
    ],
)
def test_refusals_exit_2(args, message):
    result = invoke("order", *args, "--sdes", "vp", "--steps", "8,16,32", "--no-plot")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_diffusers_scheduler(registry):
    """diffusers' Euler (first order) and Heun (second order, 2N − 1 counted evaluations for N
    library steps), on VP; a DDPM-type scheduler on VE is an unsupported row, not an error."""
    pytest.importorskip("diffusers")
    specs = ("diffusers:EulerDiscreteScheduler", "diffusers:HeunDiscreteScheduler")
    steps = (64, 96, 128, 192, 256)
    rows = order_rows(registry, {"samplers": specs, "sdes": ("vp", "ve"), "steps": steps})
    by = {(r["sampler"], r["sde"]): r for r in rows}
    euler, heun = by[specs[0], "vp"], by[specs[1], "vp"]
    assert abs(euler["order"] - 1) < 0.05 and abs(heun["order"] - 2) < 0.05
    assert [q["nfe"] for q in heun["points"]] == [2 * n - 1 for n in steps]
    assert [q["nfe_nominal"] for q in heun["points"]] == list(steps)
    assert by[specs[0], "ve"]["status"] == "unsupported" and by[specs[0], "ve"]["reason"]
