"""Trained score networks: folders written by ``bench train`` and the shipped digits models.

A model folder holds ``model.safetensors`` (the EMA weights) and ``metadata.json`` (the SDE and its
hyperparameters, the data scaling, the architecture, the dataset hash, the training run). Loading
reads JSON with :func:`json.loads` and tensors with safetensors: nothing is ever unpickled.

Score conventions (score_sde.md §2.6): a VE network is conditioned on log σ(t) and its output,
divided by σ, is the score; VP and sub-VP networks are conditioned on t ∈ [0, 1] and predict the
noise ε, so s(x, t) = −ε̂(x, t)/std(t) with each SDE's own std(t).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import torch
from bench_plugins.score_models.unet import UNet, UNetConfig
from torch import Tensor

from bench.checkpoints import load_into
from bench.core.model import ScoreModel
from bench.core.sde import SDE, ScoreFn
from bench.errors import BenchError, Unsupported

FORMAT = "sde-bench/score-model/1"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
IMAGE_METRICS = ("fid", "kid")


# -- parameterisation: network output ↔ score ------------------------------------------------------
@dataclass(frozen=True)
class Parameterisation:
    """How the network is conditioned and what its output means (score_sde.md §2.6).

    ``label``: ``log_std`` (log σ(t), VE) or ``t`` (VP, sub-VP). ``output``: ``scaled_score``
    (the network output is σ(t)·s, divided by σ to give the score) or ``noise`` (ε̂, so the score
    is −ε̂/std(t)). ``centered``: whether the data live in [−1, 1] rather than [0, 1].
    """

    label: str
    output: str
    centered: bool

    @property
    def sign(self) -> float:
        return 1.0 if self.output == "scaled_score" else -1.0

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "output": self.output, "centered": self.centered}


PARAMETERISATIONS = {
    "ve": Parameterisation("log_std", "scaled_score", centered=False),
    "vp": Parameterisation("t", "noise", centered=True),
    "subvp": Parameterisation("t", "noise", centered=True),
}


def std_of(sde: SDE, t: Tensor) -> Tensor:
    """Per-sample std(t) of the perturbation kernel, from the SDE's own float64 formula."""
    values = [sde.marginal_coef(float(ti))[1] for ti in t.tolist()]
    return torch.tensor(values, dtype=torch.float64).to(t.device)


def scaled_output(net: UNet, p: Parameterisation, x: Tensor, t: Tensor, std: Tensor) -> Tensor:
    """std(t)·s(x, t) = ±f(x, τ): f for a VE network (τ = log σ), −ε̂ for VP/sub-VP (τ = t)."""
    label = std.log() if p.label == "log_std" else t
    out = net(x, label.to(x.dtype))
    return out if p.sign > 0 else -out


def network_score(net: UNet, p: Parameterisation, x: Tensor, t: Tensor, std: Tensor) -> Tensor:
    """s(x, t) for per-sample t and std(t), both (B,): ±f(x, τ)/std (score_sde.md §2.6)."""
    return scaled_output(net, p, x, t, std) / std.to(x.dtype)[:, None, None, None]


def architecture_from_dict(data: dict[str, Any], source: str = "architecture") -> UNetConfig:
    return UNetConfig.from_dict(data, source)


# -- metadata --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metadata:
    """The validated ``metadata.json`` of a model folder (the raw dict is kept for describe)."""

    sde: str
    sde_options: dict[str, float]
    parameterisation: Parameterisation
    architecture: UNetConfig
    data_shape: tuple[int, ...]
    dataset: str | None
    raw: dict[str, Any]

    @classmethod
    def parse(cls, text: str, source: str) -> Metadata:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BenchError(
                f'{source}: not an sde-bench model metadata file (expected "format": "{FORMAT}")'
            )
        try:
            sde, data = raw["sde"], raw["data"]
            name, options = sde["name"], {k: float(v) for k, v in sde["options"].items()}
            shape = tuple(int(s) for s in data["shape"])
            p = Parameterisation(**raw["parameterisation"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BenchError(
                f"{source}: malformed metadata ({type(exc).__name__}: {exc})"
            ) from None
        if p != PARAMETERISATIONS.get(name):
            raise BenchError(f"{source}: unsupported SDE/parameterisation {name!r} {p}")
        architecture = UNetConfig.from_dict(raw.get("architecture"), source)
        if len(shape) != 3 or shape[0] != architecture.in_channels or shape[1] % 2 or shape[2] % 2:
            raise BenchError(f"{source}: data shape {shape} does not fit the architecture")
        return cls(name, options, p, architecture, shape, data.get("dataset"), raw)


def read_folder(folder: Traversable, source: str) -> tuple[Metadata, dict[str, Tensor]]:
    """Metadata and weights of a model folder; every failure is one :class:`BenchError`."""
    if not folder.is_dir():
        raise BenchError(f"model folder {source!r} does not exist")
    meta_file, weights_file = folder / METADATA_FILE, folder / WEIGHTS_FILE
    if not meta_file.is_file():
        raise BenchError(f"{source}: no {METADATA_FILE} (is this a folder written by bench train?)")
    if not weights_file.is_file():
        raise BenchError(f"{source}: no {WEIGHTS_FILE}")
    meta = Metadata.parse(meta_file.read_text(encoding="utf-8"), f"{source}/{METADATA_FILE}")
    return meta, read_weights(weights_file.read_bytes(), f"{source}/{WEIGHTS_FILE}")


def read_weights(data: bytes, source: str) -> dict[str, Tensor]:
    """Tensors of a safetensors file given as bytes (corrupt or truncated: BenchError)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise BenchError(
            f"{source}: not a readable safetensors file (corrupt or truncated?): {exc}"
        ) from None


def build_network(meta: Metadata, weights: dict[str, Tensor], source: str) -> UNet:
    """The UNet of ``meta`` with ``weights`` loaded strictly (a misfit is a BenchError)."""
    net = UNet(meta.architecture)
    load_into(net, weights, source, what="architecture")
    return net.eval().requires_grad_(False)


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

    def score_fn(self, sde: SDE) -> ScoreFn:
        """s(x, t): VE f(x, log σ)/σ; VP and sub-VP −ε̂(x, t)/std(t) (score_sde.md §2.6)."""
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
        return TrainedScoreModel.from_folder(folder, name, device=device, dtype=dtype)

    cls_name = "Preset_" + name.replace("-", "_")
    return type(
        cls_name,
        (TrainedScoreModel,),
        {"name": name, "__doc__": summary, "load": classmethod(load)},
    )


DigitsVE = _preset("digits-ve", "Conv UNet score model for 8×8 digits, VE SDE (σ 0.01–5), shipped.")
DigitsVP = _preset(
    "digits-vp", "Conv UNet noise predictor for 8×8 digits, VP SDE (β 0.1–20), shipped."
)
DigitsSubVP = _preset(
    "digits-subvp", "Conv UNet noise predictor for 8×8 digits, sub-VP SDE (β 0.1–20), shipped."
)

MODELS = (TrainedScoreModel, DigitsVE, DigitsVP, DigitsSubVP)
