"""Built-in datasets: scikit-learn's digits (shipped with scikit-learn), .npz files, image folders."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import bench
from bench.core.dataset import Dataset
from bench.errors import BenchError
from bench.fidelity.images import from_uint8

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0  # 0..16 → [0, 1], shape (N, 1, 8, 8)
    idx = np.arange(len(x))
    train, test = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    data, labels = torch.from_numpy(x), torch.from_numpy(digits.target)
    return data, labels, torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))


class Digits(Dataset):
    """scikit-learn's 1,797 handwritten 8×8 digits in [0, 1]; stratified 80/20 split (seed 0).

    ``train_balanced`` is the train split with equal numbers of each class (the first m of each,
    m the rarest class's count): the FID reference of a class-conditional model whose samples
    are class-balanced.
    """

    name = "digits"
    splits = ("train", "test", "all", "train_balanced")
    spec = "digits"

    @classmethod
    def load(cls, arg: str | None) -> Dataset:
        if arg:
            raise BenchError(f"dataset 'digits' takes no argument (got digits:{arg})")
        return cls()

    def _data(self, split: str) -> Tensor:
        data, _, _, _ = _digits()
        return data[self.indices(split)]

    def labels(self, split: str = "all") -> Tensor:
        _, labels, _, _ = _digits()
        return labels[self.indices(split)]

    @staticmethod
    def indices(split: str) -> Tensor:
        """The images of a split, as indices into ``all``."""
        _, labels, train, test = _digits()
        if split == "train_balanced":
            m = int(torch.bincount(labels[train]).min())
            return torch.cat([train[labels[train] == c][:m] for c in range(10)]).sort().values
        return {"train": train, "test": test, "all": torch.arange(len(labels))}[split]


class NpzImages(Dataset):
    """Images from a .npz file: uint8 arrays (N,H,W,C or N,C,H,W) under keys train/test or images."""

    name = "npz"

    def __init__(self, path: Path, arrays: dict[str, Tensor]) -> None:
        self.spec = f"npz:{path}"
        self.arrays = arrays
        self.splits = tuple(arrays)

    @classmethod
    def load(cls, arg: str | None) -> Dataset:
        if not arg:
            raise BenchError("the npz dataset needs a file: npz:PATH")
        path = Path(arg)
        if not path.is_file():
            raise BenchError(f"dataset file {arg!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = [k for k in ("train", "test") if k in f] or [
                    k for k in ("images", "x") if k in f
                ][:1]
                if not keys:
                    raise BenchError(f"{arg}: no array named train, test, images or x")
                arrays = {
                    ("all" if k in ("images", "x") else k): _as_images(f[k], arg) for k in keys
                }
        except (OSError, ValueError) as exc:
            raise BenchError(f"{arg}: not a readable .npz file ({exc})") from None
        if "all" not in arrays:
            arrays["all"] = torch.cat(list(arrays.values()))
        return cls(path, arrays)

    def _data(self, split: str) -> Tensor:
        return self.arrays[split]


class ImageFolder(Dataset):
    """PNG/JPEG images from a folder (non-recursive), read with Pillow; one split: all."""

    name = "folder"

    def __init__(self, path: Path, images: Tensor) -> None:
        self.spec = f"folder:{path}"
        self.images = images

    @classmethod
    def load(cls, arg: str | None) -> Dataset:
        from PIL import Image

        if not arg or not Path(arg).is_dir():
            raise BenchError(f"image folder {arg!r} does not exist (use folder:PATH)")
        files = sorted(
            p for p in Path(arg).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")
        )
        if not files:
            raise BenchError(f"image folder {arg!r} holds no .png or .jpg files")
        arrays = [np.asarray(Image.open(p)) for p in files]
        if len({a.shape for a in arrays}) != 1:
            raise BenchError(f"images in {arg!r} differ in size; resize them first")
        return cls(Path(arg), _as_images(np.stack(arrays), arg))

    def _data(self, split: str) -> Tensor:
        return self.images


def _as_images(array: np.ndarray, source: str) -> Tensor:
    """uint8 N×H×W[×C] or N×C×H×W → float (N, C, H, W) in [0, 1]."""
    if array.dtype != np.uint8:
        raise BenchError(f"{source}: images must be uint8, got {array.dtype}")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4:
        raise BenchError(f"{source}: expected N×H×W(×C) images, got shape {array.shape}")
    return from_uint8(torch.from_numpy(np.ascontiguousarray(array)))


@bench.hookimpl
def register_datasets(register):
    register(Digits)
    register(NpzImages)
    register(ImageFolder)
