"""The score_sde configs, shipped as JSON data, and a typed, validated view of them.

Each file under ``configs/`` is the ``to_dict()`` of one CIFAR-10 config of Song et al. 2021
("Score-Based Generative Modeling through Stochastic Differential Equations"; Table 3 and App. H
give the NCSN++/DDPM++ settings), without the ``device`` entry. :func:`load_config` accepts a
shipped name (``"vp/cifar10_ddpmpp_continuous"``) or the path of such a JSON file, e.g. the
``config.json`` written next to a checkpoint. Only the fields that define the network, the SDE
and the label/score conventions are typed; the rest is kept in :attr:`ScoreSdeConfig.raw`.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from bench.checkpoints import read_json
from bench.errors import BenchError

SDES = ("vesde", "vpsde", "subvpsde")
MODELS = ("ncsnpp", "ddpm")
_CHOICES: dict[str, tuple[str, ...]] = {
    "nonlinearity": ("elu", "relu", "lrelu", "swish"),
    "embedding_type": ("fourier", "positional"),
    "resblock_type": ("ddpm", "biggan"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
}
#: ``sampling_eps`` of the reference's training/evaluation loop: the smallest time sampled.
SAMPLING_EPS = {"vesde": 1e-5, "vpsde": 1e-3, "subvpsde": 1e-3}
_TYPE_WORDS = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "tuple[int, ...]": "a list of integers",
}


@dataclass(frozen=True)
class ModelConfig:
    """``config.model``: the architecture and the SDE's noise scales.

    The NCSN++-only fields have the defaults of the CIFAR-10 configs; DDPM ignores them.
    """

    name: str
    nf: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float
    resamp_with_conv: bool
    conditional: bool
    nonlinearity: str
    scale_by_sigma: bool
    ema_rate: float
    sigma_min: float
    sigma_max: float
    num_scales: int
    beta_min: float
    beta_max: float
    normalization: str = "GroupNorm"
    embedding_type: str = "fourier"
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "none"
    progressive_combine: str = "sum"
    attention_type: str = "ddpm"
    init_scale: float = 0.0
    fourier_scale: float = 16.0
    conv_size: int = 3


@dataclass(frozen=True)
class DataConfig:
    """``config.data``: image geometry and scaling (``centered``: data in [-1, 1], else [0, 1])."""

    image_size: int
    num_channels: int
    centered: bool
    dataset: str = "CIFAR10"


@dataclass(frozen=True)
class TrainingConfig:
    """``config.training``: which SDE, and whether the network was trained on continuous time."""

    sde: str
    continuous: bool
    reduce_mean: bool = False
    likelihood_weighting: bool = False


@dataclass(frozen=True)
class SamplingConfig:
    """``config.sampling``: the paper's PC sampler settings for this model."""

    method: str = "pc"
    predictor: str = "none"
    corrector: str = "none"
    snr: float = 0.16
    n_steps_each: int = 1
    noise_removal: bool = True
    probability_flow: bool = False


@dataclass(frozen=True)
class ScoreSdeConfig:
    """A validated score_sde config.

    Attributes:
        name: the shipped name, or the path it was read from.
        model, data, training, sampling: the typed sections.
        raw: the whole parsed JSON object (optimiser, eval, ... included).
    """

    name: str
    model: ModelConfig
    data: DataConfig
    training: TrainingConfig
    sampling: SamplingConfig
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sde(self) -> str:
        """``"vesde"``, ``"vpsde"`` or ``"subvpsde"``."""
        return self.training.sde

    @property
    def continuous_labels(self) -> bool:
        """Whether the network takes continuous-time labels (sub-VP always does, Sec. 2.6)."""
        return self.training.continuous or self.training.sde == "subvpsde"

    @property
    def sampling_eps(self) -> float:
        """The smallest time of the samplers' grid: 1e-5 for VE, 1e-3 for VP and sub-VP."""
        return SAMPLING_EPS[self.training.sde]


def _configs_root() -> Path:
    return Path(str(resources.files("bench_plugins.score_models.score_sde") / "configs"))


def config_names() -> list[str]:
    """The shipped config names, e.g. ``"ve/cifar10_ncsnpp_continuous"``, sorted."""
    root = _configs_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.json"))


