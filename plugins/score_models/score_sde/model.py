"""The SDE paper's own checkpoints as a score model: ``--model score_sde:PATH``.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon and Poole, "Score-Based Generative Modeling through
Stochastic Differential Equations" (ICLR 2021) release their NCSN++, DDPM++ and DDPM networks as
training checkpoints (``checkpoint_*.pth``) of their PyTorch code. This model reads one safely
(:func:`~bench_plugins.score_models.score_sde.read_checkpoint`: ``torch.load(weights_only=True)``,
nothing in the file is run), builds the network of its config with sde-bench's own
implementation, loads the EMA weights the paper samples with (App. H), and serves the SDE the
config was trained for with the config's hyperparameters.

The config is not in the checkpoint; it is given with ``-o score_sde.config=NAME`` (one of the
paper's CIFAR-10 configs, shipped as data, e.g. ``ve/cifar10_ncsnpp_continuous``) or
``-o score_sde.config=PATH.json`` (a ``config.to_dict()``).

From network output to the model's native output (Song et al. 2021, App. C–D, and their
``get_score_fn``), with every label and scale computed in float64 on the host from the step's t:

* VE, continuous: label σ(t); NCSN++ divides by σ itself (``scale_by_sigma``), so the output is
  the score (native ``score``).
* VE, discrete: label round((1 − t)(N − 1)), the index of the descending σ ladder; the output is
  the score (native ``score``).
* VP and sub-VP, continuous (sub-VP always): label t·999; the network predicts the noise ε
  (Ho et al. 2020), so the native output is ``eps`` and the score view is −ε̂/std(t) with the
  SDE's own std(t), the reference's formula.
* VP, discrete (DDPM): label t·(N − 1), real and not rounded, as the reference feeds it; the score
  is −ε̂/sqrt(1 − ᾱ_k), k = floor(t·(N − 1)), on DDPM's own table (native ``score``, because that
  std is not the SDE's continuous one).

N is always the training N (``model.num_scales``), never the number of sampling steps.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from bench_plugins.score_models.score_sde.checkpoint import load_network, read_checkpoint
from bench_plugins.score_models.score_sde.configs import ScoreSdeConfig, config_names, load_config
from bench_plugins.score_models.score_sde.score import (
    SdeParams,
    ddpm_sqrt_one_minus_alphas_cumprod,
)
from torch import Tensor, nn

from bench.checkpoints import state_sha256
from bench.core.model import ScoreModel
from bench.core.sde import SDE
from bench.core.views import ModelFn
from bench.errors import BenchError, Unsupported

IMAGE_METRICS = ("fid", "kid")
SUITE_SDE = {"vesde": "ve", "vpsde": "vp", "subvpsde": "subvp"}
"""The suite's SDE for each score_sde ``training.sde``."""


