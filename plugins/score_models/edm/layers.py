"""Building blocks of the EDM UNets, written for sde-bench.

The layers follow the unified UNet of Karras et al. (2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", NeurIPS), which expresses both DDPM++/NCSN++ (Song et al.
2021, "Score-Based Generative Modeling through Stochastic Differential Equations", ICLR) and ADM
(Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS) with one
residual block. Parameter and buffer names match EDM's, so an EDM state dict loads strictly.

Dtypes follow the input: every layer casts its weights to the activation dtype, and the places
where EDM computes in float32 on purpose (attention softmax, the positional frequency table)
compute in float64 instead when the activations are float64. A float64 network fed float64
inputs therefore computes entirely in float64, and a float32 network run in float16 (EDM's
``use_fp16`` on CUDA) keeps the same float32 islands as EDM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def upcast_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of EDM's "compute this in float32" spots: float64 for float64 input."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class Linear(nn.Module):
    """Fully connected layer ``y = x Wᵀ + b`` with weights cast to the input's dtype.

    Args:
        in_features: Input width.
        out_features: Output width.
        bias: Whether the layer has a bias.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.xavier_uniform_(self.weight)  # placeholder until a state dict is loaded

    def forward(self, x: Tensor) -> Tensor:
        y = x @ self.weight.to(x.dtype).t()
        return y if self.bias is None else y + self.bias.to(x.dtype)


