"""The two UNet families of EDM, reimplemented for sde-bench.

* :class:`SongUNet`: DDPM++ and NCSN++ of Song et al. (2021, "Score-Based Generative Modeling
  through Stochastic Differential Equations", ICLR), in the form Karras et al. (2022,
  "Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS) retrained them.
* :class:`DhariwalUNet`: ADM of Dhariwal & Nichol (2021, "Diffusion Models Beat GANs on Image
  Synthesis", NeurIPS), as used by EDM for class-conditional ImageNet.

Both take ``(x, noise_labels, class_labels, augment_labels=None)`` and return the raw network
output ``F``; the preconditioners in :mod:`.precond` turn it into a denoiser. The constructors
accept EDM's keyword arguments and the module names match EDM's, so the state dict of an EDM
pickle loads with ``strict=True``. Weights are placeholders until a state dict is loaded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from bench_plugins.score_models.edm.layers import (
    Conv2d,
    FourierEmbedding,
    GroupNorm,
    Linear,
    PositionalEmbedding,
    UNetBlock,
)
from torch import Tensor, nn
from torch.nn import functional as F


def _swap_halves(emb: Tensor) -> Tensor:
    """``[cos, sin] → [sin, cos]``: the order of DDPM++/NCSN++'s time embedding."""
    n, c = emb.shape
    return emb.reshape(n, 2, c // 2).flip(1).reshape(n, c)


def _drop_labels(labels: Tensor, p: float, training: bool) -> Tensor:
    """Zero whole label vectors with probability ``p`` during training (classifier-free guidance)."""
    if not training or not p:
        return labels
    keep = torch.rand([labels.shape[0], 1], device=labels.device) >= p
    return labels * keep.to(labels.dtype)


@dataclass(frozen=True)
class _SongLayout:
    """The encoder/decoder layout of :class:`SongUNet` (module names as in EDM)."""

    levels: list[tuple[int, int]]  # (resolution, channels) per level
    num_blocks: int
    attn_resolutions: tuple[int, ...]
    resample_filter: tuple[float, ...]
    block: Callable[..., UNetBlock]

    def encoder(self, in_channels: int, model_channels: int, encoder_type: str) -> nn.ModuleDict:
        """Input conv, then per level: a down block (+ progressive input path) and blocks."""
        enc = nn.ModuleDict()
        filt = self.resample_filter
        cout = caux = in_channels
        for level, (res, width) in enumerate(self.levels):
            tag = f"{res}x{res}"
            if level == 0:
                cout = model_channels
                enc[f"{tag}_conv"] = Conv2d(in_channels, cout, kernel=3)
            else:
                enc[f"{tag}_down"] = self.block(cout, cout, down=True)
                if encoder_type == "skip":
                    enc[f"{tag}_aux_down"] = Conv2d(caux, caux, 0, down=True, resample_filter=filt)
                    enc[f"{tag}_aux_skip"] = Conv2d(caux, cout, kernel=1)
                if encoder_type == "residual":
                    enc[f"{tag}_aux_residual"] = Conv2d(
                        caux, cout, 3, down=True, resample_filter=filt, fused_resample=True
                    )
                    caux = cout
            for idx in range(self.num_blocks):
                attention = res in self.attn_resolutions
                enc[f"{tag}_block{idx}"] = self.block(cout, width, attention=attention)
                cout = width
        return enc

    def decoder(self, skips: list[int], out_channels: int, decoder_type: str) -> nn.ModuleDict:
        """Per level from the bottom: middle or up block, blocks taking skips, output path."""
        dec = nn.ModuleDict()
        filt = self.resample_filter
        cout = skips[-1]
        last = len(self.levels) - 1
        for level in reversed(range(len(self.levels))):
            res, width = self.levels[level]
            tag = f"{res}x{res}"
            if level == last:
                dec[f"{tag}_in0"] = self.block(cout, cout, attention=True)
                dec[f"{tag}_in1"] = self.block(cout, cout)
            else:
                dec[f"{tag}_up"] = self.block(cout, cout, up=True)
            for idx in range(self.num_blocks + 1):
                attention = idx == self.num_blocks and res in self.attn_resolutions
                dec[f"{tag}_block{idx}"] = self.block(
                    cout + skips.pop(), width, attention=attention
                )
                cout = width
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < last:
                    dec[f"{tag}_aux_up"] = Conv2d(
                        out_channels, out_channels, 0, up=True, resample_filter=filt
                    )
                dec[f"{tag}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                dec[f"{tag}_aux_conv"] = Conv2d(cout, out_channels, kernel=3)
        return dec


class SongUNet(nn.Module):
    """DDPM++ / NCSN++ (Song et al. 2021) as parameterized by EDM (Karras et al. 2022).

    The noise label is embedded (sinusoidal for DDPM++, random Fourier for NCSN++), optionally
    summed with a class-label and an augmentation-label embedding, and passed through a two-layer
    SiLU MLP. The encoder has ``num_blocks`` residual blocks per resolution and a downsampling
    block between resolutions; the decoder mirrors it with skip concatenations and one extra
    block per resolution. NCSN++'s progressive input path is ``encoder_type='residual'`` (a
    strided FIR-filtered 3×3 conv of the previous input, added and scaled by 1/√2) or
    ``'skip'``; its progressive output path is ``decoder_type='skip'``.

    Args:
        img_resolution: Input/output resolution.
        in_channels: Input channels.
        out_channels: Output channels.
        label_dim: Number of classes (0: unconditional).
        augment_dim: Augmentation label width (0: none).
        model_channels: Base channel count.
        channel_mult: Per-resolution channel multipliers.
        channel_mult_emb: Embedding width multiplier.
        num_blocks: Residual blocks per resolution.
        attn_resolutions: Resolutions with self-attention.
        dropout: Dropout probability (training only).
        label_dropout: Class-label dropout probability (training only).
        embedding_type: ``'positional'`` (DDPM++) or ``'fourier'`` (NCSN++).
        channel_mult_noise: Noise embedding width multiplier (1 for DDPM++, 2 for NCSN++).
        encoder_type: ``'standard'``, ``'skip'`` or ``'residual'``.
        decoder_type: ``'standard'`` or ``'skip'``.
        resample_filter: FIR taps for resampling (``[1, 1]`` DDPM++, ``[1, 3, 3, 1]`` NCSN++).
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: Sequence[float] = (1, 1),
    ) -> None:
        _check_choice("embedding_type", embedding_type, ("positional", "fourier"))
        _check_choice("encoder_type", encoder_type, ("standard", "skip", "residual"))
        _check_choice("decoder_type", decoder_type, ("standard", "skip"))
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        block = functools.partial(
            UNetBlock,
            emb_channels=emb_channels,
            num_heads=1,
            dropout=dropout,
            skip_scale=math.sqrt(0.5),
            eps=1e-6,
            resample_filter=resample_filter,
            resample_proj=True,
            adaptive_scale=False,
        )
        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(noise_channels)
        self.map_label = Linear(label_dim, noise_channels) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)
        layout = _SongLayout(
            levels=[(img_resolution >> i, model_channels * m) for i, m in enumerate(channel_mult)],
            num_blocks=num_blocks,
            attn_resolutions=tuple(attn_resolutions),
            resample_filter=tuple(resample_filter),
            block=block,
        )
        self.enc = layout.encoder(in_channels, model_channels, encoder_type)
        skips = [m.out_channels for name, m in self.enc.items() if "aux" not in name]
        self.dec = layout.decoder(skips, out_channels, decoder_type)

    def forward(
        self,
        x: Tensor,
        noise_labels: Tensor,
        class_labels: Tensor | None = None,
        augment_labels: Tensor | None = None,
    ) -> Tensor:
        """The raw output ``F(x, c_noise)`` for [N, C, H, W] inputs and [N] noise labels."""
        emb = self._embedding(x, noise_labels, class_labels, augment_labels)
        x, skips = self._encode(x, emb)
        return self._decode(x, skips, emb)

    def _embedding(
        self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None, aug: Tensor | None
    ) -> Tensor:
        emb = _swap_halves(self.map_noise(noise_labels))
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional: class_labels are required")
            labels = _drop_labels(class_labels, self.label_dropout, self.training)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and aug is not None:
            emb = emb + self.map_augment(aug)
        emb = F.silu(self.map_layer0(emb))
        return F.silu(self.map_layer1(emb))

    def _encode(self, x: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips: list[Tensor] = []
        aux = x
        for name, module in self.enc.items():
            if name.endswith("_aux_down"):
                aux = module(aux)
            elif name.endswith("_aux_skip"):
                x = skips[-1] = x + module(aux)
            elif name.endswith("_aux_residual"):
                x = skips[-1] = aux = (x + module(aux)) / math.sqrt(2)
            else:
                x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
                skips.append(x)
        return x, skips

    def _decode(self, x: Tensor, skips: list[Tensor], emb: Tensor) -> Tensor:
        aux: Tensor | None = None
        normed: Tensor | None = None
        for name, module in self.dec.items():
            if name.endswith("_aux_up"):
                aux = module(aux)
            elif name.endswith("_aux_norm"):
                normed = module(x)
            elif name.endswith("_aux_conv"):
                out = module(F.silu(normed))
                aux = out if aux is None else out + aux
            else:
                if "_block" in name:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = module(x, emb)
        return aux


class DhariwalUNet(nn.Module):
    """ADM (Dhariwal & Nichol 2021) as parameterized by EDM (Karras et al. 2022).

    Sinusoidal noise embedding and a SiLU MLP, to which a class embedding (a bias-free linear map
    of the one-hot label) is added before the final SiLU. Residual blocks use scale-and-shift
    embedding injection; attention uses ``out_channels // 64`` heads at ``attn_resolutions``.
    The output is ``conv(silu(GroupNorm(x)))`` of the last decoder features.

    Args:
        img_resolution: Input/output resolution.
        in_channels: Input channels.
        out_channels: Output channels.
        label_dim: Number of classes (0: unconditional).
        augment_dim: Augmentation label width (0: none).
        model_channels: Base channel count.
        channel_mult: Per-resolution channel multipliers.
        channel_mult_emb: Embedding width multiplier.
        num_blocks: Residual blocks per resolution.
        attn_resolutions: Resolutions with self-attention.
        dropout: Dropout probability (training only).
        label_dropout: Class-label dropout probability (training only).
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions: Sequence[int] = (32, 16, 8),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout)
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)
        self.map_label = Linear(label_dim, emb_channels, bias=False) if label_dim else None

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res, width = img_resolution >> level, model_channels * mult
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(cout, width, kernel=3)
                cout = width
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for idx in range(num_blocks):
                attention = res in attn_resolutions
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(
                    cout, width, attention=attention, **block
                )
                cout = width
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res, width = img_resolution >> level, model_channels * mult
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(num_blocks + 1):
                attention = res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(
                    cout + skips.pop(), width, attention=attention, **block
                )
                cout = width
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, kernel=3)

    def forward(
        self,
        x: Tensor,
        noise_labels: Tensor,
        class_labels: Tensor | None = None,
        augment_labels: Tensor | None = None,
    ) -> Tensor:
        """The raw output ``F(x, c_noise)`` for [N, C, H, W] inputs and [N] noise labels."""
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional: class_labels are required")
            emb = emb + self.map_label(
                _drop_labels(class_labels, self.label_dropout, self.training)
            )
        emb = F.silu(emb)
        skips = []
        for module in self.enc.values():
            x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
            skips.append(x)
        for name, module in self.dec.items():
            if "_block" in name:
                x = torch.cat([x, skips.pop()], dim=1)
            x = module(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


UNETS: dict[str, type[nn.Module]] = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}
"""The UNet classes by EDM's ``model_type`` name."""
