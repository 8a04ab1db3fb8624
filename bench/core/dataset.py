"""The dataset plugin kind: image datasets for training and as FID/KID references."""

from __future__ import annotations

import abc
import hashlib
from typing import ClassVar

import torch
from torch import Tensor

from bench.errors import BenchError


class Dataset(abc.ABC):
    """An image dataset with named splits, selected as ``NAME[:ARG]``.

    ``data(split)`` returns float images in [0, 1] shaped (N, C, H, W). Splits are fixed and
    documented by each dataset; ``all`` is every image.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    splits: ClassVar[tuple[str, ...]] = ("all",)
    spec: str

    @classmethod
    @abc.abstractmethod
    def load(cls, arg: str | None) -> Dataset:
        """Build the dataset from the ``ARG`` of ``NAME[:ARG]``."""

    @abc.abstractmethod
    def _data(self, split: str) -> Tensor:
        """Float images in [0, 1] of one (already validated) split."""

    def data(self, split: str = "all") -> Tensor:
        if split not in self.splits:
            raise BenchError(
                f"dataset {self.spec!r} has no split {split!r}; splits: {', '.join(self.splits)}"
            )
        return self._data(split)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data(self.splits[0]).shape[1:])

    def content_hash(self, split: str = "all") -> str:
        """sha256 of a split's exact values and shape: the cache key of its statistics."""
        data = self.data(split).contiguous()
        digest = hashlib.sha256(str(tuple(data.shape)).encode())
        digest.update(data.to(torch.float32).numpy().tobytes())
        return digest.hexdigest()