def _resample_filter(taps: Sequence[float]) -> Tensor:
    """The separable 2-D FIR filter ``f fᵀ / (Σf)²`` as a [1, 1, k, k] tensor."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    return (torch.outer(f, f) / f.sum().square()).reshape(1, 1, len(f), len(f))


class Conv2d(nn.Module):
    """2-D convolution with optional FIR up- or downsampling by 2.

    Resampling uses a fixed separable FIR filter (``[1, 1]``: box; ``[1, 3, 3, 1]``: the
    binomial filter of NCSN++, Song et al. 2021), applied per channel with stride 2 before
    (down) or after a transposed convolution (up). ``kernel=0`` gives a pure resampler without
    weights. ``fused_resample`` convolves at full resolution and filters afterwards (down) or
    before (up), as EDM does for NCSN++'s residual encoder path.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel: Square kernel size; 0 for no convolution.
        bias: Whether the convolution has a bias.
        up: Upsample by 2.
        down: Downsample by 2.
        resample_filter: 1-D FIR taps of the resampling filter.
        fused_resample: Fuse the resampling with the convolution (see above).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: Sequence[float] = (1, 1),
        fused_resample: bool = False,
    ) -> None:
        if up and down:
            raise ValueError("Conv2d cannot both upsample and downsample")
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_resample = fused_resample
        self.weight = None
        self.bias = None
        if kernel:
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel))
            nn.init.xavier_uniform_(self.weight)  # placeholder until a state dict is loaded
            self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        resampler = _resample_filter(resample_filter) if up or down else None
        self.register_buffer("resample_filter", resampler)

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2
        if self.fused_resample and w is not None and self.down:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = _filter_down(x, f, padding=0)
        elif self.fused_resample and w is not None and self.up:
            x = _filter_up(x, f, padding=max(f_pad - w_pad, 0))
            x = F.conv2d(x, w, padding=max(w_pad - f_pad, 0))
        else:
            if self.up:
                x = _filter_up(x, f, padding=f_pad)
            if self.down:
                x = _filter_down(x, f, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


def _filter_down(x: Tensor, f: Tensor, padding: int) -> Tensor:
    """Per-channel FIR filtering with stride 2."""
    channels = x.shape[1]
    return F.conv2d(x, f.tile([channels, 1, 1, 1]), groups=channels, stride=2, padding=padding)


def _filter_up(x: Tensor, f: Tensor, padding: int) -> Tensor:
    """Per-channel zero-insertion upsampling by 2 followed by FIR filtering (gain 4)."""
    channels = x.shape[1]
    kernel = (f * 4).tile([channels, 1, 1, 1])
    return F.conv_transpose2d(x, kernel, groups=channels, stride=2, padding=padding)


class GroupNorm(nn.Module):
    """Group normalization (Wu & He 2018) with at most 32 groups of at least 4 channels.

    Args:
        num_channels: Channels of the input.
        num_groups: Largest number of groups.
        min_channels_per_group: Smallest group size; reduces the group count for narrow layers.
        eps: Added to the variance.
    """

    def __init__(
        self,
        num_channels: int,
        num_groups: int = 32,
        min_channels_per_group: int = 4,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight.to(x.dtype), self.bias.to(x.dtype)
        return F.group_norm(x, self.num_groups, weight=weight, bias=bias, eps=self.eps)


def attention_weights(q: Tensor, k: Tensor) -> Tensor:
    """Softmax over keys of ``qᵀk / √C`` for [N, C, L] queries and keys, returned as [N, Lq, Lk].

    The logits and the softmax are computed in float32 (float64 for float64 inputs) and the
    result is cast back to the input dtype, as EDM does to keep float16 attention stable.
    """
    up = upcast_dtype(q.dtype)
    k = k / math.sqrt(k.shape[1])
    logits = torch.einsum("ncq,nck->nqk", q.to(up), k.to(up))
    return logits.softmax(dim=2).to(q.dtype)


class UNetBlock(nn.Module):
    """EDM's unified residual block: GroupNorm-SiLU-conv twice, an embedding injection, an
    optional up/downsampling, an optional skip projection and optional multi-head self-attention.

    With ``adaptive_scale`` (ADM, Dhariwal & Nichol 2021) the embedding gives a per-channel scale
    and shift after the second normalization; without it (DDPM++/NCSN++, Song et al. 2021) it is
    added before that normalization. Residual sums are multiplied by ``skip_scale``.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        emb_channels: Width of the noise (and label) embedding.
        up: Upsample by 2.
        down: Downsample by 2.
        attention: Add self-attention after the residual part.
        num_heads: Attention heads; ``None`` means ``out_channels // channels_per_head``.
        channels_per_head: Channels per head when ``num_heads`` is ``None``.
        dropout: Dropout probability before the second convolution (training only).
        skip_scale: Factor applied to each residual sum.
        eps: GroupNorm epsilon.
        resample_filter: FIR taps for up/downsampling.
        resample_proj: Use a 1×1 convolution on the skip path even when the width is unchanged.
        adaptive_scale: Scale-and-shift embedding injection (see above).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        num_heads: int | None = None,
        channels_per_head: int = 64,
        dropout: float = 0.0,
        skip_scale: float = 1.0,
        eps: float = 1e-5,
        resample_filter: Sequence[float] = (1, 1),
        resample_proj: bool = False,
        adaptive_scale: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.emb_channels = emb_channels
        heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.num_heads = heads if attention else 0
        self.dropout = dropout
        self.skip_scale = skip_scale
        self.adaptive_scale = adaptive_scale
        resample = dict(up=up, down=down, resample_filter=resample_filter)

        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, **resample)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1))
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, **resample)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1)
            self.proj = Conv2d(out_channels, out_channels, kernel=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        shortcut = x if self.skip is None else self.skip(x)
        x = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + shortcut) * self.skip_scale
        if self.num_heads:
            x = (self.proj(self._attend(self.norm2(x))) + x) * self.skip_scale
        return x

    def _attend(self, h: Tensor) -> Tensor:
        """Multi-head self-attention over the pixels of ``h`` (before the output projection)."""
        n, c, height, width = h.shape
        qkv = self.qkv(h).reshape(n * self.num_heads, c // self.num_heads, 3, height * width)
        q, k, v = qkv.unbind(2)
        w = attention_weights(q, k)
        return torch.einsum("nqk,nck->ncq", w, v).reshape(n, c, height, width)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding ``[cos(ωᵢ t), sin(ωᵢ t)]`` with ``ωᵢ = max_positions^(−i/d)``
    (Vaswani et al. 2017; DDPM++ and ADM). ``endpoint=True`` makes the last frequency exactly
    ``1/max_positions`` (DDPM++ in EDM).

    Args:
        num_channels: Embedding width (even).
        max_positions: The base of the geometric frequency ladder.
        endpoint: Include the endpoint of the ladder.
    """

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = False):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint

    def forward(self, x: Tensor) -> Tensor:
        half = self.num_channels // 2
        exponents = torch.arange(half, dtype=upcast_dtype(x.dtype), device=x.device)
        exponents = exponents / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** exponents
        angles = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features ``[cos(2π fᵢ t), sin(2π fᵢ t)]`` with fixed ``fᵢ ~ N(0, scale²)``
    (Tancik et al. 2020; NCSN++ of Song et al. 2021). The frequencies are a persistent buffer.

    Args:
        num_channels: Embedding width (even).
        scale: Standard deviation of the random frequencies at construction.
    """

    def __init__(self, num_channels: int, scale: float = 16) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: Tensor) -> Tensor:
        angles = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([angles.cos(), angles.sin()], dim=1)
