"""EDM's preconditioners: a UNet ``F`` wrapped into a denoiser ``D(x; σ)``.

Karras et al. (2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
NeurIPS, Table 1) write every denoiser as

    D(x; σ) = c_skip(σ) · x + c_out(σ) · F(c_in(σ) · x; c_noise(σ)),

and recast the VP and VE formulations of Song et al. (2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", ICLR) in this form next to their own (EDM) choice:

* VP: c_skip = 1, c_out = −σ, c_in = 1/√(σ²+1), c_noise = (M−1)·σ⁻¹(σ);
* VE: c_skip = 1, c_out = σ, c_in = 1, c_noise = log(σ/2);
* EDM: c_skip = σd²/(σ²+σd²), c_out = σ·σd/√(σ²+σd²), c_in = 1/√(σ²+σd²), c_noise = log(σ)/4,

with the VP schedule ``σ(t) = √(exp(½β_d t² + β_min t) − 1)`` and its inverse σ⁻¹. The score is
``(D(x; σ) − x)/σ²``.

Dtypes: EDM computes the preconditioning in float32. Here it is float32 for any input except
float64, which is kept (a float64 network fed float64 inputs computes entirely in float64). With
``use_fp16`` on CUDA the UNet runs in float16, as in EDM; on CPU the flag has no effect.
"""

from __future__ import annotations

from typing import Any

import torch
from bench_plugins.score_models.edm.layers import upcast_dtype
from bench_plugins.score_models.edm.networks import UNETS
from torch import Tensor, nn


class _Precond(nn.Module):
    """The shared part of the preconditioners: attributes, the UNet, the forward pass.

    Args:
        img_resolution: Image resolution.
        img_channels: Image channels.
        label_dim: Number of classes (0: unconditional).
        use_fp16: Run the UNet in float16 on CUDA.
        model_type: ``"SongUNet"`` or ``"DhariwalUNet"``.
        model_kwargs: Further keyword arguments of the UNet.
    """

    kind = ""

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int,
        use_fp16: bool,
        model_type: str,
        model_kwargs: dict[str, Any],
    ) -> None:
        super().__init__()
        if model_type not in UNETS:
            raise ValueError(f"model_type must be one of {', '.join(UNETS)}, got {model_type!r}")
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.label_dim = label_dim
        self.use_fp16 = use_fp16
        self.model = UNETS[model_type](
            img_resolution=img_resolution,
            in_channels=img_channels,
            out_channels=img_channels,
            label_dim=label_dim,
            **model_kwargs,
        )

    def coefficients(self, sigma: Tensor) -> tuple[Any, Any, Any, Tensor]:
        """``(c_skip, c_out, c_in, c_noise)`` for noise levels shaped [N, 1, 1, 1]."""
        raise NotImplementedError

    def forward(
        self,
        x: Tensor,
        sigma: Tensor | float,
        class_labels: Tensor | None = None,
        force_fp32: bool = False,
        **model_kwargs: Any,
    ) -> Tensor:
        """The denoiser ``D(x; σ[, class_labels])``.

        Args:
            x: Noisy images [N, C, H, W].
            sigma: Noise levels, a scalar or [N].
            class_labels: One-hot labels [N, label_dim]; zeros if omitted for a conditional net.
            force_fp32: Do not run the UNet in float16 even if ``use_fp16`` is set.
            **model_kwargs: Passed to the UNet (e.g. ``augment_labels``).

        Returns:
            The denoised images, float64 for float64 ``x``, else float32.
        """
        work = upcast_dtype(x.dtype)
        x = x.to(work)
        sigma = torch.as_tensor(sigma, device=x.device).to(work).reshape(-1, 1, 1, 1)
        labels = self._labels(class_labels, x)
        half = (
            self.use_fp16 and not force_fp32 and x.device.type == "cuda" and work != torch.float64
        )
        unet_dtype = torch.float16 if half else work
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        f_x = self.model((c_in * x).to(unet_dtype), c_noise.flatten(), labels, **model_kwargs)
        return c_skip * x + c_out * f_x.to(work)

    def _labels(self, class_labels: Tensor | None, x: Tensor) -> Tensor | None:
        if self.label_dim == 0:
            return None
        if class_labels is None:
            return torch.zeros([1, self.label_dim], dtype=x.dtype, device=x.device)
        return class_labels.to(device=x.device, dtype=x.dtype).reshape(-1, self.label_dim)

    def round_sigma(self, sigma: Tensor | float) -> Tensor:
        """Noise levels are continuous for these preconditioners: the identity."""
        return torch.as_tensor(sigma)