def load_config(name_or_path: str | os.PathLike[str]) -> ScoreSdeConfig:
    """A config by shipped name, or from a JSON file (``config.to_dict()`` format).

    Args:
        name_or_path: a name from :func:`config_names` or the path of a ``.json`` file.

    Returns:
        The validated config.

    Raises:
        BenchError: unknown name, unreadable file, or a missing / mistyped / invalid field.
    """
    text = os.fspath(name_or_path)
    names = config_names()
    if text in names:
        path, label = _configs_root() / f"{text}.json", text
    elif isinstance(name_or_path, os.PathLike) or text.endswith(".json") or Path(text).is_file():
        path, label = Path(text), text
    else:
        raise BenchError(
            f"unknown score_sde config {text!r}; valid names: {', '.join(names)} "
            "(or the path of a config.json)"
        )
    return config_from_dict(read_json(path, "score_sde config"), label)


def config_from_dict(data: Any, source: str = "config") -> ScoreSdeConfig:
    """Validate a ``config.to_dict()``-style mapping into a :class:`ScoreSdeConfig`.

    Args:
        data: the parsed mapping with sections ``model``, ``data``, ``training`` (and optionally
            ``sampling``); unknown keys are kept in ``raw`` and otherwise ignored.
        source: a name for error messages.

    Raises:
        BenchError: one line naming the first problem.
    """
    if not isinstance(data, dict):
        raise BenchError(f"{source}: a score_sde config must be a JSON object")
    cfg = ScoreSdeConfig(
        name=source,
        model=_section(ModelConfig, data, "model", source),
        data=_section(DataConfig, data, "data", source),
        training=_section(TrainingConfig, data, "training", source),
        sampling=_section(SamplingConfig, data, "sampling", source, optional=True),
        raw=data,
    )
    _check(cfg, source)
    return cfg


def _section(cls: type, data: dict[str, Any], key: str, source: str, optional: bool = False):
    section = data.get(key, {} if optional else None)
    if not isinstance(section, dict):
        raise BenchError(f"{source}: missing or invalid section {key!r}")
    values = {}
    for f in fields(cls):
        if f.name not in section:
            if f.default is MISSING and f.default_factory is MISSING:
                raise BenchError(f"{source}: missing {key}.{f.name}")
            continue
        values[f.name] = _coerce(section[f.name], f.type, f"{key}.{f.name}", source)
    return cls(**values)


def _coerce(value: Any, kind: str, where: str, source: str) -> Any:
    """Check one JSON value against a dataclass field type (given as a string annotation)."""
    ok: bool
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "tuple[int, ...]":
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        value = tuple(value) if ok else value
    else:  # pragma: no cover - every field type is listed above
        raise TypeError(kind)
    if not ok:
        raise BenchError(f"{source}: {where} must be {_TYPE_WORDS[kind]}, got {value!r}")
    return value


def _check(cfg: ScoreSdeConfig, source: str) -> None:
    """Value checks (choices and the constraints the networks rely on)."""
    m, d, tr = cfg.model, cfg.data, cfg.training

    def fail(message: str) -> None:
        raise BenchError(f"{source}: {message}")

    if tr.sde not in SDES:
        fail(f"unknown training.sde {tr.sde!r}; valid: {', '.join(SDES)}")
    if m.name not in MODELS:
        fail(f"model.name {m.name!r} is not supported; valid: {', '.join(MODELS)}")
    for key, choices in _CHOICES.items():
        value = getattr(m, key).lower()
        if value not in choices:
            fail(f"unknown model.{key} {value!r}; valid: {', '.join(choices)}")
    positive = {"model.nf": m.nf, "model.num_res_blocks": m.num_res_blocks}
    positive |= {"model.num_scales": m.num_scales, "data.image_size": d.image_size}
    positive |= {"data.num_channels": d.num_channels}
    for key, value in positive.items():
        if value < 1:
            fail(f"{key} must be positive, got {value}")
    if not m.ch_mult or min(m.ch_mult) < 1:
        fail(f"model.ch_mult must be a non-empty list of positive integers, got {list(m.ch_mult)}")
    if d.image_size % 2 ** (len(m.ch_mult) - 1):
        fail(f"data.image_size {d.image_size} is not divisible by 2**(len(ch_mult) - 1)")
    if not 0 < m.sigma_min < m.sigma_max or not 0 < m.beta_min < m.beta_max:
        fail("need 0 < sigma_min < sigma_max and 0 < beta_min < beta_max")
    if m.name == "ddpm" and any(m.nf * c % 32 for c in (1, *m.ch_mult)):
        fail("the DDPM network uses GroupNorm(32): nf * ch_mult must be multiples of 32")
    if m.name == "ncsnpp" and m.embedding_type.lower() == "fourier" and not tr.continuous:
        fail("NCSN++ Fourier features need training.continuous = true")
