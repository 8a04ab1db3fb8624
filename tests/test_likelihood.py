"""The likelihood through the probability-flow ODE (Song et al. 2021, App. D.2, Eq. 39–40),
checked where the answer is known: exact-score Gaussian oracles, whose log p_eps is closed form.

* the 1-D Gaussian's ODE solution is exact (score_sde.md §11.3: Δlogp, z = x(T), log p_eps(x0)
  and the reference-style value with the SDE's prior);
* D-dimensional Gaussians and a mixture: the exact trace within 1e-4 of the closed form, and
  Hutchinson's estimate (Rademacher and Gaussian probes) with its mean within its interval;
* the bookkeeping: NFE counted by the view, VJPs per probe, bits/dim offsets, autograd under
  ``no_grad``, the ``nll`` metric in a run and the ``bench likelihood`` command.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.core.views import ModelView
from bench.likelihood import (
    DataMap,
    Settings,
    bits_per_dim,
    draw_probes,
    evaluate,
    integrate_batch,
    mixture_logp,
)
from bench.likelihood.evaluate import differentiable_fn, halfwidth
from tests.oracle import gaussian_model

CPU = torch.device("cpu")

# score_sde.md §11.3: x0 = 0.62 under N(0.5, 0.2²): closed Δlogp, exact log p_eps(x0) and the
# reference's prior_logp(z) + Δlogp (fixed prior N(0, 1), or N(0, σ_max²) for VE). The last column
# is the notes' RK45 run (tolerance 1e-5), within 2e-5 of its closed form computed below.
VECTORS = {
    "ve": (1e-5, 5.52022027, 0.50969968, 0.50364335),
    "vp": (1e-3, 1.60809959, 0.50957324, 0.50758408),
    "subvp": (1e-3, 1.60945041, 0.51045199, 0.50843540),
}


def _closed_form(
    sde, eps: float, x0: float = 0.62, mu: float = 0.5, s2: float = 0.04, T: float = 1.0
):
    """(Δlogp, z, log p_eps(x0), prior_logp(z) + Δlogp) in closed form (§11.3), prior at T."""
    (a_T, std_T), (a_e, std_e) = sde.marginal_coef(T), sde.marginal_coef(eps)
    S_T, S_e = a_T**2 * s2 + std_T**2, a_e**2 * s2 + std_e**2
    z = a_T * mu + math.sqrt(S_T / S_e) * (x0 - a_e * mu)
    delta = 0.5 * math.log(S_T / S_e)
    exact = -0.5 * math.log(2 * math.pi * S_e) - (x0 - a_e * mu) ** 2 / (2 * S_e)
    prior = float(sde.prior_logp(torch.tensor([[z]], dtype=torch.float64)))
    return delta, z, exact, prior + delta


def _mixture(dim: int = 3):
    """Three unequal isotropic components in ``dim`` dimensions (float64)."""
    from bench_plugins.score_models.gmm import GaussianMixtureModel, Mixture

    means = [[1.0] * dim, [-1.0] + [0.5] * (dim - 1), [0.0] * dim]
    spec = {"weights": [0.5, 0.3, 0.2], "means": means, "stds": [0.3, 0.2, 0.5]}
    mixture = Mixture.from_dict(spec, "test mixture")
    return GaussianMixtureModel(mixture, "mixture-test", None, CPU, torch.float64)


def _estimate(model, sde, x, **settings):
    result = evaluate(model, sde, x, Settings(**settings), device=CPU, dtype=torch.float64)
    return result, result.logp.reshape(x.shape[0], -1).mean(1)


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_the_1d_gaussian_solution_is_exact(name, make_sde, one_thread):
    """§11.3: Δlogp = ½ln(S(T)/S(eps)), z = m(T) + sqrt(S(T)/S(eps))(x0 − m(eps)), and
    log p_T(z) + Δlogp = log p_eps(x0); the reference's fixed prior gives its own value."""
    eps, *vector = VECTORS[name]
    sde, model = make_sde(name), gaussian_model(dim=1)
    delta, z, exact, reference = _closed_form(sde, eps)
    assert [delta, exact, reference] == pytest.approx(vector, abs=2e-5)
    x0 = torch.tensor([[0.62]], dtype=torch.float64)
    view = ModelView(model.native_fn(sde), model.native, sde)
    probes = draw_probes("rademacher", 1, tuple(x0.shape), torch.Generator().manual_seed(0))
    traj = integrate_batch(view, sde, x0, probes, eps=eps, rtol=1e-8, atol=1e-8)
    assert float(traj.delta_logp) == pytest.approx(delta, abs=2e-6)
    assert float(traj.z) == pytest.approx(z, rel=1e-6)
    assert traj.forwards == view.calls and traj.vjps == traj.forwards
    for prior, value in (("exact", exact), ("sde", reference)):
        _, logp = _estimate(model, sde, x0, eps=eps, prior=prior, rtol=1e-8, atol=1e-8)
        assert float(logp) == pytest.approx(value, abs=2e-6)
    # At the default tolerances (1e-5, the paper's) the value is right to about 1e-5.
    _, logp = _estimate(model, sde, x0, eps=eps, prior="exact")
    assert float(logp) == pytest.approx(exact, abs=5e-5)