class VPPrecond(_Precond):
    """The VP formulation (Song et al. 2021) in EDM's preconditioned form (Karras et al. 2022).

    The UNet is conditioned on the DDPM-style timestep ``(M−1)·t`` with ``t = σ⁻¹(σ)``.

    Args:
        img_resolution: Image resolution.
        img_channels: Image channels.
        label_dim: Number of classes (0: unconditional).
        use_fp16: Run the UNet in float16 on CUDA.
        beta_d: Extent of the β schedule.
        beta_min: Initial β.
        M: Number of DDPM timesteps the labels are scaled to.
        epsilon_t: Smallest training time; ``sigma_min = σ(epsilon_t)``.
        model_type: UNet class name.
        **model_kwargs: UNet keyword arguments.
    """

    kind = "vp"

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        beta_d: float = 19.9,
        beta_min: float = 0.1,
        M: int = 1000,
        epsilon_t: float = 1e-5,
        model_type: str = "SongUNet",
        **model_kwargs: Any,
    ) -> None:
        super().__init__(
            img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs
        )
        self.beta_d = beta_d
        self.beta_min = beta_min
        self.M = M
        self.epsilon_t = epsilon_t
        # float32, as EDM evaluates these (σ(1e-5) rounds to 2⁻¹⁰ in float32).
        self.sigma_min = float(self.sigma(torch.tensor(epsilon_t, dtype=torch.float32)))
        self.sigma_max = float(self.sigma(torch.tensor(1.0, dtype=torch.float32)))

    def sigma(self, t: Tensor | float) -> Tensor:
        """The VP noise level ``σ(t) = √(exp(½β_d t² + β_min t) − 1)``."""
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * (t**2) + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma: Tensor | float) -> Tensor:
        """``t = (√(β_min² + 2β_d log(1+σ²)) − β_min) / β_d``, in the dtype of ``sigma``.

        The operations are done in the same order as EDM's, so float32 results agree with
        EDM's. In float32 the result loses relative precision at small σ (``log(1+σ²)``
        cancels): about 1 % at σ = 0.002.
        """
        sigma = torch.as_tensor(sigma)
        root = (self.beta_min**2 + 2 * self.beta_d * (1 + sigma**2).log()).sqrt()
        return (root - self.beta_min) / self.beta_d

    def coefficients(self, sigma: Tensor) -> tuple[Any, Any, Any, Tensor]:
        c_in = 1 / (sigma**2 + 1).sqrt()
        return 1, -sigma, c_in, (self.M - 1) * self.sigma_inv(sigma)


class VEPrecond(_Precond):
    """The VE formulation (Song et al. 2021) in EDM's preconditioned form (Karras et al. 2022).

    Args:
        img_resolution: Image resolution.
        img_channels: Image channels.
        label_dim: Number of classes (0: unconditional).
        use_fp16: Run the UNet in float16 on CUDA.
        sigma_min: Smallest supported noise level.
        sigma_max: Largest supported noise level.
        model_type: UNet class name.
        **model_kwargs: UNet keyword arguments.
    """

    kind = "ve"

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        sigma_min: float = 0.02,
        sigma_max: float = 100,
        model_type: str = "SongUNet",
        **model_kwargs: Any,
    ) -> None:
        super().__init__(
            img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs
        )
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max

    def coefficients(self, sigma: Tensor) -> tuple[Any, Any, Any, Tensor]:
        return 1, sigma, 1, (0.5 * sigma).log()


class EDMPrecond(_Precond):
    """The preconditioning proposed by Karras et al. (2022, Sec. 5 and Table 1).

    Unit-variance network inputs and targets for data of standard deviation ``sigma_data``,
    with noise label ``log(σ)/4``.

    Args:
        img_resolution: Image resolution.
        img_channels: Image channels.
        label_dim: Number of classes (0: unconditional).
        use_fp16: Run the UNet in float16 on CUDA.
        sigma_min: Smallest supported noise level.
        sigma_max: Largest supported noise level.
        sigma_data: Standard deviation of the training data.
        model_type: UNet class name.
        **model_kwargs: UNet keyword arguments.
    """

    kind = "edm"

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        label_dim: int = 0,
        use_fp16: bool = False,
        sigma_min: float = 0,
        sigma_max: float = float("inf"),
        sigma_data: float = 0.5,
        model_type: str = "DhariwalUNet",
        **model_kwargs: Any,
    ) -> None:
        super().__init__(
            img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs
        )
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = sigma_data

    def coefficients(self, sigma: Tensor) -> tuple[Any, Any, Any, Tensor]:
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4


PRECONDS: dict[str, type[_Precond]] = {
    "VPPrecond": VPPrecond,
    "VEPrecond": VEPrecond,
    "EDMPrecond": EDMPrecond,
}
"""The preconditioner classes by EDM's class name."""
