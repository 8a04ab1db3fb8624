"""Pretrained diffusers ``UNet2DModel`` checkpoints as score models, offline.

``--model diffusers:PATH_OR_ID[,std=discrete|continuous]``. DDPM ε-prediction models
(``google/ddpm-cifar10-32``) serve the VP SDE and NCSN++ models (``google/ncsnpp-*``) the VE SDE,
with the reference code's conversions from network output to score (score_sde.md §2.6):

* VP (DDPM, discrete): label t·(N−1) (not rounded) and s = −ε̂ / sqrt(1 − ᾱ_k),
  k = floor(t·(N−1)), ᾱ the training schedule's table; ``std=continuous`` divides by the VP
  SDE's std(t) = sqrt(1 − e^{2L(t)}) instead (the reference's continuous-VP rule).
* VE (NCSN++, continuous): label σ(t); ``UNet2DModel`` with ``time_embedding_type="fourier"``
  divides its output by that label itself, so the output is the score.

diffusers is an optional extra; it is imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from bench_plugins.score_models import diffusers_folder as folder
from bench_plugins.score_models.diffusers_folder import INSTALL_HINT, Checkpoint
from torch import Tensor

from bench.core.model import ScoreModel
from bench.core.sde import SDE, ScoreFn
from bench.errors import BenchError, Unsupported

STD_CHOICES = ("discrete", "continuous")


def import_diffusers():
    """The diffusers module, with the hub offline; a one-line install hint if it is missing."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import diffusers
    except ImportError as exc:
        raise BenchError(
            f"the diffusers score model needs the optional diffusers package: "
            f"{INSTALL_HINT} ({exc})"
        ) from None
    return diffusers


def parse_arg(arg: str | None) -> tuple[str, dict[str, str]]:
    """``PATH_OR_ID[,key=value...]`` → (location, settings); a whole-ARG path wins."""
    if not arg:
        raise BenchError(
            "the diffusers model needs a folder or a cached model id: "
            "--model diffusers:PATH_OR_ID (e.g. diffusers:./ddpm-cifar10-32)"
        )
    if os.path.exists(os.path.expanduser(arg)) or "," not in arg:
        return arg, {}
    location, *items = arg.split(",")
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key.strip() != "std" or value.strip() not in STD_CHOICES:
            raise BenchError(
                f"diffusers model setting {item!r} is not understood: use "
                f"std={'|'.join(STD_CHOICES)} (VP models only)"
            )
        settings[key.strip()] = value.strip()
    return location, settings


