"""FIR resampling in pure PyTorch: ``upfirdn2d`` and the up/down-sampling built on it.

NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
Equations", Sec. 4.4 and App. H.1) resamples feature maps with an anti-aliasing FIR filter (Zhang
2019, "Making Convolutional Networks Shift-Invariant Again"), kernel ``[1, 3, 3, 1]``, set up as
in StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"). The primitive is "upsample by zero insertion, pad, convolve with a 2-D
FIR kernel, keep every ``down``-th sample", written here with ``F.conv2d`` only, so it runs on any
device and in any floating dtype (the kernel always takes the dtype of the input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def fir_kernel(
    taps: Sequence[float], gain: float, *, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """The normalised 2-D FIR kernel: outer product of 1-D taps (or the 2-D taps), summing to gain.

    Args:
        taps: 1-D separable taps such as ``[1, 3, 3, 1]``, or a square 2-D kernel.
        gain: the sum of the returned kernel (``factor**2`` for upsampling keeps the DC level).
        dtype: dtype of the result (the input's dtype, so float64 networks stay float64).
        device: device of the result.

    Returns:
        A ``[k, k]`` tensor.
    """
    k = torch.as_tensor(taps, dtype=torch.float64)
    if k.ndim == 1:
        k = torch.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {tuple(k.shape)}")
    return (k / k.sum() * gain).to(dtype=dtype, device=device)


def upfirdn2d(
    x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> Tensor:
    """Upsample, FIR-filter and downsample every channel of a batch of images.

    Each ``[H, W]`` plane is (1) upsampled by inserting ``up - 1`` zeros after every sample along
    both axes, (2) padded with ``pad[0]`` zeros before and ``pad[1]`` after, on both axes
    (negative values crop), (3) convolved (true convolution, i.e. with the flipped kernel, "valid"
    mode) with ``kernel`` and (4) subsampled by keeping every ``down``-th output.

    Args:
        x: ``[N, C, H, W]`` input.
        kernel: ``[k, k]`` FIR kernel (cast to ``x``'s dtype and device).
        up: integer upsampling factor.
        down: integer downsampling factor.
        pad: zeros added before and after each spatial axis, after upsampling.

    Returns:
        ``[N, C, (H*up + pad[0] + pad[1] - k) // down + 1, ...]``.
    """
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    if up > 1:
        spread = y.new_zeros(n * c, 1, h * up, w * up)
        spread[:, :, ::up, ::up] = y
        y = spread
    before, after = pad
    y = F.pad(y, (max(before, 0), max(after, 0), max(before, 0), max(after, 0)))
    y = y[
        :,
        :,
        max(-before, 0) : y.shape[2] - max(-after, 0),
        max(-before, 0) : y.shape[3] - max(-after, 0),
    ]
    weight = torch.flip(kernel.to(dtype=y.dtype, device=y.device), (0, 1))[None, None]
    y = F.conv2d(y, weight, stride=down)
    return y.reshape(n, c, y.shape[2], y.shape[3])


def upsample_2d(x: Tensor, taps: Sequence[float], factor: int = 2) -> Tensor:
    """FIR upsampling by ``factor`` (output ``[N, C, H*factor, W*factor]``).

    Args:
        x: ``[N, C, H, W]`` input.
        taps: FIR taps, normalised so that a constant image keeps its value.
        factor: integer upsampling factor.
    """
    k = fir_kernel(taps, factor**2, dtype=x.dtype, device=x.device)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Tensor, taps: Sequence[float], factor: int = 2) -> Tensor:
    """FIR downsampling by ``factor`` (output ``[N, C, H//factor, W//factor]``).

    Args:
        x: ``[N, C, H, W]`` input.
        taps: FIR taps, normalised to unit DC gain.
        factor: integer downsampling factor.
    """
    k = fir_kernel(taps, 1.0, dtype=x.dtype, device=x.device)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def conv_downsample_2d(x: Tensor, weight: Tensor, taps: Sequence[float], factor: int = 2) -> Tensor:
    """A convolution fused with FIR downsampling: blur once with padding, then a strided conv.

    Args:
        x: ``[N, C_in, H, W]`` input.
        weight: ``[C_out, C_in, k, k]`` convolution weight (``k`` odd).
        taps: FIR taps, normalised to unit DC gain.
        factor: integer downsampling factor.

    Returns:
        ``[N, C_out, H//factor, W//factor]``.
    """
    k = fir_kernel(taps, 1.0, dtype=x.dtype, device=x.device)
    p = (k.shape[0] - factor) + (weight.shape[-1] - 1)
    x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=factor)


def upsample_conv_2d(x: Tensor, weight: Tensor, taps: Sequence[float], factor: int = 2) -> Tensor:
    """A convolution fused with FIR upsampling: a strided transposed conv, then one FIR blur.

    Args:
        x: ``[N, C_in, H, W]`` input.
        weight: ``[C_out, C_in, k, k]`` convolution weight (``k`` odd), as for a plain conv.
        taps: FIR taps, normalised so that a constant image keeps its value.
        factor: integer upsampling factor.

    Returns:
        ``[N, C_out, H*factor, W*factor]``.
    """
    k = fir_kernel(taps, factor**2, dtype=x.dtype, device=x.device)
    p = (k.shape[0] - factor) - (weight.shape[-1] - 1)
    # A transposed conv scatters with the weight as given; flipping it (and swapping in/out) makes
    # it "zero-insertion upsampling, then a cross-correlation with `weight`", up to the shift that
    # the FIR padding below absorbs.
    w_t = torch.flip(weight, (2, 3)).transpose(0, 1)
    x = F.conv_transpose2d(x, w_t, stride=factor)
    return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def naive_upsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    """Nearest-neighbour upsampling (each pixel repeated ``factor`` x ``factor`` times)."""
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def naive_downsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    """Box downsampling (the mean of each ``factor`` x ``factor`` block)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))
