"""``bench order --kind weak,strong``: the exact weak moments against Monte Carlo, known weak and
strong orders, a plugin author's own SDE sampler, and the refusals.

* The design run's exact mean and variance (bench/run/order_stochastic.py) equal the sample
  mean and variance of 40,000 real runs within 5 standard errors, for a sampler on the Brownian
  path, one on per-step draws and one with a corrector.
* Euler ancestral has weak order 1 and DPM-Solver++(2M) SDE weak order 2; Euler–Maruyama on the
  reverse SDE (a plugin file here, on the suite's Brownian increments) and Euler ancestral have
  strong order 1: the reverse SDEs of VE and VP have additive noise.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.core.noise import SampleNoise
from bench.core.views import ModelView
from bench.run.order import GaussianOracle, fit_order
from bench.run.order_stochastic import exact_start, measure_strong, measure_weak, weak_run

pytestmark = pytest.mark.usefixtures("one_thread")

MY_EM = '''
import bench
from bench.core.brownian import StepNoise


class MyEM(bench.Sampler):
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, Eq. 6) on Brownian increments."""

    name = "my_em"
    default_schedule = "uniform"

    def nfe_nominal(self, steps):
        return steps

    def sample(self, x_T, grid, model, noise, callback=None):
        w, x = StepNoise(noise, model.sde.T, "brownian"), x_T
        for i, t, t_next in grid.pairs():
            if t_next == 0.0:
                return model.denoise(x, t)  # the last step lands on the denoiser
            f, g = model.sde.sde(x, t)
            x = x + (f - g**2 * model.score(x, t)) * (t_next - t) + g * w.increment(t, t_next, x)
        return x


@bench.hookimpl
def register_samplers(register):
    register(MyEM)
'''


def make(registry, name, **options):
    cls = registry.get("samplers", name).obj
    return cls(cls.Options(**options))


@pytest.mark.parametrize(
    "name,options,schedule",
    [
        ("euler_ancestral", {}, "edm"),
        ("ddim", {"eta": 1.0}, "quadratic"),
        ("sa_solver", {"tau_start": 0.0}, "logsnr"),
    ],
)
def test_exact_moments_equal_monte_carlo(registry, name, options, schedule):
    n, N, oracle = 40000, 10, GaussianOracle(dim=1)
    sde = registry.get("sdes", "vp").obj(N)
    grid = registry.get("schedules", schedule).obj().grid(sde, N)
    sampler = make(registry, name, **options)
    exact = weak_run(sampler, sde, grid, oracle)
    m, sd = exact_start(sde, oracle, grid.t[0])
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    view = ModelView(lambda x, t: oracle.denoise(sde, x, t), "x0", sde)
    with torch.no_grad():
        x = sampler.sample(m + sd * z, grid, view, SampleNoise(7, 0, n))[:, 0]
    se_mean, se_var = math.sqrt(exact.variance / n), exact.variance * math.sqrt(2 / n)
    assert abs(float(x.mean()) - exact.mean) < 5 * se_mean
    assert abs(float(x.var()) - exact.variance) < 5 * se_var
    assert exact.inputs > N // 2 and exact.nfe == N


@pytest.mark.parametrize("name,order", [("euler_ancestral", 1.0), ("dpmpp_2m_sde", 2.0)])
def test_weak_orders(registry, name, order):
    sampler = make(registry, name)
    schedule = registry.get("schedules", "edm").obj()
    result = measure_weak(sampler, registry.get("sdes", "vp").obj, schedule, (32, 64, 128, 192))
    fit = fit_order(result.points)
    assert abs(fit.order - order) < 0.15, fit


def test_strong_order_of_euler_ancestral_and_iid_note(registry):
    sdes, schedule = registry.get("sdes", "ve").obj, registry.get("schedules", "edm").obj()
    result, note = measure_strong(make(registry, "euler_ancestral"), sdes, schedule, (16, 32, 64))
    assert abs(fit_order(result.points).order - 1.0) < 0.2 and note is None
    iid = make(registry, "euler_ancestral", noise="iid")
    result, note = measure_strong(iid, sdes, schedule, (16, 32, 64))
    assert fit_order(result.points).order < 0.2 and "no strong convergence" in note


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_plugin_sampler_weak_and_strong_orders(tmp_path):
    (tmp_path / "my_em.py").write_text(MY_EM)
    args = ["-p", str(tmp_path / "my_em.py"), "order", "--samplers", "my_em", "--sdes", "ve"]
    args += ["--kind", "weak,strong", "--steps", "32,64,128", "--json", "--no-plot"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    rows = {r["kind"]: r for r in json.loads(result.stdout)}
    assert abs(rows["strong"]["order"] - 1.0) < 0.2, rows["strong"]
    assert rows["weak"]["order"] > 0.8, rows["weak"]  # measured: 1.9 at these N
    assert [p["nfe"] for p in rows["weak"]["points"]] == [32, 64, 128]


def test_text_report_names_the_kind():
    args = ["order", "--samplers", "euler_ancestral", "--sdes", "vp", "--kind", "weak"]
    result = invoke(*args, "--steps", "8,12,16", "--no-plot")
    assert result.exit_code == 0, result.output
    assert "euler_ancestral · weak · vp · edm" in result.output and "kind" in result.output


NOT_AFFINE = '''
import bench


class Jumpy(bench.Sampler):
    """Steps by a noise-dependent amount (not affine in its noise)."""

    name = "jumpy"

    def nfe_nominal(self, steps):
        return steps

    def sample(self, x_T, grid, model, noise, callback=None):
        x = x_T
        for i, t, t_next in grid.pairs():
            x = model.denoise(x, t) * grid.alpha[i + 1] + noise(x).abs() * grid.sigma[i + 1]
        return x


@bench.hookimpl
def register_samplers(register):
    register(Jumpy)
'''


@pytest.mark.parametrize(
    "args,message",
    [
        (["--samplers", "ddim", "-o", "ddim.eta=1"], "--kind weak,strong"),
        (["--samplers", "euler_ancestral", "--kind", "wobbly"], "--kind takes flow, weak, strong"),
        (["--samplers", "ggf", "--kind", "weak"], "chooses its own steps"),
    ],
)
def test_refusals_exit_2(args, message):
    result = invoke("order", *args, "--sdes", "vp", "--steps", "8,16", "--no-plot")
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_sampler_not_affine_in_its_noise_is_refused(tmp_path):
    (tmp_path / "jumpy.py").write_text(NOT_AFFINE)
    args = ["-p", str(tmp_path / "jumpy.py"), "order", "--samplers", "jumpy", "--kind", "weak"]
    result = invoke(*args, "--sdes", "vp", "--steps", "8,16", "--no-plot")
    assert result.exit_code == 2 and "not affine in its noise" in result.output, result.output


def test_draws_shared_across_n_are_no_per_step_noise(registry):
    """Restart's jumps are sequential draws whose number does not change with N: no note."""
    sdes, schedule = registry.get("sdes", "vp").obj, registry.get("schedules", "edm").obj()
    _, note = measure_strong(make(registry, "restart"), sdes, schedule, (16, 24))
    assert note is None
