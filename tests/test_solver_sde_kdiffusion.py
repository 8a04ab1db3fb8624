"""``euler_ancestral``, ``dpmpp_2m_sde`` and ``dpmpp_3m_sde`` equal k-diffusion's samplers.

k-diffusion (tests/kdiffusion.py) is an independent implementation: its ``sample_euler_ancestral``,
``sample_dpmpp_2m_sde`` and ``sample_dpmpp_3m_sde`` run in EDM's variables x̃ = x/a on σ̃_i =
std_i/a_i (and 0), fed the suite's exact Gaussian denoiser at the grid's t_i, the same x_T and,
through their ``noise_sampler(σ, σ_next)`` argument, the same noise: the step's normalised
Brownian increment of the suite's path (:class:`bench.core.brownian.BrownianPath`) at the
matching times. The final samples agree to 1e-10 in float64, with the same NFE; the ``iid``
option feeds the cell's sequential draws instead and agrees the same way.
"""

from __future__ import annotations

import pytest
import torch

from bench.core.brownian import BrownianPath
from bench.core.noise import SampleNoise
from bench.core.views import ModelView
from tests import kdiffusion
from tests.oracle import gaussian_model, max_err, prior

pytestmark = pytest.mark.usefixtures("one_thread")

SEED, BATCH = 3, 6
GRIDS = [("ve", "edm", 7), ("vp", "edm", 12), ("vp", "logsnr", 5), ("subvp", "uniform", 9)]
GRIDS += [("edm", "edm", 10)]


@pytest.fixture(scope="module")
def model():
    return gaussian_model(4)


def setup(registry, sde_name: str, schedule: str, N: int):
    sde = registry.get("sdes", sde_name).obj(1000)
    grid = registry.get("schedules", schedule).obj().grid(sde, N)
    sde.discrete = grid.paper
    return sde, grid


def ours(registry, model, name, sde, grid, x_T, **options):
    cls = registry.get("samplers", name).obj
    view = ModelView(model.native_fn(sde), model.native, sde)
    with torch.no_grad():
        x = cls(cls.Options(**options)).sample(x_T, grid, view, SampleNoise(SEED, 0, BATCH))
    return x, view.calls


def theirs(fn, model, sde, grid, x_T, noise: str, **kwargs):
    """k-diffusion's ``fn`` on the grid's σ̃, with the suite's noise at the matching times."""
    view = ModelView(model.native_fn(sde), model.native, sde)
    sigmas = [s / a for a, s in zip(grid.alpha, grid.sigma)]
    index = {s: i for i, s in enumerate(sigmas)}
    path, draws = BrownianPath(SEED, 0, BATCH, sde.T), SampleNoise(SEED, 0, BATCH)

    def denoiser(x_tilde, sigma):
        i = index[float(sigma[0])]
        return view.denoise(grid.alpha[i] * x_tilde, grid.t[i])

    def noise_sampler(sigma, sigma_next):
        i, j = index[float(sigma)], index[float(sigma_next)]
        like = x_T
        return path.normal(grid.t[i], grid.t[j], like) if noise == "brownian" else draws(like)

    sigmas_t = torch.tensor(sigmas, dtype=torch.float64)
    with torch.no_grad():
        x = fn(
            denoiser,
            x_T / grid.alpha[0],
            sigmas_t,
            disable=True,
            noise_sampler=noise_sampler,
            **kwargs,
        )
    return x, view.calls


CASES = [
    ("euler_ancestral", "sample_euler_ancestral", {}),
    ("euler_ancestral", "sample_euler_ancestral", {"eta": 0.6, "s_noise": 1.1}),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {}),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {"eta": 0.5, "solver_type": "heun"}),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {"eta": 0.0}),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", {}),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", {"eta": 0.3, "s_noise": 0.9}),
]


@pytest.mark.parametrize("grid_case", GRIDS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[2]}")
def test_equals_kdiffusion_on_the_same_brownian_noise(registry, model, case, grid_case):
    name, fn_name, options = case
    sde, grid = setup(registry, *grid_case)
    x_T = prior(sde, BATCH, 4)
    fn = getattr(kdiffusion.sampling(), fn_name)
    mine, calls = ours(registry, model, name, sde, grid, x_T, **options)
    ref, nfe = theirs(fn, model, sde, grid, x_T, "brownian", **options)
    assert max_err(mine, ref) < 1e-10 and calls == nfe == grid.steps


@pytest.mark.parametrize("case", CASES[:1] + CASES[2:3], ids=lambda c: c[0])
def test_iid_option_is_the_sequential_draws(registry, model, case):
    name, fn_name, options = case
    sde, grid = setup(registry, "vp", "edm", 8)
    x_T = prior(sde, BATCH, 4)
    fn = getattr(kdiffusion.sampling(), fn_name)
    mine, _ = ours(registry, model, name, sde, grid, x_T, noise="iid", **options)
    ref, _ = theirs(fn, model, sde, grid, x_T, "iid", **options)
    brownian, _ = ours(registry, model, name, sde, grid, x_T, **options)
    assert max_err(mine, ref) < 1e-10 and max_err(mine, brownian) > 1e-3
