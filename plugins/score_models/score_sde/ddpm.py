"""The DDPM U-Net (Ho et al. 2020), as configured by score_sde's ``model.name = "ddpm"``.

Ho et al. 2020, "Denoising Diffusion Probabilistic Models", App. B: a U-Net with two (CIFAR-10)
residual blocks per resolution, GroupNorm(32), self-attention at 16x16, dropout, and the
sinusoidal embedding of the timestep added to every block. Song et al. 2021 (Sec. 4, Tables 1
and 3) reuse it as the "DDPM" architecture for VP (discrete and continuous) and VE models.

As for :mod:`.ncsnpp`, all modules sit in one ``all_modules`` list in order of use.
"""

from __future__ import annotations

import torch
from bench_plugins.score_models.score_sde import layers
from bench_plugins.score_models.score_sde.configs import ScoreSdeConfig
from bench_plugins.score_models.score_sde.ncsnpp import ve_sigma_ladder
from torch import nn

Tensor = torch.Tensor
_GROUPS = 32


class DDPM(nn.Module):
    """The DDPM score network.

    ``forward(x, labels)``: ``x`` is ``[B, C, H, W]`` (mapped from ``[0, 1]`` to ``[-1, 1]`` when
    ``data.centered`` is false), ``labels`` ``[B]`` are time labels for the sinusoidal embedding
    (``t * 999`` for VP; integer indices for discrete VE, where ``scale_by_sigma`` divides the
    output by ``sigmas[labels]``).

    Args:
        config: a validated config with ``model.name == "ddpm"``.
    """

    def __init__(self, config: ScoreSdeConfig) -> None:
        super().__init__()
        m, d = config.model, config.data
        self.register_buffer("sigmas", ve_sigma_ladder(m.sigma_min, m.sigma_max, m.num_scales))
        self.act = act = layers.activation(m.nonlinearity)
        self.nf = nf = m.nf
        self.num_resolutions = len(m.ch_mult)
        self.num_res_blocks = m.num_res_blocks
        self.conditional = m.conditional
        self.centered = d.centered
        self.scale_by_sigma = m.scale_by_sigma
        resolutions = [d.image_size // 2**i for i in range(self.num_resolutions)]
        self.attn_at_level = [r in m.attn_resolutions for r in resolutions]

        def resblock(in_ch: int, out_ch: int | None = None) -> nn.Module:
            return layers.ResnetBlockDDPM(
                act, in_ch, out_ch, 4 * nf, num_groups=_GROUPS, dropout=m.dropout, init_scale=0.0
            )

        def attn(channels: int) -> nn.Module:
            return layers.AttnBlock(channels, num_groups=_GROUPS)

        mods: list[nn.Module] = []
        if self.conditional:
            mods += [layers.dense(nf, 4 * nf), layers.dense(4 * nf, 4 * nf)]
        mods.append(layers.conv3x3(d.num_channels, nf))
        skips, in_ch = [nf], nf
        for level, mult in enumerate(m.ch_mult):
            for _ in range(m.num_res_blocks):
                mods.append(resblock(in_ch, nf * mult))
                in_ch = nf * mult
                if self.attn_at_level[level]:
                    mods.append(attn(in_ch))
                skips.append(in_ch)
            if level != self.num_resolutions - 1:
                mods.append(layers.Downsample(in_ch, with_conv=m.resamp_with_conv))
                skips.append(in_ch)

        in_ch = skips[-1]
        mods += [resblock(in_ch), attn(in_ch), resblock(in_ch)]

        for level in reversed(range(self.num_resolutions)):
            for _ in range(m.num_res_blocks + 1):
                mods.append(resblock(in_ch + skips.pop(), nf * m.ch_mult[level]))
                in_ch = nf * m.ch_mult[level]
            if self.attn_at_level[level]:
                mods.append(attn(in_ch))
            if level != 0:
                mods.append(layers.Upsample(in_ch, with_conv=m.resamp_with_conv))
        assert not skips
        mods += [
            layers.group_norm(in_ch, _GROUPS),
            layers.conv3x3(in_ch, d.num_channels, init_scale=0.0),
        ]
        self.all_modules = nn.ModuleList(mods)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """The network output for images ``x`` ``[B, C, H, W]`` and time labels ``[B]``."""
        mods = iter(self.all_modules)
        temb = None
        if self.conditional:
            temb = next(mods)(layers.timestep_embedding(labels, self.nf, x.dtype))
            temb = next(mods)(self.act(temb))
        h = x if self.centered else 2 * x - 1.0

        hs = [next(mods)(h)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn_at_level[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                hs.append(next(mods)(hs[-1]))

        h = next(mods)(hs[-1], temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_at_level[level]:
                h = next(mods)(h)
            if level != 0:
                h = next(mods)(h)

        norm, conv = next(mods), next(mods)
        h = conv(self.act(norm(h)))
        if next(mods, None) is not None:  # pragma: no cover - a construction/forward mismatch
            raise RuntimeError("DDPM.forward did not use every module")

        if self.scale_by_sigma:
            h = h / self.sigmas[labels.long()].to(h.dtype).reshape(-1, 1, 1, 1)
        return h
