"""Random-weight diffusers model folders for tests and timing (no network, no real checkpoints)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

# The architecture of google/ddpm-cifar10-32 (35.7M parameters; Ho et al. 2020's CIFAR-10 model),
# for timing with random weights. Single-head attention as in the original (attention_head_dim
# None); the shipped config predates that key.
DDPM_CIFAR10_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [128, 256, 256, 256],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 0,
    "act_fn": "silu",
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
}
# DDPM-style: positional time embedding, ε-prediction (the google/ddpm-cifar10-32 layout, shrunk).
TINY_DDPM_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_head_dim": None,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "downsample_padding": 0,
    "norm_eps": 1e-6,
}
# NCSN++-style: Gaussian Fourier embedding of log σ, skip blocks, input centred internally.
TINY_NCSNPP_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [32, 32],
    "center_input_sample": True,
    "time_embedding_type": "fourier",
    "down_block_types": ["SkipDownBlock2D", "AttnSkipDownBlock2D"],
    "up_block_types": ["AttnSkipUpBlock2D", "SkipUpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": None,
    "mid_block_scale_factor": 2**0.5,
    "norm_eps": 1e-6,
    "attention_head_dim": None,
}
DDPM_SCHEDULER: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "clip_sample": True,
    "variance_type": "fixed_large",
}
VE_SCHEDULER: dict[str, Any] = {
    "_class_name": "ScoreSdeVeScheduler",
    "sigma_min": 0.01,
    "sigma_max": 50.0,
    "num_train_timesteps": 1000,
    "snr": 0.16,
    "sampling_eps": 1e-5,
    "correct_steps": 1,
}
# DDIM's config for a v-prediction DDPM (Salimans & Ho 2022): the DDPM table, v = √ᾱ·ε − √(1−ᾱ)·x₀.
V_DDIM_SCHEDULER: dict[str, Any] = {
    "_class_name": "DDIMScheduler",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "set_alpha_to_one": True,
}
# A flow-matching model's scheduler (SD3's): x = (1 − σ)·x₀ + σ·z, timestep σ·1000, velocity z − x₀.
FLOW_SCHEDULER: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 1.0,
}
PIPELINES = {"DDPMScheduler": "DDPMPipeline", "ScoreSdeVeScheduler": "ScoreSdeVePipeline"}


def write_pipeline(
    folder: Path,
    unet_config: dict[str, Any],
    scheduler: dict[str, Any],
    *,
    seed: int = 0,
    safe: bool = True,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """A pipeline folder (model_index.json, unet/, scheduler/) with a random-weight UNet, or
    with the weights ``state``."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**unet_config)
    if state is not None:
        unet.load_state_dict(state)
    unet.save_pretrained(folder / "unet", safe_serialization=safe)
    write_json(folder / "scheduler" / "scheduler_config.json", scheduler)
    write_json(
        folder / "model_index.json",
        {
            "_class_name": PIPELINES.get(scheduler["_class_name"], "DiffusionPipeline"),
            "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", scheduler["_class_name"]],
        },
    )
    return folder


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def smooth_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """n smooth random 3×8×8 images in (−1, 1): tanh of a bilinearly upsampled 2×2 field."""
    field = torch.randn(n, 3, 2, 2, generator=generator)
    up = torch.nn.functional.interpolate(field, size=(8, 8), mode="bilinear", align_corners=True)
    return torch.tanh(2.0 * up)


@functools.cache
def trained_ddpm_state(
    steps: int = 100, seed: int = 0, prediction: str = "epsilon"
) -> dict[str, torch.Tensor]:
    """:data:`TINY_DDPM_UNET` trained for a few Adam steps with DDPM's loss (Ho et al. 2020,
    Alg. 1) on :func:`smooth_images`, on the :data:`DDPM_SCHEDULER` table (computed once per
    process: ~4 s on one CPU thread); ``prediction="v_prediction"`` regresses v = √ᾱ·ε − √(1−ᾱ)·x₀
    instead of ε (Salimans & Ho 2022, §4), ``"flow"`` the flow-matching velocity z − x₀ at
    x = (1 − σ)·x₀ + σ·z with the label σ·1000, σ ~ U(10⁻³, 1) (Lipman et al. 2022, Eq. 23).

    Not a good generator, but its ε̂ is a denoiser's: sampling loops on it contract, where on a
    random-weight UNet they amplify a float32 rounding of 1e-7 to 1e-3 within 25 steps, and
    agreement tests would measure the amplification instead of the method.
    """
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**TINY_DDPM_UNET)
    n_train = DDPM_SCHEDULER["num_train_timesteps"]
    betas = torch.linspace(DDPM_SCHEDULER["beta_start"], DDPM_SCHEDULER["beta_end"], n_train)
    alpha_bar = torch.cumprod(1.0 - betas, dim=0)
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(unet.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is the fastest
    try:
        _train(unet, optimizer, alpha_bar, steps, g, prediction)
    finally:
        torch.set_num_threads(threads)
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def _train(
    unet, optimizer, alpha_bar: torch.Tensor, steps: int, g: torch.Generator, prediction: str
) -> None:
    """``steps`` Adam steps of the ``prediction`` loss on batches of 32 :func:`smooth_images`."""
    n_train = len(alpha_bar)
    for _ in range(steps):
        x0 = smooth_images(32, g)
        if prediction == "flow":
            sigma = torch.rand(32, generator=g) * (1 - 1e-3) + 1e-3
            eps = torch.randn(x0.shape, generator=g)
            s = sigma.view(-1, 1, 1, 1)
            x, label, target = (1 - s) * x0 + s * eps, sigma * n_train, eps - x0
        else:
            k = torch.randint(0, n_train, (32,), generator=g)
            eps = torch.randn(x0.shape, generator=g)
            a = alpha_bar[k].view(-1, 1, 1, 1)
            x, label = a.sqrt() * x0 + (1 - a).sqrt() * eps, k
            v = a.sqrt() * eps - (1 - a).sqrt() * x0
            target = v if prediction == "v_prediction" else eps
        loss = (unet(x, label).sample - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
