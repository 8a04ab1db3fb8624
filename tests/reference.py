"""Closed forms of the reference doc (score_sde.md §11), written independently of bench's code.

Test data: p_0 = N(μ, s²) in 1-D with the paper's default hyperparameters.
"""

from __future__ import annotations

import math

MU, S = 0.5, 0.2
SIGMA_MIN, SIGMA_MAX = 0.01, 50.0
BETA_MIN, BETA_MAX = 0.1, 20.0


def sigma(t: float) -> float:
    return SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t


def a(t: float) -> float:
    return math.exp(-0.25 * t**2 * (BETA_MAX - BETA_MIN) - 0.5 * t * BETA_MIN)


def beta(t: float) -> float:
    return BETA_MIN + t * (BETA_MAX - BETA_MIN)


def marginal(sde: str, t: float) -> tuple[float, float]:
    """(m(t), S(t)) of p_t for the 1-D Gaussian data (§11 table)."""
    if sde == "ve":
        return MU, S**2 + sigma(t) ** 2
    if sde == "vp":
        return a(t) * MU, a(t) ** 2 * S**2 + 1 - a(t) ** 2
    return a(t) * MU, a(t) ** 2 * S**2 + (1 - a(t) ** 2) ** 2


def score(sde: str, x: float, t: float) -> float:
    m, var = marginal(sde, t)
    return -(x - m) / var


def g2(sde: str, t: float) -> float:
    """Squared diffusion g(t)²."""
    if sde == "ve":
        return sigma(t) ** 2 * 2 * math.log(SIGMA_MAX / SIGMA_MIN)
    if sde == "vp":
        return beta(t)
    return beta(t) * (1 - math.exp(-2 * BETA_MIN * t - (BETA_MAX - BETA_MIN) * t**2))


def drift_coef(sde: str, t: float) -> float:
    """c(t) with f(x, t) = c(t)·x."""
    return 0.0 if sde == "ve" else -0.5 * beta(t)


def k_of(t: float, N: int) -> int:
    return math.floor(t * (N - 1) + 1e-9)


def sigma_k(k: int, N: int) -> float:
    return 0.0 if k < 0 else SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** (k / (N - 1))


def beta_k(k: int, N: int) -> float:
    return BETA_MIN / N + k * (BETA_MAX - BETA_MIN) / (N * (N - 1))


def predictor_affine(sde: str, rule: str, t: float, N: int) -> tuple[float, float, float]:
    """One predictor step with the exact score as x' = A·x + b + C·z; returns (A, b, C)."""
    m, var = marginal(sde, t)
    # score s = -(x - m)/var = p·x + q
    p, q = -1.0 / var, m / var
    k = k_of(t, N)
    if rule == "em":
        c, gg = drift_coef(sde, t), g2(sde, t)
        A, b = 1 - c / N + gg * p / N, gg * q / N
        return A, b, math.sqrt(gg / N)
    if rule == "em_pf":
        c, gg = drift_coef(sde, t), g2(sde, t)
        return 1 - c / N + 0.5 * gg * p / N, 0.5 * gg * q / N, 0.0
    if sde == "subvp":  # reverse diffusion = EM for sub-VP
        return predictor_affine(sde, "em" if rule == "rd" else "em_pf", t, N)
    if sde == "ve":
        G2 = sigma_k(k, N) ** 2 - sigma_k(k - 1, N) ** 2
        if rule == "rd":
            return 1 + G2 * p, G2 * q, math.sqrt(G2)
        if rule == "rd_pf":
            return 1 + 0.5 * G2 * p, 0.5 * G2 * q, 0.0
        prev2 = sigma_k(k - 1, N) ** 2
        return 1 + G2 * p, G2 * q, math.sqrt(prev2 * G2 / sigma_k(k, N) ** 2)  # ancestral
    bk = beta_k(k, N)
    if rule == "rd":
        return 2 - math.sqrt(1 - bk) + bk * p, bk * q, math.sqrt(bk)
    if rule == "rd_pf":
        return 2 - math.sqrt(1 - bk) + 0.5 * bk * p, 0.5 * bk * q, 0.0
    root = math.sqrt(1 - bk)
    return (1 + bk * p) / root, bk * q / root, math.sqrt(bk)  # ancestral


def exact_moments(sde: str, rule: str, N: int, eps: float) -> tuple[float, float, float, float]:
    """§11.4: propagate mean and variance through a whole predictor-only run.

    Returns (mean(x_mean), var(x_mean), mean(x), var(x)) of the final step.
    """
    mean, var = 0.0, (SIGMA_MAX**2 if sde == "ve" else 1.0)
    grid = [1 + (eps - 1) * i / (N - 1) for i in range(N)]
    grid[-1] = eps
    for t in grid:
        A, b, C = predictor_affine(sde, rule, t, N)
        mean_x_mean, var_x_mean = A * mean + b, A * A * var
        mean, var = mean_x_mean, var_x_mean + C * C
    return mean_x_mean, var_x_mean, mean, var