def test_the_1d_gaussian_solution_is_exact_on_flow(make_sde, one_thread):
    """The flow SDE (prior at its T = 1 − 10⁻³): Δlogp, z and log p_eps(x0) as in §11.3, both
    with the exact marginal at T and with the SDE's N(0, 1) prior."""
    sde, model, eps = make_sde("flow"), gaussian_model(dim=1), 1e-5
    delta, z, exact, reference = _closed_form(sde, eps, T=sde.T)
    x0 = torch.tensor([[0.62]], dtype=torch.float64)
    view = ModelView(model.native_fn(sde), model.native, sde)
    probes = draw_probes("rademacher", 1, tuple(x0.shape), torch.Generator().manual_seed(0))
    traj = integrate_batch(view, sde, x0, probes, eps=eps, rtol=1e-8, atol=1e-8)
    assert float(traj.delta_logp) == pytest.approx(delta, abs=2e-6)
    assert float(traj.z) == pytest.approx(z, rel=1e-6)
    for prior, value in (("exact", exact), ("sde", reference)):
        _, logp = _estimate(model, sde, x0, eps=eps, prior=prior, rtol=1e-8, atol=1e-8)
        assert float(logp) == pytest.approx(value, abs=2e-6)
    assert abs(reference - exact) > 1e-4  # the prior's mismatch at T is visible, not ignored


@pytest.mark.parametrize(
    "model_name,sde_name",
    [
        ("gauss4", "ve"),
        ("gauss4", "vp"),
        ("gauss4", "subvp"),
        ("gauss4", "flow"),
        ("mixture", "ve"),
        ("mixture", "vp"),
        ("mixture", "flow"),
    ],
)
def test_the_exact_trace_matches_the_closed_form(model_name, sde_name, make_sde, one_thread):
    model = gaussian_model(dim=4) if model_name == "gauss4" else _mixture()
    sde = make_sde(sde_name)
    x = model.sample_data(12, torch.Generator().manual_seed(1))
    result, logp = _estimate(model, sde, x, hutchinson="exact", prior="exact", rtol=1e-7, atol=1e-7)
    exact = mixture_logp(model, sde, x, 1e-5)
    assert (logp - exact).abs().max() < 1e-4
    summary = result.summary()
    assert summary["nll_exact"] == pytest.approx(-float(exact.mean()))
    assert abs(summary["nll_error"]) < 1e-4
    assert summary["vjp"] == summary["nfe"] * x[0].numel()  # D products per evaluation


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
@pytest.mark.parametrize("model_name", ["gauss4", "mixture"])
def test_hutchinson_is_unbiased_within_its_interval(kind, model_name, make_sde, one_thread):
    """Mean estimate − closed form, paired over the same points, lies inside its own 95 %
    interval (the probes' noise); the reported probe standard error agrees with that spread."""
    model = gaussian_model(dim=4) if model_name == "gauss4" else _mixture()
    sde = make_sde("vp")
    x = model.sample_data(48, torch.Generator().manual_seed(3))
    result, logp = _estimate(model, sde, x, hutchinson=kind, probes=3, prior="exact", seed=5)
    error = logp - mixture_logp(model, sde, x, 1e-5)
    summary = result.summary()
    assert summary["vjp"] == 3 * summary["nfe"]
    if model_name == "gauss4" and kind == "rademacher":  # Jacobian ∝ I: εᵀ(cI)ε = cD exactly
        assert error.abs().max() < 1e-3
        return
    assert abs(float(error.mean())) < halfwidth(error)
    assert summary["nll_probe_se"] == pytest.approx(float(error.std()) / math.sqrt(48), rel=0.5)
    assert summary["nll_ci"] > summary["nll_probe_se"]  # data points vary more than probes


