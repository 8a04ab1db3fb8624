"""Trained score networks: folders written by ``bench train`` and the shipped digits models.

The folder format and the score conventions are :mod:`bench.training.model_format`'s.
"""

from __future__ import annotations

import math
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.core.model import ScoreModel
from bench.core.sde import SDE, ScoreFn
from bench.core.views import ModelFn
from bench.errors import BenchError, Unsupported
from bench.training.model_format import Metadata, build_network, network_score, read_folder
from bench.training.unet import UNet

IMAGE_METRICS = ("fid", "kid")


# -- the score model -------------------------------------------------------------------------------
class TrainedScoreModel(ScoreModel):
    """A score network trained by bench train: --model score:PATH (a folder)."""

    name = "score"
    default_metrics = IMAGE_METRICS

    def __init__(
        self, meta: Metadata, net: UNet, spec: str, *, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.meta = meta
        self.spec = spec
        self.net = net.to(device, dtype)
        self.device, self.dtype = device, dtype
        self.data_shape = meta.data_shape
        self.dataset = meta.dataset
        self.trained_for = meta.sde
        self.sde_defaults = {meta.sde: dict(meta.sde_options)}
        self.native = "velocity" if meta.parameterisation.output == "velocity" else "score"

    @classmethod
    def load(cls, arg: str | None, *, device: torch.device, dtype: torch.dtype) -> ScoreModel:
        if not arg:
            raise BenchError(
                "the score model needs a folder written by bench train: --model score:PATH"
            )
        return cls.from_folder(Path(arg), f"score:{arg}", device=device, dtype=dtype)

    @classmethod
    def from_folder(
        cls, folder: Traversable, spec: str, *, device: torch.device, dtype: torch.dtype
    ) -> TrainedScoreModel:
        source = spec.partition(":")[2] or spec
        meta, weights = read_folder(folder, source)
        if meta.architecture.num_classes:  # a class-conditional network (it builds on this)
            from bench_plugins.score_models.trained_cond import ConditionalTrainedModel as cls
        return cls(meta, build_network(meta, weights, source), spec, device=device, dtype=dtype)

    def check_sde(self, sde: SDE) -> None:
        """Refuse another SDE, or the same SDE with other hyperparameters than trained."""
        super().check_sde(sde)
        for key, trained in self.meta.sde_options.items():
            value = getattr(sde, key, None)
            if value is None or not math.isclose(value, trained, rel_tol=1e-9):
                raise Unsupported(
                    f"model {self.spec!r} was trained with "
                    f"{sde.name}.{key}={trained:g}, not {value}; "
                    f"run with -o {sde.name}.{key}={trained:g}"
                )

    def native_fn(self, sde: SDE) -> ModelFn:
        """The network's own output: the velocity u_θ(x, t) of a flow-matching network (t ∈ [0, 1]
        as the label), else the score."""
        if self.native != "velocity":
            return self.score_fn(sde)
        net = self.net

        @torch.no_grad()
        def velocity(x: Tensor, t: float) -> Tensor:
            tt = torch.full((x.shape[0],), t, dtype=self.dtype, device=x.device)
            return net(x.to(self.dtype), tt).to(x.dtype)

        return velocity

    def score_fn(self, sde: SDE) -> ScoreFn:
        """s(x, t): VE f(x, log σ)/σ; VP and sub-VP −ε̂(x, t)/std(t) (Song et al. 2021, §3.3 and App. C; the reference code's get_score_fn); a velocity network's score view."""
        if self.native != "score":
            return self.view(sde).score
        net, p = self.net, self.meta.parameterisation

        @torch.no_grad()
        def score(x: Tensor, t: float) -> Tensor:
            std = sde.marginal_coef(t)[1]
            B = x.shape[0]
            tt = torch.full((B,), t, dtype=torch.float64, device=x.device)
            ss = torch.full((B,), std, dtype=torch.float64, device=x.device)
            return network_score(net, p, x.to(self.dtype), tt, ss).to(x.dtype)

        return score

    def compile(self, mode: str) -> None:
        """``torch.compile`` the network (``reduce-overhead`` captures CUDA graphs)."""
        self.net = torch.compile(self.net, mode=None if mode == "default" else mode)

    def to_data(self, x: Tensor) -> Tensor:
        """Sampler space → [0, 1] images: (x + 1)/2 for centered data, else the identity."""
        return (x + 1) / 2 if self.meta.parameterisation.centered else x

    def describe(self) -> dict[str, Any]:
        raw = self.meta.raw
        return {
            **super().describe(),
            "sde_options": self.meta.sde_options,
            "dataset": self.dataset,
            "dataset_hash": raw["data"].get("content_hash"),
            **{k: raw.get(k) for k in ("steps", "final_loss", "ema_rate", "seed", "command")},
        }


def _preset(name: str, summary: str) -> type[TrainedScoreModel]:
    """A registered preset: a shipped model folder under ``bench_plugins/weights/<name>``."""

    def load(cls, arg: str | None, *, device: torch.device, dtype: torch.dtype) -> ScoreModel:
        if arg:
            raise BenchError(f"model {name!r} takes no argument (got {name}:{arg})")
        folder = resources.files("bench_plugins") / "weights" / name
        model = TrainedScoreModel.from_folder(folder, name, device=device, dtype=dtype)
        model.default_grid = DIGITS_GRID
        return model

    cls_name = "Preset_" + name.replace("-", "_")
    return type(
        cls_name,
        (TrainedScoreModel,),
        {"name": name, "__doc__": summary, "load": classmethod(load)},
    )


DIGITS_GRID = {"steps": (30, 100), "samples": 200, "batch_size": 200}
"""The shipped digits models' default grid: a few minutes on a 2-core CPU (the suite's own
defaults, 1,000 samples at 100 and 1,000 steps, take hours there); ask for more with
``--steps 100,1000 --samples 1000 --batch-size 1000``."""


DigitsVE = _preset("digits-ve", "Conv UNet score model for 8×8 digits, VE SDE (σ 0.01–5), shipped.")
DigitsVP = _preset(
    "digits-vp", "Conv UNet noise predictor for 8×8 digits, VP SDE (β 0.1–20), shipped."
)
DigitsSubVP = _preset(
    "digits-subvp", "Conv UNet noise predictor for 8×8 digits, sub-VP SDE (β 0.1–20), shipped."
)
DigitsFlow = _preset(
    "digits-flow", "Conv UNet velocity predictor for 8×8 digits, flow SDE (flow matching), shipped."
)

MODELS = (TrainedScoreModel, DigitsVE, DigitsVP, DigitsSubVP, DigitsFlow)
