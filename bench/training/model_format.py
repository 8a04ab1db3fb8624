"""The model-folder format written by ``bench train`` (``sde-bench/score-model/1``) and read by
the ``score``/digits score models: ``model.safetensors`` (EMA weights) and ``metadata.json`` (the
SDE and its hyperparameters, the data scaling, the architecture, the dataset, the run).

Loading reads JSON with :func:`json.loads` and tensors with safetensors: nothing is unpickled.

Score conventions (Song et al. 2021, §4 and App. C): a VE network is conditioned on log σ(t)
and its output, divided by σ, is the score; VP and sub-VP networks are conditioned on t ∈ [0, 1]
and predict the noise ε, so s(x, t) = −ε̂(x, t)/std(t) with each SDE's own std(t). A flow network
is conditioned on t ∈ [0, 1] and predicts the velocity z − x₀ (native ``velocity``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.abc import Traversable
from typing import Any

import torch
from torch import Tensor

from bench.checkpoints import load_into
from bench.core.sde import SDE
from bench.errors import BenchError
from bench.training.unet import UNet, UNetConfig

FORMAT = "sde-bench/score-model/1"
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"


# -- parameterisation: network output ↔ score ------------------------------------------------------
@dataclass(frozen=True)
class Parameterisation:
    """How the network is conditioned and what its output means (Song et al. 2021, §3.3 and App. C; the reference code's get_score_fn).

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
    "flow": Parameterisation("t", "velocity", centered=True),
}
"""A ``velocity`` network (flow) predicts u = dx_t/dt = a'(t)·x_0 + std'(t)·z (z − x_0 on flow)."""


def std_of(sde: SDE, t: Tensor) -> Tensor:
    """Per-sample std(t) of the perturbation kernel, from the SDE's own float64 formula."""
    values = [sde.marginal_coef(float(ti))[1] for ti in t.tolist()]
    return torch.tensor(values, dtype=torch.float64).to(t.device)


def scaled_output(net: UNet, p: Parameterisation, x: Tensor, t: Tensor, std: Tensor) -> Tensor:
    """std(t)·s(x, t) = ±f(x, τ): f for a VE network (τ = log σ), −ε̂ for VP/sub-VP (τ = t).

    A velocity network has no such form (its score needs a(t), a'(t), std'(t)): the model's views
    convert it (:mod:`bench.core.views`)."""
    if p.output not in ("scaled_score", "noise"):
        raise BenchError(f"a {p.output} network's score comes from its view, not scaled_output")
    label = std.log() if p.label == "log_std" else t
    out = net(x, label.to(x.dtype))
    return out if p.sign > 0 else -out


def network_score(net: UNet, p: Parameterisation, x: Tensor, t: Tensor, std: Tensor) -> Tensor:
    """s(x, t) for per-sample t and std(t), both (B,): ±f(x, τ)/std (Song et al. 2021, §3.3 and App. C; the reference code's get_score_fn)."""
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
