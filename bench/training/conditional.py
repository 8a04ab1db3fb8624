"""Class-conditional training with label dropout, for classifier-free guidance.

Ho & Salimans 2022, Alg. 1: the network is trained on (x, c) pairs and, with probability
p_uncond, on (x, ∅), a learnt null label; one network then serves the conditional model
ε(x, c) and the unconditional one ε(x, ∅), which guidance combines at sampling time. The
objective is the unconditional one (denoising score matching, or flow matching) with c given
to the network; nothing else changes.

The labels of a step come from the same per-step generator as its images, times and noise, drawn
after them, so a conditional run is as reproducible as an unconditional one and draws the same
(x₀, t, z) stream.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bench.core.dataset import Dataset
from bench.errors import BenchError


class Labelled(nn.Module):
    """A conditional network seen as an unconditional one: ``net(x, τ)`` with fixed labels."""

    def __init__(self, net: nn.Module, labels: Tensor) -> None:
        super().__init__()
        self.net = net
        self.labels = labels

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        return self.net(x, tau, self.labels)


def num_classes(cfg: Any) -> int:
    """Classes of a run's network (0: unconditional), from its architecture."""
    return int(cfg.architecture.get("num_classes", 0))


def training_labels(dataset: Dataset, split: str, cfg: Any) -> Tensor | None:
    """The class of each training image of a conditional run (``None`` for an unconditional
    one); a dataset without labels, or labels outside 0..classes − 1, is an error."""
    classes = num_classes(cfg)
    if not classes:
        return None
    labels_of = getattr(dataset, "labels", None)
    if labels_of is None:
        raise BenchError(f"dataset {dataset.spec!r} has no class labels; drop --conditional")
    labels = labels_of(split).to(torch.long)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise BenchError(f"dataset {dataset.spec!r}: labels outside 0..{classes - 1}")
    return labels


def dataset_classes(dataset: Dataset) -> int:
    """How many classes a labelled dataset has (max label + 1)."""
    labels_of = getattr(dataset, "labels", None)
    if labels_of is None:
        raise BenchError(f"dataset {dataset.spec!r} has no class labels; drop --conditional")
    return int(labels_of("all").max()) + 1


def batch_labels(
    gen: torch.Generator, labels: Tensor, idx: Tensor, classes: int, dropout: float
) -> Tensor:
    """The labels of a step's images, each replaced by the null label (index ``classes``) with
    probability ``dropout`` (Ho & Salimans 2022, Alg. 1, p_uncond), drawn from ``gen``."""
    c = labels[idx].clone()
    drop = torch.rand(idx.numel(), generator=gen, dtype=torch.float64) < dropout
    c[drop.to(c.device)] = classes
    return c


def network(
    net: nn.Module, cfg: Any, gen: torch.Generator, labels: Tensor | None, idx: Tensor
) -> nn.Module:
    """The network a step trains: ``net`` itself, or for a conditional run ``net`` with the
    step's labels (``labels`` of the images ``idx``, dropped out to the null label)."""
    if labels is None:
        return net
    c = batch_labels(gen, labels, idx.to(labels.device), num_classes(cfg), cfg.label_dropout)
    return Labelled(net, c)


def metadata(cfg: Any) -> dict[str, Any]:
    """The ``conditioning`` entry of a conditional model folder's metadata (else empty)."""
    classes = num_classes(cfg)
    if not classes:
        return {}
    return {
        "conditioning": {
            "classes": classes,
            "null_label": classes if cfg.label_dropout > 0 else None,
            "label_dropout": cfg.label_dropout,
        }
    }
