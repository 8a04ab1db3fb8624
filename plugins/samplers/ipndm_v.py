"""iPNDM_v: diff-sampler's variable-step iPNDM (Zhou et al. 2024, the AMED-Solver paper)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from bench_plugins.samplers.ipndm import IPNDM


def ipndm_v_weights(steps: Sequence[float]) -> list[float]:
    """iPNDM_v's weights of ε̂_i, ε̂_{i−1}, … for the σ̃ steps (h, h₁, h₂, h₃)[:k], newest first.

    h = σ̃_{i+1} − σ̃_i and h_j = σ̃_{i−j+1} − σ̃_{i−j}; r = h/h₁, q = h₁/h₂,
    p = h₁(h₁ + h₂)/(h₂(h₂ + h₃)). Order k = len(steps) adds one term to order k − 1:

        k = 2:  (1 + r/2, −r/2)                                  (variable-step AB2)
        k = 3:  + τ₃·(1, −(1 + q), q),          τ₃ = ½ − h²/(6h₁(h₁ + h₂))
        k = 4:  + τ₄·(1, −(1 + q + p), q + p(1 + h₂/h₃), −p·q),
                τ₄ = [½(1 − h/(3(h + h₁))) + (1 − h/(2(h + h₁)))·h/(6(h + h₁ + h₂))]
                     · h(h + h₁)(h + h₁ + h₂)/(h₁(h₁ + h₂)(h₁ + h₂ + h₃)).
    """
    k = len(steps)
    if k == 1:
        return [1.0]
    h, h1 = steps[0], steps[1]
    r = h / h1
    w = [1.0 + r / 2, -r / 2]
    if k == 2:
        return w
    h2 = steps[2]
    q = h1 / h2
    tau3 = 0.5 - h * h / (6 * h1 * (h1 + h2))
    w = [w[0] + tau3, w[1] - (1 + q) * tau3, q * tau3]
    if k == 3:
        return w
    h3 = steps[3]
    p = h1 * (h1 + h2) / (h2 * (h2 + h3))
    s1, s2 = h + h1, h + h1 + h2
    bracket = (1 - h / (3 * s1)) / 2 + (1 - h / (2 * s1)) * h / (6 * s2)
    tau4 = bracket * h * s1 * s2 / (h1 * (h1 + h2) * (h1 + h2 + h3))
    return [
        w[0] + tau4,
        w[1] - (1 + q + p) * tau4,
        w[2] + (q + p * (1 + h2 / h3)) * tau4,
        -p * q * tau4,
    ]


class IPNDMV(IPNDM):
    """iPNDM_v, variable-step iPNDM (Zhou et al. 2024; diff-sampler's ``ipndm_v_sampler``).

    The loop is :class:`IPNDM`'s (a DDIM step on ε̄_i = Σ_j c_j·ε̂_{i−j} in the scaled variables,
    warm-up through orders 1, 2, …, ``order``, one evaluation per step, NFE = N, and the last
    step x̃_N = D(x_{N−1}; t_{N−1}): diff-sampler's ``denoise_to_zero`` under the suite's N steps
    ending at σ̃ = 0), with the weights c_j of the actual σ̃ steps that diff-sampler's official
    code (zju-pi/diff-sampler, ``ipndm_v_sampler``) computes (:func:`ipndm_v_weights`).

    What those weights are, measured against exact variable-step Adams–Bashforth (the suite's
    ``ipndm -o variable_step=true``): orders 1–2 are the same; order 3 equals AB3 on equal steps
    only (AB3's τ₃ would be h(2h + 3h₁)/(6h₁(h₁ + h₂))); order 4 on equal steps is
    (57, −65, 43, −11)/24 = AB3 + (11/24)·∇³ where AB4 has (3/8)·∇³, and its weights sum to
    1 + p·τ₄·(h₂/h₃ − h₁/h₂), i.e. to 1 only on equal or geometric σ̃ steps. The observed global
    order is in docs/solvers/ipndm_ode.md. The default ``order`` = 4 is diff-sampler's
    ``max_order``.
    """

    name = "ipndm_v"

    @dataclasses.dataclass
    class Options:
        """Options of :class:`IPNDMV`.

        Attributes:
            order: the highest order, 1 (DDIM) to 4 (diff-sampler's ``max_order``).
        """

        order: int = 4

        def __post_init__(self) -> None:
            if isinstance(self.order, bool) or self.order not in (1, 2, 3, 4):
                raise ValueError(f"order must be 1, 2, 3 or 4, got {self.order!r}")

    def denoises_last(self) -> bool:
        """The step into σ̃ = 0 is always x̃ ← D (diff-sampler's ``denoise_to_zero``)."""
        return True

    def weights(self, sigma: Sequence[float], i: int, k: int) -> Sequence[float]:
        """iPNDM_v's weights for the step σ̃_i → σ̃_{i+1} from the last k σ̃ steps."""
        return ipndm_v_weights([sigma[i + 1 - j] - sigma[i - j] for j in range(k)])


SAMPLERS = (IPNDMV,)
