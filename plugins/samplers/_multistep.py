"""What the multistep exponential integrators (``dpmpp_2m``, ``dpmpp_3m``, ``unipc``) share: the
fused update and the ``lower_order_final`` rules for the last steps of a short run.

The suite's N steps end at σ = 0 with a denoising step (x_N = a_N·D_{N−1}); they are the official
codes' ``sample(steps=N − 1, denoise_to_zero=True)`` on the same σ_0 … σ_{N−1}, the same N
evaluations. Each ``lower_order_final`` rule caps the order of step i (from t_i to t_{i+1}) by
the steps its own code counts: DPM-Solver's and UniPC's official code count N − 1 (the final
denoising is outside their loop), diffusers counts N (its last step is the one into σ = 0).
"""

from __future__ import annotations

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
