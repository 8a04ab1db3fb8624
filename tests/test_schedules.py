"""Each built-in schedule against its closed form, and the file: schedule's refusals."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from bench.cli import cli
from bench.core.schedule import sigma_range
from bench.errors import BenchError

SDES = ("ve", "vp", "subvp")


def schedule(registry, name, **options):
    cls = registry.get("schedules", name).obj
    return cls(cls.Options(**options))


def sigma_tilde(sde, t: float) -> float:
    """EDM's σ of x/a: std/a."""
    a, std = sde.marginal_coef(t)
    return std / a


@pytest.mark.parametrize("sde_name", SDES + ("flow",))
@pytest.mark.parametrize("name", ["uniform", "edm", "logsnr", "quadratic", "shift"])
@pytest.mark.parametrize("N", [1, 2, 7, 50])
def test_end_points_monotonic_and_data_end(registry, make_sde, sde_name, name, N):
    sde = make_sde(sde_name, N)
    grid = schedule(registry, name).grid(sde, N)
    assert grid.steps == N and len(grid.t) == N + 1
    assert grid.t[0] == sde.T and grid.t[-1] == 0.0
    if N > 1:
        assert grid.t[N - 1] == sde.eps
    assert all(b < a for a, b in zip(grid.t, grid.t[1:]))
    assert (grid.alpha[-1], grid.sigma[-1]) == (1.0, 0.0)
    for t, a, s in zip(grid.t[:-1], grid.alpha, grid.sigma):
        assert (a, s) == sde.marginal_coef(t)
    assert grid.paper == (name == "uniform")


def sd3_shift(s: float, t):
    """SD3's time shift (Esser et al. 2024, §5.3.2), written out."""
    return s * t / (1 + (s - 1) * t)


@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
def test_shift_is_sd3s_formula_and_diffusers_shifted_sigmas(registry, make_sde, shift):
    """On flow: t_i = s·u_i/(1 + (s − 1)·u_i), u uniform between the pre-images of T and eps;
    diffusers' FlowMatchEulerDiscreteScheduler(shift=s) shifts the same u to the same σ's."""
    diffusers = pytest.importorskip("diffusers")
    import numpy as np

    sde = make_sde("flow", 20)
    times = schedule(registry, "shift", shift=shift).times(sde, 20)

    def unshift(t):
        return t / (shift - (shift - 1) * t)

    u = np.linspace(unshift(sde.T), unshift(sde.eps), 20)
    assert times == pytest.approx(sd3_shift(shift, u), rel=1e-13, abs=0)
    assert (times[0], times[-1]) == (sde.T, sde.eps)
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(sigmas=u.tolist())
    assert sched.sigmas[:-1].double().tolist() == pytest.approx(times, rel=1e-6)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_shift_reproduces_diffusers_own_default_sigmas(registry, shift):
    """diffusers' default grid shifts linspace(1, shift(1/1000), N): on a flow SDE with T = 1
    and eps = shift(shift(1/1000)) (its doubly shifted low end) the schedule is that grid."""
    diffusers = pytest.importorskip("diffusers")
    from bench_plugins.sdes import FlowSDE

    class FlowToOne(FlowSDE):
        T = 1.0

    sde = FlowToOne(25, FlowSDE.Options(eps=sd3_shift(shift, sd3_shift(shift, 1e-3))))
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(25)
    times = schedule(registry, "shift", shift=shift).times(sde, 25)
    assert sched.sigmas[:-1].double().tolist() == pytest.approx(times, rel=2e-6)


@pytest.mark.parametrize("sde_name", ["vp", "ve", "edm"])
def test_shift_multiplies_the_noise_level(registry, make_sde, sde_name):
    """On every SDE the shift is σ̃ ↦ s·σ̃ (λ ↦ λ − log s) of the unshifted uniform grid."""
    sde = make_sde(sde_name, 12)
    times = schedule(registry, "shift", shift=3.0).times(sde, 12)
    top = sde.t_of_log_snr(sde.log_snr(sde.T) + math.log(3.0))
    bottom = sde.t_of_log_snr(sde.log_snr(sde.eps) + math.log(3.0))
    for i, t in enumerate(times):
        u = top + i / 11 * (bottom - top)
        assert sigma_tilde(sde, t) == pytest.approx(3.0 * sigma_tilde(sde, u), rel=1e-9)


def test_shift_option_is_checked(registry):
    with pytest.raises(ValueError, match="shift must be a positive number"):
        schedule(registry, "shift", shift=0.0)


@pytest.mark.parametrize("sde_name", SDES)
def test_uniform_is_the_reference_grid_bit_for_bit(make_sde, registry, sde_name):
    for N in (1, 10, 1000, 2000):
        sde = make_sde(sde_name, N)
        assert list(schedule(registry, "uniform").grid(sde, N).t[:-1]) == sde.timesteps()


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("rho", [7.0, 3.0, 1.0])
def test_edm_sigmas_are_karras_rho_polynomial(registry, make_sde, sde_name, rho):
    """σ_i = (σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ (Karras et al. 2022, Eq. 5)."""
    N = 18
    sde = make_sde(sde_name, N)
    lo, hi = sigma_range(sde)
    grid = schedule(registry, "edm", rho=rho).grid(sde, N)
    for i, t in enumerate(grid.t[:-1]):
        f = i / (N - 1)
        expected = ((1 - f) * hi ** (1 / rho) + f * lo ** (1 / rho)) ** rho
        assert sigma_tilde(sde, t) == pytest.approx(expected, rel=1e-12, abs=0)