def test_counts_batches_and_no_grad(make_sde, one_thread):
    """NFE is the view's count (= the solver's evaluations); batching changes a point's value
    only through the shared step control; the estimate works inside ``torch.no_grad``."""
    model, sde = _mixture(2), make_sde("ve")
    x = model.sample_data(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole, a = _estimate(model, sde, x, probes=2, prior="exact")
        split, b = _estimate(model, sde, x, probes=2, prior="exact", batch_size=3)
    assert len(split.forwards) == 3 and split.sizes == [3, 3, 2]
    assert (a - b).abs().max() < 1e-3  # same probes per point whatever the batch size
    summary = whole.summary()
    assert summary["nfe"] == whole.forwards[0] and summary["vjp"] == 2 * whole.forwards[0]


def test_a_no_grad_decorated_model_is_differentiated_through_its_original(make_sde):
    model, sde = gaussian_model(dim=2), make_sde("vp")
    inner = model.native_fn(sde)
    decorated = torch.no_grad()(inner)
    model.native_fn = lambda _sde: decorated
    assert differentiable_fn(model, sde, CPU, torch.float64) is inner
    model.native_fn = lambda _sde: lambda x, t: torch.no_grad()(inner)(x, t)
    with pytest.raises(Exception, match="not differentiable"):
        differentiable_fn(model, sde, CPU, torch.float64)


def test_bits_per_dim_offsets():
    """8-bit images: +8 for [0, 1] models, +7 for [−1, 1] models (the reference's offsets)."""

    class Centered:
        spec = "centered"

        def to_data(self, x):
            return (x + 1) / 2

    dmap = DataMap.of(Centered())
    assert (dmap.scale, dmap.shift) == (0.5, 0.5)
    logp_model = torch.tensor([-100.0])
    data = dmap.logp_to_data(logp_model, 64)
    expected = 100.0 / (64 * math.log(2)) + 7
    assert float(bits_per_dim(data, 64, 8)) == pytest.approx(expected)
    assert float(bits_per_dim(logp_model, 64, None)) == pytest.approx(100 / (64 * math.log(2)))


def test_digits_model_bits_per_dim_smoke(registry, one_thread):
    """A shipped network (its score runs under no_grad): four dequantised test digits, loose
    tolerances — finite, a plausible bits/dim, one VJP per evaluation."""
    from bench.likelihood import evaluation_points
    from bench.run.setup import Environment

    env = Environment.create(
        registry, {"device": "cpu", "dtype": "float32", "model": "digits-vp", "threads": "1"}
    )
    sde = registry.get("sdes", "vp").obj(1000)
    points, text = evaluation_points(env.model, env.metric_context(), None, None, 4)
    settings = Settings(rtol=1e-2, atol=1e-2)
    summary = evaluate(env.model, sde, points, settings, device=CPU, data=text).summary()
    assert summary["dequantized"] and "test split" in summary["data"]
    assert 0 < summary["bpd"] < 8 and summary["vjp"] == summary["nfe"]


def _nll_plugin_args(registry) -> list[str]:
    """``-p bench_plugins.nll`` until the built-in entry point exists."""
    return [] if "nll" in registry.lookup["metrics"] else ["-p", "bench_plugins.nll"]


def test_the_nll_metric_in_a_run(registry, tmp_path):
    common = [
        "run", "--model", "gauss1d", "--sdes", "vp", "--predictors", "euler", "--correctors",
        "none", "--steps", "10", "--samples", "32", "--metrics", "swd,nll", "--no-progress",
    ]  # fmt: skip
    runner = CliRunner()
    plugin = _nll_plugin_args(registry)
    cell_sde = runner.invoke(cli, [*plugin, *common, "--out", str(tmp_path / "a")])
    assert cell_sde.exit_code == 0, cell_sde.output  # the oracle takes the cell's SDE
    result = runner.invoke(
        cli, [*plugin, *common, "-o", "nll.sde=vp", "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "b" / "rows.jsonl").read_text().splitlines()[0])
    same = json.loads((tmp_path / "a" / "rows.jsonl").read_text().splitlines()[0])
    assert same["nll"] == row["nll"]
    assert row["status"] == "ok" and row["nll_points"] == 32 and row["nll_nfe"] > 0
    model = gaussian_model(dim=1, dtype=torch.float32)
    x = model.sample_data(32, torch.Generator().manual_seed(2022))
    exact = -float(model.log_prob(x).mean())  # p_eps ≈ p_0 at eps = 1e-5
    assert row["nll"] == pytest.approx(exact, abs=0.02)


def test_the_likelihood_command(tmp_path):
    runner = CliRunner()
    out = tmp_path / "nll.json"
    args = ["likelihood", "--model", "ring8", "--sdes", "vp", "--points", "40", "--prior", "exact"]
    result = runner.invoke(cli, [*args, "--hutchinson", "exact", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())
    assert row["points"] == 40 and row["nll_probe_se"] is None
    assert abs(row["nll_error"]) < 1e-3 and row["vjp"] == 2 * row["nfe"]
    text = runner.invoke(cli, args)
    assert text.exit_code == 0 and "closed-form nll" in text.output
    bad = runner.invoke(
        cli, ["likelihood", "--model", "digits-vp", "--sdes", "ve", "--points", "2"]
    )
    assert bad.exit_code == 2 and "trained for the vp SDE" in bad.output
    bad = runner.invoke(
        cli, ["likelihood", "--model", "ring8", "--prior", "exact", "--data", "digits"]
    )
    assert bad.exit_code == 2
