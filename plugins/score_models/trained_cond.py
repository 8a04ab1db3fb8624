"""Class-conditional networks trained by ``bench train --conditional`` (and ``digits-cond``).

The network takes a class per sample besides (x, τ); trained with label dropout (Ho & Salimans
2022, Alg. 1) it also has a null label, its unconditional output, which guidance needs. Its
native output (the score of a VE/VP/sub-VP network, the velocity of a flow network) is read as
for an unconditional folder (:mod:`.trained`), with the labels given to the network.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from bench_plugins.score_models.trained import TrainedScoreModel, _preset
from torch import Tensor

from bench.core.guidance import NULL_LABEL, ConditionalFn
from bench.core.sde import SDE
from bench.core.views import ModelFn
from bench.errors import Unsupported
from bench.training.conditional import Labelled

ACCURACY_METRICS = ("fid", "kid", "class_acc")


class ConditionalTrainedModel(TrainedScoreModel):
    """A class-conditional network from a ``bench train --conditional`` folder."""

    default_metrics = ACCURACY_METRICS

    def __init__(self, meta: Any, net: Any, spec: str, **kwargs: Any) -> None:
        super().__init__(meta, net, spec, **kwargs)
        conditioning = meta.raw.get("conditioning") or {}
        self.classes = meta.architecture.num_classes
        self.null_label = conditioning.get("null_label") is not None
        self.null_label_reason = "it was trained without label dropout (no null label)"
        if self.dataset == "digits":  # FID against equal numbers of each class
            self.reference_split = "train_balanced"

    def conditional_fn(self, sde: SDE) -> ConditionalFn:
        """The native output with a class per sample (NULL_LABEL: the null label ∅)."""
        labelled = Labelled(self.net, torch.empty(0, dtype=torch.int64))
        plain = copy.copy(self)
        plain.net = labelled
        base = TrainedScoreModel.score_fn if self.native == "score" else TrainedScoreModel.native_fn
        fn = base(plain, sde)  # the unconditional folder's function, on the labelled network
        null = self.classes

        def conditional(x: Tensor, t: float, labels: Tensor) -> Tensor:
            labelled.labels = torch.where(labels == NULL_LABEL, null, labels)
            return fn(x, t)

        return conditional

    def native_fn(self, sde: SDE) -> ModelFn:
        """Without labels: the unconditional output (the null label), if the model has one."""
        if not self.null_label:
            raise Unsupported(
                f"model {self.spec!r} is class-conditional without a null label: it needs a "
                f"label per sample (bench run --labels)"
            )
        fn = self.conditional_fn(sde)

        def unconditional(x: Tensor, t: float) -> Tensor:
            return fn(x, t, torch.full((x.shape[0],), NULL_LABEL, device=x.device))

        return unconditional

    def score_fn(self, sde: SDE) -> Any:
        return self.view(sde).score

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "conditioning": self.meta.raw.get("conditioning")}


DigitsCond = _preset(
    "digits-cond",
    "Class-conditional conv UNet noise predictor for 8×8 digits with a null label "
    "(label dropout 0.1), VP SDE, shipped; for guidance.",
)

MODELS = (DigitsCond,)
