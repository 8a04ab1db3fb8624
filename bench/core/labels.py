"""Class labels per sample: a function of (seed, sample index) only, like the noise.

``--labels balanced`` (the default) gives sample i the class i mod C, so n samples with C | n are
exactly class-balanced; ``random`` draws each sample's class uniformly from its own addressed
noise (:mod:`bench.core.noise`, stream :data:`LABELS`); an integer K gives every sample class K.
None depends on the batch size, the sample's place in its batch or the number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.core.guidance import Guidance
from bench.core.noise import SampleNoise
from bench.errors import BenchError

LABELS = 3
"""The noise stream of ``random`` labels: PRIOR (0) is x_T, STEPS (1) a sampler's draws and 2
the Brownian paths' nodes; 3 is taken here so that labels share no numbers with any of them."""

POLICIES = ("balanced", "random")


@dataclass(frozen=True)
class LabelPolicy:
    """How samples get their classes: ``balanced``, ``random`` or a fixed class ``K``."""

    kind: str = "balanced"
    fixed: int | None = None

    @classmethod
    def parse(cls, text: str) -> LabelPolicy:
        """``balanced``, ``random`` or a class index K ≥ 0; anything else is a BenchError."""
        text = str(text).strip()
        if text in POLICIES:
            return cls(text)
        if text.isdigit():
            return cls("fixed", int(text))
        raise BenchError(f"--labels {text!r}: use balanced, random or a class index (0, 1, ...)")

    def __str__(self) -> str:
        return str(self.fixed) if self.kind == "fixed" else self.kind

    def check(self, classes: int, model: str) -> None:
        """Refuse a fixed class the model does not have."""
        if self.fixed is not None and self.fixed >= classes:
            raise BenchError(f"--labels {self.fixed}: model {model!r} has classes 0..{classes - 1}")

    def labels(self, seed: int, start: int, size: int, classes: int) -> Tensor:
        """The classes (int64, CPU) of samples start..start+size of ``seed``."""
        if self.kind == "fixed":
            assert self.fixed is not None
            return torch.full((size,), self.fixed, dtype=torch.int64)
        index = torch.arange(start, start + size, dtype=torch.int64)
        if self.kind == "balanced":
            return index % classes
        # Φ(z) of a standard normal draw is uniform on (0, 1): floor(C·Φ(z)) is uniform on 0..C−1.
        like = torch.empty(size, 1, dtype=torch.float64)
        z = SampleNoise(seed, start, size, LABELS).draw(0, like)[:, 0]
        return (torch.special.ndtr(z) * classes).floor().clamp(0, classes - 1).to(torch.int64)


@dataclass(frozen=True)
class Conditioning:
    """A conditional cell's labels and guidance, as its metrics see them (``MetricContext``).

    Attributes:
        seed: the cell's seed (``random`` labels depend on it).
        policy: how samples get their classes.
        classes: the model's number of classes.
        guidance: the cell's guidance scale and interval.
    """

    seed: int
    policy: LabelPolicy
    classes: int
    guidance: Guidance

    def labels(self, start: int, size: int) -> Tensor:
        """The classes of the cell's samples start..start+size (int64, CPU)."""
        return self.policy.labels(self.seed, start, size, self.classes)

    @property
    def guided(self) -> bool:
        """Whether some noise level is guided (a scale other than 1)."""
        return self.guidance.scale != 1.0

    def key(self) -> tuple[object, ...]:
        """What a cached reference computed for this cell depends on."""
        seed = self.seed if self.policy.kind == "random" else None
        return (str(self.policy), seed, self.classes, self.guidance)
