"""Classifier-free guidance as a model: the guided native output for one batch's labels.

Ho & Salimans 2022, Eq. 6, with the scale s of diffusers' ``guidance_scale`` (s = 1 + w in the
paper's w):

    ε̃(x, t, c) = ε(x, t, ∅) + s·(ε(x, t, c) − ε(x, t, ∅)),

s = 1 the conditional model, s = 0 the unconditional one. Every output a model may have natively
(score, ε, x₀, v, velocity) is affine in ε with coefficients that depend on t alone, not on the
label (:mod:`bench.core.views`), so the same combination of the native outputs is the guided model
in every parameterisation: the views and the samplers (PC included) see one model and never know
it is guided.

A guided evaluation is two network passes per sample: one forward of 2B (the conditional half
first, then the unconditional one; diffusers' way, which fills an accelerator) or two forwards of B
(the conditional, then the unconditional one; faster on a CPU, where a network's time per sample
grows with the batch as its activations leave the cache). Both compute the same function; the
outputs agree up to the float rounding of kernels whose blocking depends on the batch size.
:func:`resolve_batching` picks. s ∈ {0, 1}, and a noise level outside the
guidance interval (σ_lo, σ_hi] (Kynkäänniemi et al. 2024, Eq. 2, σ = std(t)/a(t) as in EDM), is
one pass: outside the interval the model is the conditional one (s = 1). :attr:`GuidedFn.passes`
counts passes beside the view's NFE counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from bench.core.sde import SDE

NULL_LABEL = -1
"""The label that asks a conditional model for its unconditional output (its null label ∅)."""

BATCHINGS = ("auto", "joint", "split")
"""How a guided evaluation runs its two passes: ``joint`` (one forward of 2B), ``split`` (two
forwards of B) or ``auto`` (:func:`resolve_batching`)."""

ConditionalFn = Callable[[Tensor, float, Tensor], Tensor]
"""A conditional model's native output ``fn(x, t, labels)``, labels (B,) int64 (or NULL_LABEL)."""


@dataclass(frozen=True)
class Guidance:
    """The scale s and the noise levels it applies to.

    Attributes:
        scale: s of ε(∅) + s·(ε(c) − ε(∅)); 1 is the conditional model.
        interval: (σ_lo, σ_hi]: guidance only where σ(t) = std(t)/a(t) lies in it (``None``:
            everywhere).
    """

    scale: float = 1.0
    interval: tuple[float, float] | None = None

    def scale_at(self, sigma: float) -> float:
        """The scale at noise level σ: ``scale`` inside the interval, 1 outside it."""
        if self.interval is None:
            return self.scale
        lo, hi = self.interval
        return self.scale if lo < sigma <= hi else 1.0

    def passes_at(self, sigma: float) -> int:
        """Network passes per sample of one evaluation at σ: 1 at s ∈ {0, 1}, else 2."""
        return 1 if self.scale_at(sigma) in (0.0, 1.0) else 2

    def describe(self) -> dict[str, object]:
        return {"scale": self.scale, "interval": list(self.interval) if self.interval else None}


def resolve_batching(choice: str, device: torch.device, exact: bool = False) -> str:
    """``joint`` or ``split`` for ``choice`` on ``device``: ``auto`` is split for a network on
    the CPU (measured in docs/performance.md: one forward of 2B of the digits UNet costs
    1.12–1.37× two forwards of B there at B ≥ 256), joint on an accelerator and for an ``exact``
    model (an analytic score, for which splitting saves nothing)."""
    if choice not in BATCHINGS:
        raise ValueError(f"guidance batching must be one of {', '.join(BATCHINGS)}, got {choice!r}")
    if choice != "auto":
        return choice
    return "split" if device.type == "cpu" and not exact else "joint"


def parse_interval(text: str) -> tuple[float, float]:
    """``LO,HI`` (σ values, 0 ≤ LO < HI, HI may be ``inf``) as a pair; else a ValueError."""
    parts = str(text).split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not LO,HI (two noise levels σ)") from None
    if not (0 <= lo < hi) or math.isnan(hi):
        raise ValueError(f"{text!r}: need 0 <= LO < HI")
    return lo, hi


def interval_text(interval: tuple[float, float]) -> str:
    """The canonical ``LO,HI`` of an interval (a cell's ``guidance_interval``)."""
    return f"{float(interval[0])!r},{float(interval[1])!r}"


def sigma_of(sde: SDE, t: float) -> float:
    """EDM's noise level σ(t) = std(t)/a(t) (∞ where a(t) = 0)."""
    a, std = sde.marginal_coef(t)
    return std / a if a > 0 else math.inf


class GuidedFn:
    """The guided native output ``fn(x, t)`` of a conditional model for the current labels.

    Set :attr:`labels` (one int64 per sample of the batch, on the batch's device) before a
    batch; :attr:`passes` counts network passes (a guided evaluation is two passes per sample,
    as one forward of 2B when ``joint``, else as two forwards of B).
    """

    def __init__(self, fn: ConditionalFn, guidance: Guidance, sde: SDE, joint: bool = True) -> None:
        self.fn = fn
        self.guidance = guidance
        self.sde = sde
        self.joint = joint
        self.passes = 0
        self._labels: tuple[Tensor, Tensor, Tensor] | None = None  # c, ∅, [c, ∅]

    @property
    def labels(self) -> Tensor | None:
        return None if self._labels is None else self._labels[0]

    @labels.setter
    def labels(self, c: Tensor | None) -> None:
        if c is None:
            self._labels = None
            return
        null = torch.full_like(c, NULL_LABEL)
        self._labels = (c, null, torch.cat([c, null]))

    def __call__(self, x: Tensor, t: float) -> Tensor:
        if self._labels is None:
            raise RuntimeError("GuidedFn: set the batch's labels before evaluating")
        c, null, both = self._labels
        s = self.guidance.scale_at(sigma_of(self.sde, t))
        if s in (0.0, 1.0):
            self.passes += 1
            return self.fn(x, t, c if s == 1.0 else null)
        if self.joint:
            cond, uncond = self.fn(torch.cat([x, x]), t, both).chunk(2)
        else:
            cond, uncond = self.fn(x, t, c), self.fn(x, t, null)
        self.passes += 2
        return uncond + (cond - uncond) * s