def weight_files(unet_dir: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, .bin files) in the UNet folder."""
    return sorted(unet_dir.glob("*.safetensors")), sorted(unet_dir.glob("*.bin"))


def check_bin_is_weights_only(path: Path) -> None:
    """Refuse a pickled .bin that ``torch.load(weights_only=True)`` rejects (code, not tensors)."""
    from bench.checkpoints import load_state_dict

    load_state_dict(path, what="UNet weights")


def load_unet(unet_dir: Path, device: torch.device, dtype: torch.dtype):
    """``UNet2DModel.from_pretrained`` from a local folder: safetensors first, no network.

    diffusers ≥ 0.25 loads .bin files with ``weights_only=True`` itself
    (``models/model_loading_utils.py::load_state_dict``); we check each .bin first anyway.
    Missing or mismatched weights are an error, never a silently random layer; weights the
    config does not use are ignored with a warning.
    """
    diffusers = import_diffusers()
    safe, bins = weight_files(unet_dir)
    if not safe and not bins:
        raise BenchError(f"{unet_dir}: no weights (diffusion_pytorch_model.safetensors or .bin)")
    if not safe:
        for path in bins:
            check_bin_is_weights_only(path)
    try:
        unet, info = diffusers.UNet2DModel.from_pretrained(
            str(unet_dir),
            local_files_only=True,
            use_safetensors=bool(safe),
            torch_dtype=dtype,
            low_cpu_mem_usage=False,
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        message = " ".join(str(exc).split())
        message = message if len(message) <= 300 else message[:300] + " …"
        raise BenchError(f"{unet_dir}: diffusers could not load the UNet ({message})") from None
    bad = {k: v for k, v in info.items() if v and k != "unexpected_keys"}
    if info.get("unexpected_keys"):
        warnings.warn(
            f"{unet_dir}: {len(info['unexpected_keys'])} weights the config does not use "
            f"were ignored ({', '.join(info['unexpected_keys'][:5])} …)",
            stacklevel=2,
        )
    if bad:
        found = "; ".join(f"{k}: {', '.join(map(str, v))[:200]}" for k, v in bad.items())
        raise BenchError(f"{unet_dir}: weights do not match the config ({found})")
    return unet.to(device).eval().requires_grad_(False)


class DiffusersUNet(ScoreModel):
    """diffusers UNet2DModel folder or cached hub id (DDPM → VP, NCSN++ → VE), offline."""

    name = "diffusers"

    def __init__(
        self,
        unet: torch.nn.Module,
        checkpoint: Checkpoint,
        spec: str,
        std: str,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.unet = unet
        self.checkpoint = checkpoint
        self.schedule = checkpoint.schedule
        self.spec = spec
        self.std = std
        self.device = device
        self.dtype = dtype
        self.label_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.trained_for = self.schedule.sde
        self.sde_defaults = {self.trained_for: self.schedule.sde_options()}
        self.data_shape = checkpoint.data_shape
        self.dataset = None
        if self.trained_for == "vp":
            self._alphas_cumprod = self.schedule.alphas_cumprod()
        self._weights_sha256: str | None = None

    @classmethod
    def load(cls, arg: str | None, *, device: torch.device, dtype: torch.dtype) -> ScoreModel:
        location, settings = parse_arg(arg)
        import_diffusers()
        checkpoint = folder.read_checkpoint(location)
        std = settings.get("std", "discrete")
        if "std" in settings and checkpoint.schedule.sde != "vp":
            raise BenchError(
                f"std={std} applies to VP (DDPM) models only; {location!r} is a VE model"
            )
        unet = load_unet(checkpoint.unet_dir, device, dtype)
        return cls(unet, checkpoint, f"diffusers:{arg}", std, device, dtype)

    # -- the SDE the model serves ------------------------------------------------------------
    def check_sde(self, sde: SDE) -> None:
        """Only the SDE the model was trained for, with the same σ or β range (rel. tol. 1e-6)."""
        super().check_sde(sde)
        wanted = self.sde_defaults[self.trained_for]
        got = {key: getattr(sde, key) for key in wanted}
        if any(not math.isclose(got[k], v, rel_tol=1e-6) for k, v in wanted.items()):
            fix = " ".join(f"-o {sde.name}.{k}={v:.10g}" for k, v in wanted.items())
            have = ", ".join(f"{k}={v:.10g}" for k, v in got.items())
            want = ", ".join(f"{k}={v:.10g}" for k, v in wanted.items())
            raise Unsupported(f"model {self.spec!r} was trained with {want}, not {have}: {fix}")

    def score_fn(self, sde: SDE) -> ScoreFn:
        """s(x, t) for ``sde`` (which must pass :meth:`check_sde`), one network call per call."""
        self.check_sde(sde)
        return self._vp_score(sde) if self.trained_for == "vp" else self._ve_score()

    # -- network output → score (score_sde.md §2.6) ------------------------------------------
    @torch.no_grad()
    def network(self, x: Tensor, label: float) -> Tensor:
        """The UNet's output for the batch x at one real-valued label (as a float tensor).

        A Python number would be cast to ``torch.long`` by ``UNet2DModel.forward``, truncating
        the label, so it is always passed as a tensor.
        """
        labels = torch.full((x.shape[0],), label, dtype=self.label_dtype, device=x.device)
        return self.unet(x.to(self.dtype), labels, return_dict=False)[0]

    def vp_coefficients(self, sde: SDE, t: float) -> tuple[float, float]:
        """(a, std) of x_t = a·x_0 + std·ε at time t, from the training table or the SDE.

        Discrete (default): ᾱ_k with k = floor(t·(N_train − 1)), a = sqrt(ᾱ_k),
        std = sqrt(1 − ᾱ_k) — the reference's discrete-VP conversion. Continuous: the VP SDE's
        marginal a(t) = e^{L(t)}, std(t) = sqrt(1 − e^{2L(t)}).
        """
        if self.std == "continuous":
            return sde.marginal_coef(t)
        n = self.schedule.n_train
        k = min(max(int(math.floor(t * (n - 1) + 1e-9)), 0), n - 1)
        alpha_bar = self._alphas_cumprod[k]
        return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)

    def _vp_score(self, sde: SDE) -> ScoreFn:
        n = self.schedule.n_train
        prediction = self.schedule.prediction_type

        def score(x: Tensor, t: float) -> Tensor:
            a, std = self.vp_coefficients(sde, t)
            out = self.network(x, t * (n - 1)).to(x.dtype)
            return prediction_to_score(prediction, out, x, a, std)

        return score

    def _ve_score(self) -> ScoreFn:
        def score(x: Tensor, t: float) -> Tensor:
            return self.network(x, self.schedule.sigma(t)).to(x.dtype)

        return score

    def compile(self, mode: str) -> None:
        """``torch.compile`` the UNet (``reduce-overhead`` captures CUDA graphs)."""
        self.unet = torch.compile(self.unet, mode=None if mode == "default" else mode)

    # -- data space ------------------------------------------------------------------------
    def to_data(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (unclipped): (x + 1)/2 for DDPM's [−1, 1], x for VE's [0, 1]."""
        lo, hi = self.checkpoint.data_range
        return x if (lo, hi) == (0.0, 1.0) else (x - lo) / (hi - lo)

    def weights_sha256(self) -> str:
        """sha256 over the UNet folder's weight files (the ones loaded), computed once."""
        if self._weights_sha256 is None:
            safe, bins = weight_files(self.checkpoint.unet_dir)
            digest = hashlib.sha256()
            for path in safe or bins:
                with path.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
            self._weights_sha256 = digest.hexdigest()
        return self._weights_sha256

    def describe(self) -> dict[str, Any]:
        c, s = self.checkpoint, self.schedule
        out = {
            **super().describe(),
            "folder": str(c.root),
            "repo_id": c.repo_id,
            "unet": str(c.unet_dir),
            "scheduler_config": str(c.scheduler_file),
            "scheduler": s.scheduler,
            "prediction_type": s.prediction_type,
            "sde_options": s.sde_options(),
            "data_range": list(c.data_range),
            "center_input_sample": bool(c.unet_config.get("center_input_sample", False)),
            "time_embedding_type": c.unet_config.get("time_embedding_type", "positional"),
            "weights_sha256": self.weights_sha256(),
            "dtype": str(self.dtype).removeprefix("torch."),
            "parameters": sum(p.numel() for p in self.unet.parameters()),
            "diffusers": import_diffusers().__version__,
        }
        if s.sde == "vp":
            out |= {"n_train": s.n_train, "label": f"t*{s.n_train - 1}", "std": self.std}
        else:
            out |= {"label": "sigma(t)", "snr": s.snr}
        return out


def prediction_to_score(prediction: str, out: Tensor, x: Tensor, a: float, std: float) -> Tensor:
    """Score from a VP network output, with x_t = a·x_0 + std·ε and a² + std² = 1.

    ε-prediction: s = −ε̂/std (score_sde.md §2.6). v-prediction (v = a·ε − std·x_0):
    ε̂ = a·v̂ + std·x_t. x_0-prediction ("sample"): s = −(x_t − a·x̂_0)/std².
    """
    if prediction == "epsilon":
        return out * (-1.0 / std)
    if prediction == "v_prediction":
        return (out * a + x * std) * (-1.0 / std)
    if prediction == "sample":
        return (x - out * a) * (-1.0 / std**2)
    raise BenchError(f"prediction_type {prediction!r} is not understood")


MODELS = (DiffusersUNet,)
