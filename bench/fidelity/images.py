"""Image conventions shared by models, datasets and metrics.

Image data lives in [0, 1] as float (N, C, H, W). For FID/KID it is quantised to uint8 with
``round(clip(x, 0, 1)·255)`` — rounding to nearest, where the reference code truncates
(``clip(x·255, 0, 255).astype(uint8)``); truncation biases every pixel down by half a level.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] float images → uint8, clipped and rounded to nearest."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def from_uint8(images: Tensor) -> Tensor:
    """uint8 images → float32 in [0, 1]."""
    return images.to(torch.float32) / 255