def test_edm_narrower_sigma_range_and_refusal(registry, make_sde):
    sde = make_sde("vp", 10)
    grid = schedule(registry, "edm", sigma_min=0.02, sigma_max=80.0).grid(sde, 10)
    assert sigma_tilde(sde, grid.t[0]) == pytest.approx(80.0, rel=1e-12)
    assert sigma_tilde(sde, grid.t[9]) == pytest.approx(0.02, rel=1e-12)
    with pytest.raises(BenchError, match="sigma_min < sigma_max"):
        schedule(registry, "edm", sigma_max=1e6).grid(sde, 10)


@pytest.mark.parametrize("sde_name", SDES)
def test_logsnr_is_uniform_in_log_snr(registry, make_sde, sde_name):
    N = 12
    sde = make_sde(sde_name, N)
    lams = [sde.log_snr(t) for t in schedule(registry, "logsnr").grid(sde, N).t[:-1]]
    step = (sde.log_snr(sde.eps) - sde.log_snr(sde.T)) / (N - 1)
    for i, lam in enumerate(lams):
        assert lam == pytest.approx(sde.log_snr(sde.T) + i * step, abs=1e-11)


@pytest.mark.parametrize("sde_name", SDES)
def test_quadratic_in_time(registry, make_sde, sde_name):
    N = 9
    sde = make_sde(sde_name, N)
    times = schedule(registry, "quadratic").grid(sde, N).t[:-1]
    a, b = math.sqrt(sde.T), math.sqrt(sde.eps)
    for i, t in enumerate(times):
        assert t == pytest.approx((a + i / (N - 1) * (b - a)) ** 2, rel=1e-15)


@pytest.mark.parametrize("sde_name", SDES)
def test_log_snr_inverse_is_exact(make_sde, sde_name):
    sde = make_sde(sde_name, 10)
    for t in (1.0, 0.7, 0.3, 0.01, sde.eps):
        assert sde.t_of_log_snr(sde.log_snr(t)) == pytest.approx(t, rel=1e-12)


def test_bisection_inverse_for_sdes_without_a_closed_form(make_sde):
    """The base class's generic inverse (third-party SDEs) agrees with the closed forms."""
    from bench.core.sde import SDE

    sde = make_sde("vp", 10)
    for t in (0.9, 0.2, 1e-3):
        assert SDE.t_of_log_snr(sde, sde.log_snr(t)) == pytest.approx(t, rel=1e-12)


# -- file: -----------------------------------------------------------------------------------------
def file_schedule(registry, tmp_path, text):
    path = tmp_path / "grid.txt"
    path.write_text(text)
    return registry.get("schedules", "file").obj(None, str(path)), path


def test_file_of_times_and_of_sigmas(registry, make_sde, tmp_path):
    sde = make_sde("vp", 4)
    times, _ = file_schedule(registry, tmp_path, "# a grid\n1.0\n0.5\n\n0.1\n0.001\n")
    assert times.fixed_steps() == 4
    assert times.grid(sde, 4).t == (1.0, 0.5, 0.1, 0.001, 0.0)
    sigmas, _ = file_schedule(registry, tmp_path, "sigma\n80\n2.0\n0.02\n0\n")
    grid = sigmas.grid(sde, 3)
    assert [sigma_tilde(sde, t) for t in grid.t[:-1]] == pytest.approx([80, 2.0, 0.02], rel=1e-12)


@pytest.mark.parametrize(
    "text,message",
    [
        ("1.0\n0.5\n0.7\n", r"grid.txt:3: 0.7 does not decrease"),
        ("1.0\n", "at least two points"),
        ("1.0\nabc\n", r"grid.txt:2: 'abc' is not a number"),
        ("1.0\n-0.5\n", r"grid.txt:2: '-0.5' is not a finite non-negative number"),
    ],
)
def test_file_refusals_name_the_line(registry, tmp_path, text, message):
    with pytest.raises(BenchError, match=message):
        file_schedule(registry, tmp_path, text)


def test_file_outside_the_time_range_names_the_line(registry, make_sde, tmp_path):
    grid, _ = file_schedule(registry, tmp_path, "1.5\n0.5\n0.1\n")
    with pytest.raises(BenchError, match=r"grid.txt:1: t = 1.5 lies outside the vp SDE's"):
        grid.check(make_sde("vp", 3))
    grid, _ = file_schedule(registry, tmp_path, "sigma\n500\n0.5\n")
    with pytest.raises(BenchError, match=r"grid.txt:2: sigma 500"):
        grid.check(make_sde("vp", 3))


def test_cli_refuses_a_bad_file_before_any_work(tmp_path):
    path = tmp_path / "grid.txt"
    path.write_text("1.0\n0.9\n0.95\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["run", "--schedules", f"file:{path}", "--samples", "10", "--out", str(out)]
    )
    assert result.exit_code == 2 and "grid.txt:3" in result.output
    assert not (out / "rows.jsonl").exists()


def test_cli_file_schedule_fixes_the_steps(tmp_path):
    path = tmp_path / "grid.txt"
    path.write_text("1.0\n0.6\n0.3\n0.1\n0.001\n")
    out = tmp_path / "run"
    args = ["run", "--schedules", f"file:{path}", "--sdes", "vp", "--predictors", "euler"]
    args += ["--correctors", "none", "--steps", "10,20", "--seeds", "0", "--samples", "20"]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    import pandas as pd

    rows = pd.read_csv(out / "results.csv")
    assert list(rows["steps"]) == [5] and list(rows["nfe"]) == [5]
    assert rows["schedule"].iloc[0] == f"file:{path}"


def test_unknown_schedule_and_sampler_names_exit_2_with_a_close_match(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--schedules", "edn", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "Did you mean 'edm'?" in result.output
    result = CliRunner().invoke(cli, ["run", "--samplers", "hun", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "Did you mean 'heun'?" in result.output
    assert "Valid names:" in result.output
