"""Building blocks of the DDPM, DDPM++ and NCSN++ score networks.

The blocks follow the descriptions of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models",
App. B: a PixelCNN++-style U-Net with GroupNorm residual blocks, self-attention at 16x16 and a
sinusoidal time embedding) and of Song et al. 2021 ("Score-Based Generative Modeling through
Stochastic Differential Equations", App. H.1: BigGAN-type residual blocks, residual scaling by
1/sqrt(2), FIR resampling and Gaussian Fourier features for continuous noise levels).

Sub-module names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0``, ``Conv2d_0``, ...) are the
state-dict names of the released score_sde checkpoints, so those load with ``strict=True``.
Every constant created in a forward pass takes the dtype of its input, so ``net.double()``
computes entirely in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from bench_plugins.score_models.score_sde import fir
from torch import nn

Tensor = torch.Tensor

ACTIVATIONS = ("elu", "relu", "lrelu", "swish")
_SQRT2 = math.sqrt(2.0)


def activation(name: str) -> nn.Module:
    """The nonlinearity named in a config (``swish`` is SiLU, ``lrelu`` has slope 0.2)."""
    name = name.lower()
    if name == "elu":
        return nn.ELU()
    if name == "relu":
        return nn.ReLU()
    if name == "lrelu":
        return nn.LeakyReLU(negative_slope=0.2)
    if name == "swish":
        return nn.SiLU()
    raise ValueError(f"unknown nonlinearity {name!r}; valid: {', '.join(ACTIVATIONS)}")


@torch.no_grad()
def default_init_(weight: Tensor, scale: float = 1.0) -> Tensor:
    """DDPM's initialiser (Ho et al. 2020): variance scaling, fan-average, uniform.

    ``Var = scale / ((fan_in + fan_out) / 2)``; a scale of 0 means 1e-10 (an almost-zero layer,
    the "init_scale=0" of the last conv of each residual branch).
    """
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
    fan_avg = (weight.shape[0] + weight.shape[1]) * receptive / 2
    bound = math.sqrt(3.0 * scale / fan_avg)
    return weight.uniform_(-bound, bound)


def conv3x3(
    in_ch: int, out_ch: int, *, stride: int = 1, padding: int = 1, init_scale: float = 1.0
) -> nn.Conv2d:
    """A 3x3 convolution with DDPM initialisation (zero bias)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=padding)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(in_ch: int, out_ch: int, *, init_scale: float = 1.0) -> nn.Conv2d:
    """A 1x1 convolution with DDPM initialisation (zero bias)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=1)
    default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(in_dim: int, out_dim: int) -> nn.Linear:
    """A fully connected layer with DDPM initialisation (zero bias)."""
    layer = nn.Linear(in_dim, out_dim)
    default_init_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def group_norm(channels: int, num_groups: int | None = None) -> nn.GroupNorm:
    """GroupNorm with eps 1e-6; DDPM uses 32 groups, DDPM++/NCSN++ ``min(C // 4, 32)``."""
    groups = min(channels // 4, 32) if num_groups is None else num_groups
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6)


class NIN(nn.Module):
    """A per-pixel linear map over channels ("network in network", a 1x1 conv as ``W``, ``b``).

    ``W`` has shape ``[in_dim, out_dim]`` (the transpose of a 1x1 conv weight).
    """

    def __init__(self, in_dim: int, out_dim: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.W = nn.Parameter(default_init_(torch.empty(in_dim, out_dim), init_scale))
        self.b = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        """``y[b, o, h, w] = sum_c x[b, c, h, w] W[c, o] + b[o]``."""
        return torch.einsum("bchw,co->bohw", x, self.W) + self.b[None, :, None, None]


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of a scalar (Tancik et al. 2020), fixed during training.

    Song et al. 2021, App. H.1: for continuous VE models the network is conditioned on
    ``log sigma`` through ``[sin(2 pi W s), cos(2 pi W s)]`` with ``W ~ N(0, scale^2)``.
    ``W`` has ``requires_grad=False`` and is therefore not part of the EMA.
    """

    def __init__(self, embedding_size: int = 256, scale: float = 1.0) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, s: Tensor) -> Tensor:
        """``[B] -> [B, 2 * embedding_size]``."""
        proj = s[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


def timestep_embedding(
    labels: Tensor, dim: int, dtype: torch.dtype, max_positions: int = 10000
) -> Tensor:
    """The sinusoidal embedding of Transformers as used by DDPM (Ho et al. 2020, App. B).

    Frequencies ``exp(-ln(max_positions) * i / (dim/2 - 1))`` for ``i < dim/2``; the result is
    ``[sin(l f), cos(l f)]`` (zero-padded to ``dim``), computed in ``dtype`` (labels may be real).

    Args:
        labels: ``[B]`` time labels (``t * 999`` for VP, integer indices for discrete models).
        dim: embedding size.
        dtype: computation dtype (the network input's).
        max_positions: the longest period.

    Returns:
        ``[B, dim]``.
    """
    if labels.ndim != 1:
        raise ValueError(f"time labels must be 1-D, got shape {tuple(labels.shape)}")
    half = dim // 2
    step = math.log(max_positions) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=dtype, device=labels.device) * -step)
    args = labels.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection (Ho et al. 2020, App. B).

    Args:
        channels: feature channels.
        num_groups: GroupNorm groups (32 for DDPM; ``None`` for the DDPM++ rule).
        skip_rescale: divide the residual sum by sqrt(2) (Song et al. 2021, App. H.1).
        init_scale: initial scale of the output projection.
    """

    def __init__(
        self,
        channels: int,
        num_groups: int | None = None,
        skip_rescale: bool = False,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        self.GroupNorm_0 = group_norm(channels, num_groups)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        hn = self.GroupNorm_0(x)
        q = self.NIN_0(hn).reshape(b, c, h * w)
        k = self.NIN_1(hn).reshape(b, c, h * w)
        v = self.NIN_2(hn).reshape(b, c, h * w)
        logits = torch.bmm(q.transpose(1, 2), k) * (int(c) ** (-0.5))  # [B, query, key]
        attn = torch.softmax(logits, dim=-1)
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)
        out = self.NIN_3(out)
        return (x + out) / _SQRT2 if self.skip_rescale else x + out


class FirConv2d(nn.Module):
    """A conv layer whose up/down-sampling is fused with the FIR filter (StyleGAN2's ``Conv2d``).

    Parameters ``weight`` ``[out, in, k, k]`` and ``bias`` ``[out]``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        *,
        up: bool = False,
        down: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("FirConv2d: up and down are exclusive")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"FirConv2d: kernel must be odd, got {kernel}")
        self.weight = nn.Parameter(default_init_(torch.empty(out_ch, in_ch, kernel, kernel)))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up, self.down = up, down
        self.fir_kernel = tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            y = fir.upsample_conv_2d(x, self.weight, self.fir_kernel)
        elif self.down:
            y = fir.conv_downsample_2d(x, self.weight, self.fir_kernel)
        else:
            y = F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)
        return y + self.bias.reshape(1, -1, 1, 1)


class Upsample(nn.Module):
    """2x upsampling: nearest (+ optional 3x3 conv ``Conv_0``) or FIR (+ optional ``Conv2d_0``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        *,
        with_conv: bool = False,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv:
            if fir:
                self.Conv2d_0 = FirConv2d(in_ch, out_ch, up=True, fir_kernel=fir_kernel)
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir, tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else fir.upsample_2d(x, self.fir_kernel)
        h = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """2x downsampling: strided 3x3 conv ``Conv_0`` with "SAME" padding or average pooling, or
    FIR (+ optional ``Conv2d_0``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        *,
        with_conv: bool = False,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv:
            if fir:
                self.Conv2d_0 = FirConv2d(in_ch, out_ch, down=True, fir_kernel=fir_kernel)
            else:
                self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir, tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else fir.downsample_2d(x, self.fir_kernel)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))  # TensorFlow's "SAME" for stride 2
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlockDDPM(nn.Module):
    """DDPM's residual block: GN, act, conv, + time bias, GN, act, dropout, conv, + shortcut.

    With ``num_groups=32, skip_rescale=False`` this is the block of Ho et al. 2020; with
    ``num_groups=None, skip_rescale=True`` it is DDPM++'s "ddpm" block (Song et al. 2021).
    The shortcut is a ``NIN_0`` (or a 3x3 ``Conv_2``) when the channel count changes.
    """

    def __init__(
        self,
        act: nn.Module,
        in_ch: int,
        out_ch: int | None = None,
        temb_dim: int | None = None,
        *,
        num_groups: int | None = None,
        conv_shortcut: bool = False,
        dropout: float = 0.1,
        skip_rescale: bool = False,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch, num_groups)
        self.act = act
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch, num_groups)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.in_ch, self.out_ch = in_ch, out_ch
        self.conv_shortcut, self.skip_rescale = conv_shortcut, skip_rescale

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-type residual block with optional up/down-sampling (Song et al. 2021, App. H.1).

    Both branches are resampled (FIR or nearest/box) after the first norm+activation; the
    shortcut is a 1x1 ``Conv_2`` when channels change or the block resamples.
    """

    def __init__(
        self,
        act: nn.Module,
        in_ch: int,
        out_ch: int | None = None,
        temb_dim: int | None = None,
        *,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.1,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act = act
        self.up, self.down, self.fir, self.fir_kernel = up, down, fir, tuple(fir_kernel)
        self.in_ch, self.out_ch, self.skip_rescale = in_ch, out_ch, skip_rescale

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return fir.upsample_2d(x, self.fir_kernel) if self.fir else fir.naive_upsample_2d(x)
        if self.down:
            return fir.downsample_2d(x, self.fir_kernel) if self.fir else fir.naive_downsample_2d(x)
        return x

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self._resample(self.act(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)
        return (x + h) / _SQRT2 if self.skip_rescale else x + h


class Combine(nn.Module):
    """Merges the input-pyramid image into the features: 1x1 ``Conv_0``, then sum or concat."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat") -> None:
        super().__init__()
        if method not in ("cat", "sum"):
            raise ValueError(f"unknown combine method {method!r}; valid: cat, sum")
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y
