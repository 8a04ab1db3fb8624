"""What the multistep exponential integrators (``dpmpp_2m``, ``dpmpp_3m``, ``unipc``) share: the
fused update and the ``lower_order_final`` rules for the last steps of a short run.

The suite's N steps end at σ = 0 with a denoising step (x_N = a_N·D_{N−1}); they are the official
codes' ``sample(steps=N − 1, denoise_to_zero=True)`` on the same σ_0 … σ_{N−1}, the same N
evaluations. Each ``lower_order_final`` rule caps the order of step i (from t_i to t_{i+1}) by
the steps its own code counts: DPM-Solver's and UniPC's official code count N − 1 (the final
denoising is outside their loop), diffusers counts N (its last step is the one into σ = 0).
"""

from __future__ import annotations

import math

from torch import Tensor

LOWER_ORDER_FINAL = ("official", "diffusers", "off")
"""The values of the ``lower_order_final`` option (see :func:`capped_order`)."""


def combine(x: Tensor, c_x: float, ms: list[Tensor], cs: list[float]) -> Tensor:
    """c_x·x + Σ_j cs[j]·ms[j] in one new tensor (host-float weights; zero weights skipped)."""
    out = x * c_x
    for m, c in zip(ms, cs):
        if c != 0.0:
            out.add_(m, alpha=c)
    return out


def data_weights(
    h: float, r0: float | None, r1: float | None, second: str = "taylor", w3: float = 1.0
) -> list[float]:
    """[w_0, w_1, w_2] of D_i, D_{i−1}, D_{i−2} in a DPM-Solver++ step's data term, before the
    factor a_{i+1} (Lu et al. 2022, "DPM-Solver++", §4 and Alg. 2).

    φ₁ = 1 − e^{−h}, φ₂ = 1 − φ₁/h, φ₃ = φ₂/h − ½ (e^{−h} − 1 by expm1; φ₁ = 1 at h = ∞), with
    r_k = h_{i−k−1}/h, D1_0 = (D_i − D_{i−1})/r₀, D1_1 = (D_{i−1} − D_{i−2})/r₁,
    D2 = (D1_0 − D1_1)/(r₀ + r₁), D1 = D1_0 + r₀·D2:

    * first order (r₀ = None): φ₁·D_i;
    * second order (r₁ = None): φ₁·D_i + w·D1_0, w = φ₂ (``second="taylor"``) or φ₁/2
      (``"midpoint"``, DPM-Solver's ``solver_type="dpmsolver"``);
    * third order: φ₁·D_i + φ₂·D1 − w₃·φ₃·D2 (w₃ = 1: the published weight; 2: Taylor's).
    """
    phi_1 = -math.expm1(-h)
    out = [phi_1, 0.0, 0.0]
    if r0 is None:
        return out
    d1_0 = [1.0 / r0, -1.0 / r0, 0.0]
    phi_2 = 1.0 - phi_1 / h
    if r1 is None:
        w1 = 0.5 * phi_1 if second == "midpoint" else phi_2
        return [w + w1 * d for w, d in zip(out, d1_0)]
    d1_1 = [0.0, 1.0 / r1, -1.0 / r1]
    d2 = [(p - q) / (r0 + r1) for p, q in zip(d1_0, d1_1)]
    d1 = [p + r0 * q for p, q in zip(d1_0, d2)]
    phi_3 = phi_2 / h - 0.5
    return [w + phi_2 * p - w3 * phi_3 * q for w, p, q in zip(out, d1, d2)]


def lower_order_final_rule(value: str | bool) -> str:
    """The rule named by ``value``: ``official``, ``diffusers`` or ``off``; true and false (the
    official codes' boolean ``lower_order_final``) mean ``official`` and ``off``."""
    text = str(value).lower()
    text = {"true": "official", "false": "off"}.get(text, text)
    if text not in LOWER_ORDER_FINAL:
        raise ValueError(
            f"lower_order_final is one of {', '.join(LOWER_ORDER_FINAL)} "
            f"(or true = official, false = off), got {value!r}"
        )
    return text


def capped_order(order: int, i: int, steps: int, rule: str, below: dict[str, int] | None) -> int:
    """The order of step i < N − 1 of N under ``rule``: at most n − i, n the steps the rule's
    code counts (official: N − 1, diffusers: N), and with ``below`` only when n < below[rule]
    (DPM-Solver: the official code lowers when its steps < 10, diffusers when N < 15)."""
    if rule == "off":
        return order
    n = steps - 1 if rule == "official" else steps
    if below is not None and n >= below[rule]:
        return order
    return min(order, n - i)
