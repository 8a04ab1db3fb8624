"""The timestep at which a discrete-time (DDPM) network is evaluated for a given noise level.

A DDPM network is trained on the integer timesteps k = 0 … K−1 of a table of noise levels
σ_k = sqrt((1 − ᾱ_k)/ᾱ_k) (Ho et al. 2020, Eq. 4). A state of the VP SDE at time t has the noise
level σ̃(t) = std(t)/a(t) = e^{−λ(t)}, which is in general no entry of the table: the continuous
VP curve and DDPM's discrete product differ (timestep 999 of the 1e-4 … 0.02 table has
σ̃ = 157.4, the VP SDE at T = 1 has 152.2). The network is evaluated at the timestep whose noise
level is the state's:

* on a table entry, σ̃(t) = σ_k: exactly k;
* between two entries, σ_j ≤ σ̃(t) ≤ σ_{j+1}: k = j + w, linear in log σ,
  w = (log σ̃ − log σ_j)/(log σ_{j+1} − log σ_j), the rule of k-diffusion's discrete-schedule
  wrappers (``DiscreteSchedule.sigma_to_t``); outside the table, its first or last entry;
* ``quantize``: the entry nearest in log σ (k-diffusion's ``quantize=True``; EDM's iDDPM
  preconditioning rounds to the nearest entry in σ instead, Karras et al. 2022, Table 1).

The table is the folder's diffusers scheduler's own ``alphas_cumprod``, computed as diffusers
computes it (β = ``linspace(beta_start, beta_end, K)`` and the cumulative product, both in
float32), so the timesteps a diffusers scheduler steps through map back to themselves exactly.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch


def diffusers_alphas_cumprod(beta_start: float, beta_end: float, n_train: int) -> list[float]:
    """ᾱ_k of a linear β schedule as diffusers' DDPM-type schedulers compute it (float32)."""
    betas = torch.linspace(beta_start, beta_end, n_train, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0).tolist()


def log_sigma_of(alpha_bar: float) -> float:
    """log σ of ᾱ: log sqrt((1 − ᾱ)/ᾱ), in the arithmetic a diffusers scheduler's σ̃ is read in."""
    return math.log(math.sqrt((1.0 - alpha_bar) / alpha_bar))


@dataclass(frozen=True)
class TimestepTable:
    """The increasing log σ_k, k = 0 … K−1, of a discrete-time model's training table."""

    log_sigmas: tuple[float, ...]

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: list[float]) -> TimestepTable:
        log_sigmas = tuple(log_sigma_of(a) for a in alphas_cumprod)
        if len(log_sigmas) < 2 or any(b <= a for a, b in zip(log_sigmas, log_sigmas[1:])):
            raise ValueError("a timestep table needs K >= 2 strictly increasing noise levels")
        return cls(log_sigmas)

    def timestep(self, log_sigma: float, quantize: bool = False) -> float:
        """The (fractional) timestep of the noise level e^{log_sigma} (see the module docstring)."""
        table = self.log_sigmas
        low = min(max(bisect.bisect_right(table, log_sigma) - 1, 0), len(table) - 2)
        lo, hi = table[low], table[low + 1]
        if quantize:  # the nearer of the two neighbours (the lower one on a tie)
            return float(low + 1 if hi - log_sigma < log_sigma - lo else low)
        return low + min(max((log_sigma - lo) / (hi - lo), 0.0), 1.0)
