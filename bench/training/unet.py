"""A small time-conditioned conv UNet for 8×8 images (the ``unet32`` recipe of plugins/weights).

32 channels at 8×8 and 64 at 4×4: six residual blocks (GroupNorm, SiLU, additive time
embedding), one stride-2 downsample, a nearest-neighbour upsample and one skip concatenation;
about 0.33M parameters. The noise level enters through Gaussian Fourier features (Tancik et al.
2020; NCSN++'s ``embedding_type='fourier'``, scale 16). What the label is (log σ or t) and what
the output means (a score times σ, or the noise ε) is decided by the caller (:mod:`.trained`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.errors import BenchError


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyperparameters; stored verbatim in a model's metadata JSON."""

    in_channels: int = 1
    channels: tuple[int, int] = (32, 64)
    groups: int = 8
    embed_dim: int = 128
    fourier_scale: float = 16.0
    center_input: bool = False
    """Map [0, 1] input to [−1, 1] before the first conv (as NCSN++ does for uncentered data)."""
    num_classes: int = 0
    """Class-conditional with this many classes, plus a learnt null label (index
    ``num_classes``, the unconditional model of classifier-free guidance); 0: unconditional."""

    def to_dict(self) -> dict[str, Any]:
        out = {"name": "unet8", **asdict(self), "channels": list(self.channels)}
        if not self.num_classes:
            del out["num_classes"]  # unconditional folders keep their metadata unchanged
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str) -> UNetConfig:
        """Validate a metadata ``architecture`` object (unknown keys are an error)."""
        if not isinstance(data, dict) or data.get("name") != "unet8":
            raise BenchError(f"{source}: architecture must be an object with name 'unet8'")
        known = {f.name for f in fields(cls)}
        extra = set(data) - known - {"name"}
        if extra:
            raise BenchError(f"{source}: unknown architecture keys {sorted(extra)}")
        values = {k: v for k, v in data.items() if k in known}
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        try:
            config = cls(**values)
            UNet(config)  # validates channel/group combinations
        except (TypeError, ValueError, RuntimeError) as exc:
            raise BenchError(f"{source}: invalid architecture {data} ({exc})") from None
        return config


class GaussianFourierProjection(nn.Module):
    """Random Fourier features [sin 2πWτ, cos 2πWτ] with fixed W ~ N(0, scale²)."""

    def __init__(self, embed_dim: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("W", torch.randn(embed_dim // 2) * scale)

    def forward(self, tau: Tensor) -> Tensor:
        proj = tau[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, + time embedding, GroupNorm → SiLU → conv, residual sum."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.dense = nn.Linear(embed_dim, c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.dense(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """The 8×8 UNet: f(x, τ) with τ a per-sample real label (log σ or t)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        e, g = config.embed_dim, config.groups
        if c1 % g or c2 % g or e % 2:
            raise ValueError(
                f"channels {config.channels} must be multiples of groups {g}, embed_dim even"
            )
        self.fourier = GaussianFourierProjection(e, config.fourier_scale)
        self.embed = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        if config.num_classes:
            self.label_embed = nn.Embedding(config.num_classes + 1, e)
        self.conv_in = nn.Conv2d(config.in_channels, c1, 3, padding=1)
        self.down = nn.ModuleList([ResBlock(c1, c1, e, g), ResBlock(c1, c1, e, g)])
        self.downsample = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.mid = nn.ModuleList([ResBlock(c2, c2, e, g), ResBlock(c2, c2, e, g)])
        self.up = nn.ModuleList([ResBlock(c1 + c2, c1, e, g), ResBlock(c1, c1, e, g)])
        self.norm_out = nn.GroupNorm(g, c1)
        self.conv_out = nn.Conv2d(c1, config.in_channels, 3, padding=1)

    def forward(self, x: Tensor, tau: Tensor, labels: Tensor | None = None) -> Tensor:
        """Network output for input x (B, C, 8, 8), noise labels τ (B,) and, for a conditional
        network, class labels (B,) in 0..num_classes (num_classes: the null label), whose
        embedding is added to the time embedding (as Ho & Salimans 2022 condition on c)."""
        emb = self.embed(self.fourier(tau))
        if self.config.num_classes:
            if labels is None:
                raise ValueError("a class-conditional network needs labels")
            emb = emb + self.label_embed(labels)
        h = self.conv_in(2 * x - 1 if self.config.center_input else x)
        for block in self.down:
            h = block(h, emb)
        skip = h
        h = self.downsample(h)
        for block in self.mid:
            h = block(h, emb)
        h = torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), skip], dim=1)
        for block in self.up:
            h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