class ScoreSdeModel(ScoreModel):
    """SDE-paper checkpoint_*.pth (NCSN++/DDPM++/DDPM): --model score_sde:PATH -o score_sde.config=NAME."""

    name = "score_sde"
    default_metrics = IMAGE_METRICS

    @dataclasses.dataclass
    class Options:
        """``config``: a shipped config name or a config JSON (required); ``ema``: sample with
        the EMA weights (the paper's choice) or, when false, the raw training weights."""

        config: str | None = None
        ema: bool = True

    def __init__(
        self,
        net: nn.Module,
        config: ScoreSdeConfig,
        path: Path,
        spec: str,
        *,
        device: torch.device,
        dtype: torch.dtype,
        ema: bool,
        checkpoint_info: dict[str, Any],
    ) -> None:
        self.config = config
        self.params = SdeParams.from_config(config)
        self.path = path
        self.spec = spec
        self.device, self.dtype = device, dtype
        self.ema = ema
        self.checkpoint_info = checkpoint_info
        self.weights_sha256 = state_sha256(net.state_dict())
        self.net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.label_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        d, p = config.data, self.params
        self.data_shape = (d.num_channels, d.image_size, d.image_size)
        self.dataset = None
        self.trained_for = SUITE_SDE[p.sde]
        self.sde_defaults = {self.trained_for: self._sde_options()}
        # An instance attribute: what the network outputs depends on the config (module doc).
        self.native = "eps" if p.sde != "vesde" and p.continuous else "score"
        if p.sde == "vpsde" and not p.continuous:
            table = ddpm_sqrt_one_minus_alphas_cumprod(p, torch.float64)
            self._ddpm_std: list[float] = table.tolist()
        s = config.sampling
        self.default_grid = {"snrs": (s.snr,)} if s.corrector in ("langevin", "ald") else {}

    @classmethod
    def load(
        cls,
        arg: str | None,
        *,
        device: torch.device,
        dtype: torch.dtype,
        options: ScoreSdeModel.Options | None = None,
    ) -> ScoreModel:
        options = options if options is not None else cls.Options()
        if not arg:
            raise BenchError(
                "the score_sde model needs a checkpoint: --model score_sde:PATH/checkpoint_N.pth "
                "-o score_sde.config=NAME"
            )
        path = Path(arg).expanduser()
        if options.config is None:
            beside = path.parent / "config.json"
            hint = f" (for the config.json beside it: -o score_sde.config={beside})"
            raise BenchError(
                f"the score_sde model needs the config {arg!r} was trained with: "
                f"-o score_sde.config=NAME with NAME one of {', '.join(config_names())}, or the "
                f"path of a config JSON{hint if beside.is_file() else ''}"
            )
        config = load_config(options.config)
        checkpoint = read_checkpoint(path)
        net = load_network(path, config, use_ema=options.ema, checkpoint=checkpoint)
        ema = checkpoint["ema"]
        info = {
            "step": _plain(checkpoint.get("step")),
            "ema_decay": _plain(ema.get("decay")),
            "ema_num_updates": _plain(ema.get("num_updates")),
        }
        return cls(
            net,
            config,
            path,
            f"score_sde:{arg}",
            device=device,
            dtype=dtype,
            ema=options.ema,
            checkpoint_info=info,
        )

    # -- the SDE the model serves ------------------------------------------------------------
    def _sde_options(self) -> dict[str, float]:
        p = self.params
        if p.sde == "vesde":
            return {"sigma_min": p.sigma_min, "sigma_max": p.sigma_max}
        return {"beta_min": p.beta_min, "beta_max": p.beta_max}

    def check_sde(self, sde: SDE) -> None:
        """Only the config's SDE, with the config's σ or β range (rel. tol. 1e-9)."""
        super().check_sde(sde)
        wanted = self.sde_defaults[self.trained_for]
        got = {key: getattr(sde, key, None) for key in wanted}
        if any(
            got[k] is None or not math.isclose(got[k], v, rel_tol=1e-9) for k, v in wanted.items()
        ):
            fix = " ".join(f"-o {sde.name}.{k}={v:.10g}" for k, v in wanted.items())
            have = ", ".join(f"{k}={v}" for k, v in got.items())
            raise Unsupported(
                f"model {self.spec!r} was trained with "
                f"{', '.join(f'{k}={v:.10g}' for k, v in wanted.items())}, not {have}: {fix}"
            )

    # -- network output --------------------------------------------------------------------
    def conditioning(self, t: float) -> tuple[float | int, float | None]:
        """(label, std) at time t: the network's label, and the std that turns a discrete
        DDPM network's ε̂ into the score (``None`` where the output needs no division).

        Computed in float64 on the host (see the module docstring for each convention).
        """
        p = self.params
        if p.sde == "vesde":
            if p.continuous:
                return p.sigma_min * (p.sigma_max / p.sigma_min) ** t, None
            return int(round((1.0 - t) * (p.num_scales - 1))), None
        if p.continuous:
            return t * 999.0, None
        n = p.num_scales
        k = min(max(int(math.floor(t * (n - 1) + 1e-9)), 0), n - 1)
        return t * (n - 1), self._ddpm_std[k]

    def native_fn(self, sde: SDE) -> ModelFn:
        """The network's native output at (x, t): the score (VE, discrete VP) or ε̂ (VP, sub-VP)."""
        self.check_sde(sde)
        discrete_ve = self.params.sde == "vesde" and not self.params.continuous

        @torch.no_grad()
        def fn(x: Tensor, t: float) -> Tensor:
            label, std = self.conditioning(t)
            dtype = torch.long if discrete_ve else self.label_dtype
            labels = torch.full((x.shape[0],), label, dtype=dtype, device=x.device)
            out = self.net(x.to(self.dtype), labels)
            if std is not None:
                out = out * (-1.0 / std)
            return out.to(x.dtype)

        return fn

    def compile(self, mode: str) -> None:
        """``torch.compile`` the network (``reduce-overhead`` captures CUDA graphs)."""
        self.net = torch.compile(self.net, mode=None if mode == "default" else mode)

    # -- data space ------------------------------------------------------------------------
    def to_data(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (unclipped): (x + 1)/2 for centred configs (VP, sub-VP), else x."""
        return (x + 1) / 2 if self.config.data.centered else x

    def label_convention(self) -> str:
        p = self.params
        if p.sde == "vesde":
            return "sigma(t)" if p.continuous else f"round((1-t)*{p.num_scales - 1})"
        return "t*999" if p.continuous else f"t*{p.num_scales - 1}"

    def describe(self) -> dict[str, Any]:
        c, p = self.config, self.params
        return {
            **super().describe(),
            "checkpoint": str(self.path),
            "config": c.name,
            "architecture": c.model.name,
            "embedding_type": c.model.embedding_type,
            "sde": p.sde,
            "continuous": p.continuous,
            "sde_options": self.sde_defaults[self.trained_for],
            "num_scales": p.num_scales,
            "label": self.label_convention(),
            "native": self.native,
            "centered": c.data.centered,
            "ema": self.ema,
            **self.checkpoint_info,
            "weights_sha256": self.weights_sha256,
            "parameters": sum(q.numel() for q in self.net.parameters()),
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def _plain(value: Any) -> Any:
    """A JSON-friendly scalar (checkpoints store one-element tensors and numpy numbers)."""
    return value.item() if hasattr(value, "item") else value


MODELS = (ScoreSdeModel,)
