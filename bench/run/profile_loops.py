"""Hand-written loops for ``bench profile``: the paper's PC samplers without the suite.

``minimal`` does the same arithmetic as the suite's PC loop with precomputed scalars (the floor
for any eager implementation); ``reference`` has the loop structure of the paper's reference
code. Both apply to the built-in predictors and correctors on the uniform (paper) grid only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from bench.core.sde import SDE

if TYPE_CHECKING:
    from bench.run.profile import Setup

Loop = Callable[[Tensor], Tensor]


def hand_written_loops(setup: Setup) -> dict[str, Loop]:
    """The hand-written variants that apply to ``setup`` (none off the paper's PC samplers)."""
    pc = setup.pc
    if pc is None:
        return {}
    predictor, corrector = pc.predictor.name, pc.corrector.name
    if pc.probability_flow or corrector not in REFERENCE_CORRECTORS:
        return {}
    loops: dict[str, Loop] = {}
    if predictor in MINIMAL_PREDICTORS:
        loops["minimal"] = minimal_loop(setup)
    if predictor in REFERENCE_PREDICTORS and setup.sde.name in ("ve", "vp", "subvp"):
        loops["reference"] = reference_loop(setup)
    return loops


def _linear_drift(sde: SDE, t: float, device: torch.device) -> tuple[float, float]:
    """(c_i, G_i) of the forward discretisation f_i = c_i·x, for SDEs with linear drift."""
    one = torch.ones(1, 1, dtype=torch.float64, device=device)
    f, G = sde.discretize(one, t)
    return float(f), float(G)


def minimal_loop(setup: Setup) -> Loop:
    """The same arithmetic as the paper's samplers, written out with precomputed scalars."""
    pc = setup.pc
    assert pc is not None
    sde, score, snr, n = setup.sde, setup.score, pc.snr, pc.corrector_steps
    predictor, corrector = pc.predictor.name, pc.corrector.name
    steps = []
    for t in sde.timesteps():
        if predictor == "euler_maruyama":
            c = float(sde.sde(torch.ones(1, 1, dtype=torch.float64), t)[0])
            g = sde.sde(torch.ones(1, 1, dtype=torch.float64), t)[1]
            pred = (1 - c / sde.N, g * g / sde.N, g / math.sqrt(sde.N))
        elif predictor == "reverse_diffusion":
            c, G = _linear_drift(sde, t, torch.device("cpu"))
            pred = (1 - c, G * G, G)
        elif predictor == "ancestral_sampling":
            pred = tuple(sde.ancestral_coefficients(t))
        else:
            pred = None
        alpha = sde.langevin_alpha(t) if corrector != "none" else 1.0
        std = sde.marginal_coef(t)[1]
        steps.append((t, pred, alpha, 2 * alpha * (snr * std) ** 2))
    batch = setup.x_T.shape[0]

    def run(x: Tensor) -> Tensor:
        randn = setup.noise()
        x_mean = x
        for t, pred, alpha, ald_step in steps:
            for _ in range(n if corrector != "none" else 0):
                s = score(x, t)
                z = randn(x)
                if corrector == "langevin":
                    ratio = (
                        z.reshape(batch, -1).norm(dim=-1).mean()
                        / s.reshape(batch, -1).norm(dim=-1).mean()
                    )
                    eps = (2 * alpha * snr * snr) * ratio.square()
                    x_mean = torch.addcmul(x, eps, s)
                    x = torch.addcmul(x_mean, (2 * eps).sqrt(), z)
                else:
                    x_mean = torch.add(x, s, alpha=ald_step)
                    x = torch.add(x_mean, z, alpha=math.sqrt(2 * ald_step))
            if pred is None:
                x_mean = x  # the `none` predictor returns (x, x), as in the reference
            else:
                a, b, c = pred
                s = score(x, t)
                x_mean = torch.add(x if a == 1.0 else a * x, s, alpha=b)
                x = torch.add(x_mean, randn(x), alpha=c)
        return x_mean

    return run


def reference_loop(setup: Setup) -> Loop:
    """The reference code's loop structure (score_sde ``sampling.py``), same arithmetic.

    Per step: a length-B time vector on the device, the discrete index as a device tensor,
    table lookups by that tensor, per-sample coefficients broadcast with a view. The score
    function is the same as the other variants' (it takes the float t of this suite's API).
    """
    pc = setup.pc
    assert pc is not None
    sde, score, device = setup.sde, setup.score, setup.device
    p_name, c_name = pc.predictor.name, pc.corrector.name
    snr, n = pc.snr, pc.corrector_steps
    N, T = sde.N, sde.T
    timesteps = torch.linspace(T, sde.eps, N, device=device)
    float_t = sde.timesteps()
    uses_tables = p_name == "reverse_diffusion" or c_name != "none"
    tables = _reference_tables(sde, device, setup.x_T.dtype) if uses_tables else {}
    batch = setup.x_T.shape[0]
    view = (-1,) + (1,) * (setup.x_T.dim() - 1)

    def corrector(
        x: Tensor, t: float, vec_t: Tensor, timestep: Tensor, randn
    ) -> tuple[Tensor, Tensor]:
        x_mean = x
        for _ in range(n):
            grad = score(x, t)
            noise = randn(x)
            alpha = tables["alpha"][timestep] if "alpha" in tables else torch.ones_like(vec_t)
            if c_name == "langevin":
                grad_norm = torch.norm(grad.reshape(batch, -1), dim=-1).mean()
                noise_norm = torch.norm(noise.reshape(batch, -1), dim=-1).mean()
                step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * alpha
            else:
                std = torch.full_like(vec_t, sde.marginal_coef(t)[1])
                step_size = (snr * std) ** 2 * 2 * alpha
            x_mean = x + step_size.view(view) * grad
            x = x_mean + torch.sqrt(step_size * 2).view(view) * noise
        return x, x_mean

    def predictor(
        x: Tensor, t: float, vec_t: Tensor, timestep: Tensor, randn
    ) -> tuple[Tensor, Tensor]:
        if p_name == "euler_maruyama":
            dt = -1.0 / N
            drift, diffusion = _reference_sde(sde, x, vec_t)
            drift = drift - (diffusion**2).view(view) * score(x, t)
            x_mean = x + drift * dt
            return x_mean + diffusion.view(view) * math.sqrt(-dt) * randn(x), x_mean
        f, G = _reference_discretize(sde, tables, x, vec_t, timestep)
        x_mean = x - (f - (G**2).view(view) * score(x, t))
        return x_mean + G.view(view) * randn(x), x_mean

    def run(x: Tensor) -> Tensor:
        randn = setup.noise()
        x_mean = x
        for i in range(N):
            vec_t = torch.ones(batch, device=device) * timesteps[i]
            timestep = (vec_t * (N - 1) / T).long()
            if c_name != "none":
                x, x_mean = corrector(x, float_t[i], vec_t, timestep, randn)
            if p_name != "none":
                x, x_mean = predictor(x, float_t[i], vec_t, timestep, randn)
            else:
                x_mean = x
        return x_mean

    return run


REFERENCE_PREDICTORS = ("euler_maruyama", "reverse_diffusion", "none")
MINIMAL_PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none")
REFERENCE_CORRECTORS = ("langevin", "ald", "none")


def _reference_tables(sde: SDE, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    N = sde.N
    out: dict[str, Tensor] = {}
    if sde.name == "ve":
        out["sigmas"] = torch.tensor(
            [sde.discrete_sigma(k) for k in range(N)], dtype=dtype, device=device
        )
    else:
        betas = torch.tensor([sde.discrete_beta(k) for k in range(N)], dtype=dtype, device=device)
        out["betas"], out["alpha"] = betas, 1 - betas
    return out


def _reference_sde(sde: SDE, x: Tensor, vec_t: Tensor) -> tuple[Tensor, Tensor]:
    """Drift and per-sample diffusion with the time as a device vector (reference ``sde()``)."""
    view = (-1,) + (1,) * (x.dim() - 1)
    if sde.name == "ve":
        sigma = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** vec_t
        return torch.zeros_like(x), sigma * math.sqrt(
            2 * (math.log(sde.sigma_max) - math.log(sde.sigma_min))
        )
    beta_t = sde.beta_min + vec_t * (sde.beta_max - sde.beta_min)
    drift = -0.5 * beta_t.view(view) * x
    if sde.name == "vp":
        return drift, torch.sqrt(beta_t)
    discount = 1.0 - torch.exp(-2 * sde.beta_min * vec_t - (sde.beta_max - sde.beta_min) * vec_t**2)
    return drift, torch.sqrt(beta_t * discount)


def _reference_discretize(sde, tables, x, vec_t, timestep):
    """Forward discretisation as the reference writes it, with device-side tables."""
    view = (-1,) + (1,) * (x.dim() - 1)
    if sde.name == "ve":
        sigma = tables["sigmas"][timestep]
        adjacent = torch.where(
            timestep == 0, torch.zeros_like(vec_t), tables["sigmas"][(timestep - 1).clamp(min=0)]
        )
        return torch.zeros_like(x), torch.sqrt(sigma**2 - adjacent**2)
    if sde.name == "vp":
        beta = tables["betas"][timestep]
        return torch.sqrt(1 - beta).view(view) * x - x, torch.sqrt(beta)
    drift, diffusion = _reference_sde(sde, x, vec_t)  # sub-VP: Euler–Maruyama discretisation
    return drift / sde.N, diffusion / math.sqrt(sde.N)
