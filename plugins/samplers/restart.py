"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes").

An ODE sampler (Heun, as in the paper) runs down the grid; on reaching a restart interval's lower
level σ_min it adds forward noise back up to σ_max, x̃ ← x̃ + s_noise·sqrt(σ_max² − σ_min²)·z (the
forward kernel from σ_min to σ_max in EDM's scaled variables x̃ = x/a, σ̃ = std/a), and runs the
ODE down the interval again on its own Karras grid of N_restart levels, K times (Alg. 1). The
jumps contract the accumulated error as SDE noise does, while the ODE keeps the discretisation
error small. The official code is Newbeeer/diffusion_restart_sampling, ``restart_sampler`` in
``benchmarks/generate_restart.py`` (EDM's sampler with ``restart_info``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench_plugins.samplers.heun import time_of_level
from torch import Tensor

from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.sde import SDE
from bench.core.views import ModelView
from bench.errors import Unsupported


def karras_levels(sigma_max: float, sigma_min: float, n: int, rho: float) -> list[float]:
    """EDM's n levels from σ_max down to σ_min (Karras et al. 2022, Eq. 5)."""
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(hi + j / (n - 1) * (lo - hi)) ** rho for j in range(n)]


class Restart(Sampler):
    """Restart sampling (Xu et al. 2023, Alg. 1; Newbeeer/diffusion_restart_sampling).

    Main loop: EDM's Heun (Alg. 1 of Karras et al. 2022) over the grid's σ̃_i, an Euler step into
    σ̃ = 0. Each restart interval [N_restart, K, σ_min, σ_max] is attached to the grid level
    σ̃_j nearest σ_min (j > 0, as the official code: after the main step into σ̃_j); there, K
    times: x̃ ← x̃ + s_noise·sqrt(σ_max² − σ̃_j²)·z, then N_restart − 1 Heun steps over
    ``karras_levels(σ_max, σ̃_j, N_restart, rho)``. NFE = 2N − 1 + Σ 2K·(N_restart − 1). The
    model is evaluated at the time t̂ of each level (σ̃(t̂) = σ̂; above σ̃(T) only on SDEs that
    map it back, as ``heun``'s churn). z is a fresh draw per jump (the official code's, and a
    jump is no Brownian increment); the cell's sequential draws number the jumps, so runs at
    any N share them.
    """

    name = "restart"
    default_schedule = "edm"

    @dataclass
    class Options:
        """``intervals``: a JSON list of [N_restart, K, σ_min, σ_max] (σ̃ levels; default the
        paper's CIFAR-10 EDM setting at 18 steps, [[3, 2, 0.14, 0.30]]); ``s_noise`` (the
        official default 1); ``rho``: the Karras exponent of the restart grids (7)."""

        intervals: list[list[float]] = field(default_factory=lambda: [[3, 2, 0.14, 0.30]])
        s_noise: float = 1.0
        rho: float = 7.0

        def __post_init__(self) -> None:
            for iv in self.intervals:
                if not (isinstance(iv, list) and len(iv) == 4):
                    raise ValueError(
                        f"an interval is [N_restart, K, sigma_min, sigma_max], got {iv}"
                    )
                if not (int(iv[0]) == iv[0] >= 2 and int(iv[1]) == iv[1] >= 0):
                    raise ValueError(f"need integers N_restart >= 2 and K >= 0, got {iv}")
                if not 0.0 < iv[2] < iv[3]:
                    raise ValueError(f"need 0 < sigma_min < sigma_max, got {iv}")
            if not self.s_noise >= 0.0 or not self.rho > 0.0:
                raise ValueError(f"need s_noise >= 0 and rho > 0, got {self.s_noise}, {self.rho}")

    def nfe_nominal(self, steps: int) -> int:
        """Heun's 2N − 1 and 2 evaluations per restart step: 2N − 1 + Σ 2K(N_restart − 1)."""
        extra = sum(2 * int(k) * (int(n) - 1) for n, k, _, _ in self.options.intervals)
        return 2 * steps - 1 + extra

    def attachments(self, grid: TimeGrid) -> dict[int, list[float]]:
        """Grid index j → its interval (the level σ̃_j nearest σ_min, j ≥ 1)."""
        levels = [s / a for a, s in zip(grid.alpha, grid.sigma)]
        out: dict[int, list[float]] = {}
        for iv in self.options.intervals:
            j = min(range(len(levels)), key=lambda k: abs(levels[k] - iv[2]))
            if j == 0 or j == grid.steps or j in out or not iv[3] > levels[j]:
                raise Unsupported(
                    f"restart: interval {iv} lands on grid level {j} of {grid.steps} "
                    f"(σ̃ = {levels[j]:.4g}): not an inner level below σ_max, or taken twice"
                )
            out[j] = iv
        return out

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run Restart from x_T at t_0 = T to the data end t_N = 0.

        Args:
            x_T: the prior sample at t_0 = T.
            grid: the times t_0 > … > t_{N−1} and t_N = 0 with a(t_i), std(t_i).
            model: the model's views; ``model.denoise`` is evaluated as the class doc counts.
            noise: the cell's noise: one standard normal per restart jump.
            callback: called after every main step (and its restarts) with ``{"i", "t", "x"}``.

        Returns:
            The sample at the data end.
        """
        opt, sde = self.options, model.sde
        top = sde.marginal_coef(sde.T)[1] / sde.marginal_coef(sde.T)[0]  # σ̃(T)
        at = self.attachments(grid)
        x = x_T / grid.alpha[0]  # the scaled state x̃
        for i, t, t_next in grid.pairs():
            levels = (grid.sigma[i] / grid.alpha[i], grid.sigma[i + 1] / grid.alpha[i + 1])
            x = heun_step(model, x, levels, (t, t_next), (grid.alpha[i], grid.alpha[i + 1]))
            for _ in range(int(at[i + 1][1]) if i + 1 in at else 0):
                n, _, _, s_max = at[i + 1]
                sub = karras_levels(s_max, levels[1], int(n), opt.rho)
                times = [time_of_level(sde, s, top) for s in sub[:-1]] + [t_next]
                x = x + noise(x) * (opt.s_noise * math.sqrt(s_max**2 - levels[1] ** 2))
                for k in range(len(sub) - 1):
                    a = (coef(sde, times[k]), coef(sde, times[k + 1]))
                    x = heun_step(model, x, (sub[k], sub[k + 1]), (times[k], times[k + 1]), a)
            if callback is not None:
                callback({"i": i, "t": t, "x": x * grid.alpha[i + 1]})
        return x * grid.alpha[-1]


def coef(sde: SDE, t: float) -> float:
    return sde.marginal_coef(t)[0]


def heun_step(
    model: ModelView,
    x: Tensor,
    levels: tuple[float, float],
    times: tuple[float, float],
    alphas: tuple[float, float],
) -> Tensor:
    """One step of EDM's Heun (Karras et al. 2022, Alg. 1) on the scaled state x̃ from σ̃ to
    σ̃_next (Euler alone into σ̃_next = 0); the model is evaluated at x = a·x̃."""
    (sigma, sigma_next), (t, t_next), (a, a_next) = levels, times, alphas
    d = (x - model.denoise(x * a, t)) / sigma
    x_next = x + d * (sigma_next - sigma)
    if sigma_next == 0.0:
        return x_next
    d_next = (x_next - model.denoise(x_next * a_next, t_next)) / sigma_next
    return x + (d + d_next) * (0.5 * (sigma_next - sigma))


SAMPLERS = (Restart,)
