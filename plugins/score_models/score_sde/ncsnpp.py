"""NCSN++ and DDPM++: the U-Nets of Song et al. 2021 (one class, configured by the config).

Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations",
Sec. 4.4 and App. H.1: starting from the DDPM U-Net, NCSN++ adds FIR up/down-sampling, BigGAN
residual blocks that resample, residual rescaling by 1/sqrt(2), a progressive-growing input
pyramid and Gaussian Fourier features of ``log sigma`` (continuous VE). DDPM++ is the same class
with positional (sinusoidal) embeddings of ``t * 999``, no FIR and no pyramid.

The modules live in one ``all_modules`` list, in the order in which ``forward`` uses them, so that
the checkpoints of the reference implementation load with ``strict=True``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from bench_plugins.score_models.score_sde import layers
from bench_plugins.score_models.score_sde.configs import ScoreSdeConfig
from torch import nn

Tensor = torch.Tensor
_SQRT2 = math.sqrt(2.0)


def ve_sigma_ladder(sigma_min: float, sigma_max: float, num_scales: int) -> Tensor:
    """SMLD's geometric noise levels, largest first (Song et al. 2021, Sec. 3.4), in float64."""
    return torch.exp(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64)
    )


class NCSNpp(nn.Module):
    """The NCSN++ / DDPM++ score network.

    ``forward(x, labels)``: ``x`` is ``[B, C, H, W]`` in the data's scaling (``[0, 1]`` when
    ``data.centered`` is false; the network maps it to ``[-1, 1]`` itself). ``labels`` is ``[B]``:
    the noise level sigma for Fourier embeddings (continuous VE), otherwise a time label fed to the
    sinusoidal embedding (``t * 999`` for continuous VP/sub-VP, an index for discrete models).
    With ``model.scale_by_sigma`` the output is divided by sigma (the label itself for Fourier
    embeddings, ``sigmas[labels.long()]`` otherwise), which makes it a score for the VE SDE.

    Args:
        config: a validated config with ``model.name == "ncsnpp"``.
    """

    def __init__(self, config: ScoreSdeConfig) -> None:
        super().__init__()
        m, d = config.model, config.data
        self.register_buffer("sigmas", ve_sigma_ladder(m.sigma_min, m.sigma_max, m.num_scales))
        self.act = act = layers.activation(m.nonlinearity)
        self.nf = nf = m.nf
        self.num_resolutions = len(m.ch_mult)
        self.num_res_blocks = m.num_res_blocks
        self.centered = d.centered
        self.conditional = m.conditional
        self.scale_by_sigma = m.scale_by_sigma
        self.skip_rescale = m.skip_rescale
        self.resblock_type = m.resblock_type.lower()
        self.progressive = m.progressive.lower()
        self.progressive_input = m.progressive_input.lower()
        self.embedding_type = m.embedding_type.lower()
        resolutions = [d.image_size // 2**i for i in range(self.num_resolutions)]
        self.attn_at_level = [r in m.attn_resolutions for r in resolutions]
        fir, kernel = m.fir, tuple(m.fir_kernel)
        combine = m.progressive_combine.lower()

        def resblock(in_ch: int, out_ch: int | None = None, up: bool = False, down: bool = False):
            common = dict(act=act, in_ch=in_ch, out_ch=out_ch, temb_dim=4 * nf, dropout=m.dropout)
            common |= dict(skip_rescale=m.skip_rescale, init_scale=m.init_scale)
            if self.resblock_type == "ddpm":
                return layers.ResnetBlockDDPM(**common)
            return layers.ResnetBlockBigGAN(**common, up=up, down=down, fir=fir, fir_kernel=kernel)

        def attn(channels: int) -> nn.Module:
            return layers.AttnBlock(channels, skip_rescale=m.skip_rescale, init_scale=m.init_scale)

        def head(in_ch: int, out_ch: int, init_scale: float) -> list[nn.Module]:
            return [layers.group_norm(in_ch), layers.conv3x3(in_ch, out_ch, init_scale=init_scale)]

        if self.progressive == "output_skip":
            self.pyramid_upsample = layers.Upsample(d.num_channels, fir=fir, fir_kernel=kernel)
        if self.progressive_input == "input_skip":
            self.pyramid_downsample = layers.Downsample(d.num_channels, fir=fir, fir_kernel=kernel)

        mods: list[nn.Module] = []
        if self.embedding_type == "fourier":
            mods.append(layers.GaussianFourierProjection(nf, scale=m.fourier_scale))
        embed_dim = 2 * nf if self.embedding_type == "fourier" else nf
        if self.conditional:
            mods += [layers.dense(embed_dim, 4 * nf), layers.dense(4 * nf, 4 * nf)]

        channels = d.num_channels
        pyramid_in = channels
        mods.append(layers.conv3x3(channels, nf))
        skips, in_ch = [nf], nf
        for level, mult in enumerate(m.ch_mult):
            for _ in range(m.num_res_blocks):
                mods.append(resblock(in_ch, nf * mult))
                in_ch = nf * mult
                if self.attn_at_level[level]:
                    mods.append(attn(in_ch))
                skips.append(in_ch)
            if level != self.num_resolutions - 1:
                if self.resblock_type == "ddpm":
                    mods.append(
                        layers.Downsample(
                            in_ch, with_conv=m.resamp_with_conv, fir=fir, fir_kernel=kernel
                        )
                    )
                else:
                    mods.append(resblock(in_ch, down=True))
                if self.progressive_input == "input_skip":
                    mods.append(layers.Combine(pyramid_in, in_ch, method=combine))
                    in_ch = 2 * in_ch if combine == "cat" else in_ch
                elif self.progressive_input == "residual":
                    mods.append(
                        layers.Downsample(
                            pyramid_in, in_ch, with_conv=True, fir=fir, fir_kernel=kernel
                        )
                    )
                    pyramid_in = in_ch
                skips.append(in_ch)

        in_ch = skips[-1]
        mods += [resblock(in_ch), attn(in_ch), resblock(in_ch)]

        pyramid_ch = 0
        for level in reversed(range(self.num_resolutions)):
            for _ in range(m.num_res_blocks + 1):
                mods.append(resblock(in_ch + skips.pop(), nf * m.ch_mult[level]))
                in_ch = nf * m.ch_mult[level]
            if self.attn_at_level[level]:
                mods.append(attn(in_ch))
            if self.progressive != "none":
                if level == self.num_resolutions - 1:
                    if self.progressive == "output_skip":
                        mods += head(in_ch, channels, m.init_scale)
                        pyramid_ch = channels
                    else:
                        mods += head(in_ch, in_ch, 1.0)
                        pyramid_ch = in_ch
                elif self.progressive == "output_skip":
                    mods += head(in_ch, channels, m.init_scale)
                    pyramid_ch = channels
                else:
                    mods.append(
                        layers.Upsample(
                            pyramid_ch, in_ch, with_conv=True, fir=fir, fir_kernel=kernel
                        )
                    )
                    pyramid_ch = in_ch
            if level != 0:
                if self.resblock_type == "ddpm":
                    mods.append(
                        layers.Upsample(
                            in_ch, with_conv=m.resamp_with_conv, fir=fir, fir_kernel=kernel
                        )
                    )
                else:
                    mods.append(resblock(in_ch, up=True))
        assert not skips
        if self.progressive != "output_skip":
            mods += head(in_ch, channels, m.init_scale)
        self.all_modules = nn.ModuleList(mods)

    def _merge(self, a: Tensor, b: Tensor) -> Tensor:
        return (a + b) / _SQRT2 if self.skip_rescale else a + b

    def _embed(self, labels: Tensor, mods: Iterator[nn.Module], dtype: torch.dtype) -> Tensor:
        """The time embedding (before the two dense layers)."""
        if self.embedding_type == "fourier":
            return next(mods)(torch.log(labels.to(dtype)))
        return layers.timestep_embedding(labels, self.nf, dtype)

    def _used_sigmas(self, labels: Tensor, dtype: torch.dtype) -> Tensor:
        """The sigma that ``scale_by_sigma`` divides by, per batch item."""
        if self.embedding_type == "fourier":
            return labels.to(dtype)
        return self.sigmas[labels.long()].to(dtype)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """The network output for images ``x`` ``[B, C, H, W]`` and labels ``[B]``."""
        mods = iter(self.all_modules)
        temb = self._embed(labels, mods, x.dtype)
        if self.conditional:
            temb = next(mods)(temb)
            temb = next(mods)(self.act(temb))
        else:
            temb = None
        if not self.centered:
            x = 2 * x - 1.0

        pyramid_in = x if self.progressive_input != "none" else None
        hs = [next(mods)(x)]
        for level in range(self.num_resolutions):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn_at_level[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                down = next(mods)
                h = down(hs[-1]) if self.resblock_type == "ddpm" else down(hs[-1], temb)
                if self.progressive_input == "input_skip":
                    pyramid_in = self.pyramid_downsample(pyramid_in)
                    h = next(mods)(pyramid_in, h)
                elif self.progressive_input == "residual":
                    pyramid_in = self._merge(next(mods)(pyramid_in), h)
                    h = pyramid_in
                hs.append(h)

        h = next(mods)(hs[-1], temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        pyramid = None
        for level in reversed(range(self.num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_at_level[level]:
                h = next(mods)(h)
            if self.progressive != "none":
                h, pyramid = self._progressive_out(h, pyramid, mods, level)
            if level != 0:
                up = next(mods)
                h = up(h) if self.resblock_type == "ddpm" else up(h, temb)

        if self.progressive == "output_skip":
            h = pyramid
        else:
            norm, conv = next(mods), next(mods)
            h = conv(self.act(norm(h)))
        if next(mods, None) is not None:  # pragma: no cover - a construction/forward mismatch
            raise RuntimeError("NCSNpp.forward did not use every module")

        if self.scale_by_sigma:
            h = h / self._used_sigmas(labels, h.dtype).reshape(-1, 1, 1, 1)
        return h

    def _progressive_out(
        self, h: Tensor, pyramid: Tensor | None, mods: Iterator[nn.Module], level: int
    ) -> tuple[Tensor, Tensor]:
        """One step of the output pyramid ("output_skip" or "residual"); returns ``(h, pyramid)``."""
        if level == self.num_resolutions - 1:
            norm, conv = next(mods), next(mods)
            return h, conv(self.act(norm(h)))
        if self.progressive == "output_skip":
            norm, conv = next(mods), next(mods)
            return h, self.pyramid_upsample(pyramid) + conv(self.act(norm(h)))
        pyramid = self._merge(next(mods)(pyramid), h)
        return pyramid, pyramid
