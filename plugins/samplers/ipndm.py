"""iPNDM: the improved pseudo-numerical (Adams–Bashforth) multistep sampler on ε (DEIS's iPNDM)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import Tensor

from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import TimeGrid
from bench.core.views import ModelView

# Adams–Bashforth coefficients for a constant step, newest evaluation first (orders 1–4).
ADAMS_BASHFORTH: tuple[tuple[float, ...], ...] = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)
LAST_STEPS = ("denoise", "multistep")


def adams_bashforth(nodes: list[float]) -> list[float]:
    """Variable-step Adams–Bashforth weights: w_j = ∫₀¹ ℓ_j(u) du for the Lagrange basis ℓ_j on
    ``nodes`` (newest first, nodes[0] = 0), in units of the step: u = (σ̃ − σ̃_i)/(σ̃_{i+1} − σ̃_i).
    Equal steps (nodes 0, −1, −2, …) give :data:`ADAMS_BASHFORTH`."""
    weights = []
    for j, u_j in enumerate(nodes):
        poly = [1.0]  # ℓ_j's coefficients, lowest degree first
        for m, u_m in enumerate(nodes):
            if m != j:  # poly ← poly·(u − u_m)/(u_j − u_m)
                shifted = [0.0, *poly]
                poly = [
                    (shifted[k] - u_m * (poly[k] if k < len(poly) else 0.0)) / (u_j - u_m)
                    for k in range(len(shifted))
                ]
        weights.append(sum(c / (k + 1) for k, c in enumerate(poly)))
    return weights


class IPNDM(Sampler):
    """Improved PNDM (Zhang & Chen 2023, DEIS's iPNDM: PNDM's linear multistep on ε, warm-started).

    In EDM's scaled variables x̃ = x/a, σ̃ = std/a the probability-flow ODE is dx̃/dσ̃ = ε̂(x, t)
    (Karras et al. 2022, Eq. 4 with s(t) = a, σ(t) = σ̃). iPNDM steps it with the fixed
    Adams–Bashforth combination of the last k noise predictions (k ≤ ``order``):

        ε̄_i = Σ_j c^{(k)}_j·ε̂_{i−j},    x̃_{i+1} = x̃_i + (σ̃_{i+1} − σ̃_i)·ε̄_i,

    i.e. x_{i+1} = (a_{i+1}/a_i)·x_i + a_{i+1}(σ̃_{i+1} − σ̃_i)·ε̄_i: a DDIM step on ε̄. The first
    steps warm up with the orders the history allows (Euler = DDIM, then AB2, AB3, AB4), reusing
    the earlier evaluations, so every step costs one evaluation: NFE = N.

    The official code is diff-sampler's ``ipndm_sampler`` (zju-pi/diff-sampler, the code of Zhou
    et al. 2024). The suite's N steps ending at σ̃ = 0 are its N − 1 steps on σ̃_0 … σ̃_{N−1}
    followed by its final denoising evaluation (``denoise_to_zero``), so by default
    (``last_step="denoise"``) the last step is x̃_N = D(x_{N−1}; t_{N−1}) = x̃_{N−1} − σ̃_{N−1}·ε̂_{N−1}.
    ``last_step="multistep"`` takes the Adams–Bashforth step into σ̃ = 0 instead (diffusers'
    ``IPNDMScheduler``, whose schedule ends at σ = 0).

    The coefficients c^{(k)} are those of a constant step, as in DEIS, diff-sampler and diffusers.
    On the unequal σ̃ steps of the built-in schedules they leave an O(h³) local error, so the
    method converges with global order 2 (see docs/solvers/ipndm_ode.md). ``variable_step`` is
    the suite's own method: the Adams–Bashforth weights of the actual σ̃ nodes (global order 4
    observed); its last step is the denoising one (a cubic through nodes ~σ̃(eps)/N apart,
    extrapolated over the whole of [σ̃_{N−1}, 0], would weigh the evaluations ~N³).
    diff-sampler's own variable-step method is the ``ipndm_v`` sampler.
    """

    name = "ipndm"
    default_schedule = "edm"

    @dataclasses.dataclass
    class Options:
        """Options of :class:`IPNDM`.

        Attributes:
            order: the highest Adams–Bashforth order, 1 (DDIM) to 4 (iPNDM).
            last_step: into σ̃ = 0, ``denoise`` (x̃ ← D, diff-sampler's ``denoise_to_zero``) or
                ``multistep`` (the Adams–Bashforth step, as diffusers' ``IPNDMScheduler``).
            variable_step: the suite's exact variable-step Adams–Bashforth weights for the
                actual σ̃ steps instead of the constant-step ones (order ≈ 4 instead of 2 on
                the built-in schedules); needs ``last_step="denoise"``.
        """

        order: int = 4
        last_step: str = "denoise"
        variable_step: bool = False

        def __post_init__(self) -> None:
            if isinstance(self.order, bool) or self.order not in (1, 2, 3, 4):
                raise ValueError(f"order must be 1, 2, 3 or 4, got {self.order!r}")
            if self.last_step not in LAST_STEPS:
                raise ValueError(f"last_step must be one of {LAST_STEPS}, got {self.last_step!r}")
            if not isinstance(self.variable_step, bool):
                raise ValueError(f"variable_step must be true or false, got {self.variable_step!r}")
            if self.variable_step and self.last_step != "denoise":
                raise ValueError(
                    "variable_step needs last_step=denoise: its weights extrapolated over the "
                    "whole last step [σ̃_{N−1}, 0] grow like N³"
                )

    def nfe_nominal(self, steps: int) -> int:
        """One evaluation per step, at t_0 … t_{N−1}: N."""
        return steps

    def denoises_last(self) -> bool:
        """Whether the step into σ̃ = 0 is x̃ ← D (else the multistep combination)."""
        return self.options.last_step == "denoise"

    def weights(self, sigma: Sequence[float], i: int, k: int) -> Sequence[float]:
        """The weights c_j of ε̂_i, ε̂_{i−1}, … (k of them) for the step σ̃_i → σ̃_{i+1}."""
        if not self.options.variable_step:
            return ADAMS_BASHFORTH[k - 1]
        step = sigma[i + 1] - sigma[i]  # nodes σ̃_{i−j} in units of the step
        return adams_bashforth([(sigma[i - j] - sigma[i]) / step for j in range(k)])

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run the multistep loop over ``grid`` from ``x_T`` (deterministic: ``noise`` is unused)."""
        a, std = grid.alpha, grid.sigma
        sigma_tilde = [s / al for s, al in zip(std, a)]  # σ̃ = std/a, 0 at the data end
        history: list[Tensor] = []  # ε̂_i, ε̂_{i−1}, … (newest first), at most `order` of them
        x = x_T
        for i, t, _ in grid.pairs():
            eps = model.eps(x, t)
            history = [eps, *history[: self.options.order - 1]]
            if i + 1 == grid.steps and self.denoises_last():
                coefs: Sequence[float] = (1.0,)  # x̃_N = x̃_{N−1} − σ̃_{N−1}·ε̂_{N−1} = D
            else:
                coefs = self.weights(sigma_tilde, i, len(history))
            eps_bar = torch.mul(history[0], coefs[0])
            for c, older in zip(coefs[1:], history[1:]):
                eps_bar.add_(older, alpha=c)
            # x̃_{i+1} = x̃_i + (σ̃_{i+1} − σ̃_i)·ε̄, written for x = a·x̃.
            ratio, h = a[i + 1] / a[i], a[i + 1] * (sigma_tilde[i + 1] - sigma_tilde[i])
            x_next = torch.add(x if ratio == 1.0 else x * ratio, eps_bar, alpha=h)
            if callback is not None:
                denoised = torch.sub(x, eps, alpha=std[i]) / a[i]  # x̂₀ of this evaluation
                callback({"i": i, "t": t, "x": x_next, "denoised": denoised})
            x = x_next
        return x


SAMPLERS = (IPNDM,)
