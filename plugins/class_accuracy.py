"""Guidance adherence of a class-conditional image model: the shipped digits classifier's
accuracy on the class each sample was asked for.

It plays the role the CLIP score plays for text-to-image models (how well samples follow their
condition, beside FID for how real they look); classifier-free guidance trades one for the
other (Ho & Salimans 2022, Fig. 1). Its floor is the classifier's accuracy on the real test
digits (``class_acc_floor``; ``class_acc_floor_std`` = √(p(1 − p)/n), the binomial spread of an
accuracy over n real images): samples that score there are as recognisable as real digits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from bench_plugins.fidelity import ExtractorOptions, _ImageMetric
from torch import Tensor

from bench.core.metric import MetricContext
from bench.core.model import ScoreModel
from bench.errors import BenchError, Unsupported
from bench.fidelity import DIGITS

CLASSES = 10

_real_accuracy: dict[str, float] = {}


class ClassAccuracy(_ImageMetric):
    """Digits classifier accuracy on each sample's requested class (conditional models)."""

    name = "class_acc"
    higher_is_better = True
    with_reference = False

    @dataclasses.dataclass
    class Options(ExtractorOptions):
        """The digits classifier (its logits name the class); other extractors are refused."""

    @classmethod
    def supports(cls, model: ScoreModel) -> None:
        super().supports(model)
        if model.classes != CLASSES:
            raise Unsupported(
                f"metric 'class_acc' needs a class-conditional model of the {CLASSES} digit "
                f"classes, not {model.spec!r} ({model.classes or 'no'} classes)"
            )

    @classmethod
    def setup(cls, model: ScoreModel, options: Any, context: MetricContext) -> Any:
        if options.extractor != DIGITS:
            raise BenchError("metric 'class_acc' reads the digits classifier's logits only")
        return super().setup(model, options, context)

    def __init__(self, model: ScoreModel, n: int, **kwargs: Any) -> None:
        super().__init__(model, n, **kwargs)
        self.correct, self.count = 0, 0

    def predict(self, images: Tensor) -> Tensor:
        return self.featurize(images)[self.setting.spec.isc_layer].argmax(1)

    def update(self, samples: Tensor) -> None:
        raise RuntimeError("class_acc needs each batch's first sample index (update_at)")

    def update_at(self, samples: Tensor, start: int) -> None:
        conditioning = getattr(self.context, "conditioning", None)
        if conditioning is None:
            raise RuntimeError("class_acc needs the cell's labels (a conditional model's cell)")
        labels = conditioning.labels(start, samples.shape[0])
        self.correct += int((self.predict(samples) == labels).sum())
        self.count += samples.shape[0]

    def state(self) -> tuple[int, int]:
        return self.correct, self.count

    def merge(self, states: list[tuple[int, int]]) -> None:
        self.correct = sum(c for c, _ in states)
        self.count = sum(n for _, n in states)

    def real_accuracy(self) -> float:
        """The classifier's accuracy on the real digits test split (once per process)."""
        key = self.setting.spec.label
        if key not in _real_accuracy:
            digits = self.context.dataset("digits")  # type: ignore[union-attr]
            images, labels = digits.data("test"), digits.labels("test")
            hits = sum(
                int((self.predict(images[i : i + 256]) == labels[i : i + 256]).sum())
                for i in range(0, len(images), 256)
            )
            _real_accuracy[key] = hits / len(images)
        return _real_accuracy[key]

    def compute(self) -> dict[str, Any]:
        p = self.real_accuracy()
        return {
            "class_acc": self.correct / self.count if self.count else math.nan,
            "class_acc_floor": p,
            "class_acc_floor_std": math.sqrt(p * (1 - p) / max(self.n, 1)),
            "class_acc_extractor": self.setting.spec.label,
        }


__all__ = ["ClassAccuracy"]
