"""Exact Gaussian oracles for sampler tests: closed-form probability-flow maps and a runner.

For Gaussian data N(μ, s²I) every marginal is Gaussian, p_t = N(a(t)μ, (a(t)²s² + std(t)²)I), and
the probability-flow ODE is the monotone affine map between marginals (reference doc §11.2):

    x(t) = m(t) + sqrt(v(t)/v(T))·(x_T − m(T)).

At the data end of a grid (σ = 0, a = 1) the target is μ + (s/sqrt(v(T)))·(x_T − m(T)).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from bench.core.sampler import Sampler
from bench.core.schedule import TimeGrid
from bench.core.sde import SDE
from bench.core.views import ModelView

MEAN, STD = 0.5, 0.2


def gaussian_model(dim: int = 4, mean: float = MEAN, std: float = STD, dtype=torch.float64):
    """An exact-score model of N(mean, std²·I) in ``dim`` dimensions (a one-component mixture)."""
    from bench_plugins.score_models.gmm import GaussianMixtureModel, Mixture

    mixture = Mixture.from_dict(
        {"weights": [1.0], "means": [[mean] * dim], "stds": [std]}, "test Gaussian"
    )
    return GaussianMixtureModel(mixture, "gauss-test", None, torch.device("cpu"), dtype)


def marginal(sde: SDE, t: float, mean: float = MEAN, std: float = STD) -> tuple[float, float]:
    """(m(t), v(t)) of the Gaussian data's marginal at t; the data end t = 0 is (μ, s²)."""
    if t == 0:
        return mean, std**2
    a, sigma = sde.marginal_coef(t)
    return a * mean, a * a * std**2 + sigma**2


def exact_flow(sde: SDE, x_T: Tensor, t: float = 0.0, mean: float = MEAN, std: float = STD):
    """The probability-flow solution at t from x_T at T (t = 0: the data end, σ = 0)."""
    m_T, v_T = marginal(sde, sde.T, mean, std)
    m_t, v_t = marginal(sde, t, mean, std)
    return m_t + math.sqrt(v_t / v_T) * (x_T - m_T)


def flow_limit(sde: SDE, x_T: Tensor, mean: float = MEAN, std: float = STD) -> Tensor:
    """The N → ∞ limit of every whole sampler on any grid: the exact flow down to t_{N−1} = eps,
    then the common last step into σ̃ = 0, x ← D(x; eps) (closed form for Gaussian data).

    The exact flow ends at t = 0 instead; the difference is an N-independent bias of that last
    step, ~σ̃(eps)²/(2s²)·|x̃ − μ| (8e-4 on VE and VP with their default eps, 1e-7 on sub-VP),
    which would hide every order above 1 at the N the tests use.
    """
    eps = sde.eps
    x = exact_flow(sde, x_T, eps, mean, std)
    a, sigma = sde.marginal_coef(eps)
    score = -(x - a * mean) / (a * a * std**2 + sigma**2)
    return (x + sigma**2 * score) / a


def max_err(x: Tensor, y: Tensor) -> float:
    return (x - y).abs().max().item()


def prior(sde: SDE, n: int, dim: int, seed: int = 0) -> Tensor:
    """n prior samples of ``sde`` in float64."""
    z = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return sde.prior_sampling(z)


def run(
    sampler: Sampler,
    sde: SDE,
    grid: TimeGrid,
    model,
    x_T: Tensor,
    noise_seed: int = 0,
) -> tuple[Tensor, int]:
    """Run ``sampler`` on ``grid``; returns the sample and the counted evaluations."""
    sde.discrete = grid.paper
    view = ModelView(model.native_fn(sde), model.native, sde)
    generator = torch.Generator().manual_seed(noise_seed)

    def noise(x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype)

    with torch.no_grad():
        x = sampler.sample(x_T, grid, view, noise)
    return x, view.calls


def slope(steps: list[int], errors: list[float]) -> float:
    """The least-squares slope of log(error) against log(1/N): the observed order."""
    x = np.log(1.0 / np.asarray(steps, dtype=float))
    y = np.log(np.asarray(errors, dtype=float))
    return float(np.polyfit(x, y, 1)[0])
