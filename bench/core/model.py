"""The score model: what a sampler evaluates, and the data it was trained on."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import Tensor

from bench.core.guidance import ConditionalFn
from bench.core.options import NoOptions
from bench.core.sde import SDE, ScoreFn
from bench.core.views import ModelFn, ModelView
from bench.errors import BenchError, Unsupported


class ScoreModel(abc.ABC):
    """A score model s(x, t) ≈ ∇ₓ log p_t(x), selected with ``--model NAME[:ARG]``.

    Subclasses set ``data_shape`` and implement :meth:`load` and :meth:`score_fn`. A model
    trained for one SDE sets ``trained_for`` (and :meth:`check_sde` refuses other SDEs);
    ``exact = True`` marks models whose data distribution p_0 is known in closed form, which
    enables :meth:`sample_data` and :meth:`log_prob`.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    exact: ClassVar[bool] = False
    trained_for: str | None = None
    preferred_threads: ClassVar[int | None] = None
    default_metrics: ClassVar[tuple[str, ...]] = ()
    dataset: str | None = None
    """Spec of the dataset the model was trained on (the default FID/KID reference), if any."""
    sde_defaults: dict[str, dict[str, Any]] = {}
    """SDE option defaults the model needs, by SDE name (e.g. ``{"ve": {"sigma_max": 5.0}}``).

    ``bench run`` applies them below the user's ``-o`` options, so a model trained with
    non-default hyperparameters runs out of the box. Treat as read-only; instances that need
    their own values assign a new dict.
    """
    default_grid: dict[str, Any] = {}
    """Sweep defaults the model asks for where the user gives none, keyed like ``bench run``'s
    options (``steps``, ``samples``, ``batch_size``, ``snrs``, ``predictors``, …): e.g. a small
    grid that finishes in minutes on a CPU, or the ``snr`` a checkpoint ships with. Rows record
    the values taken in ``model_defaults``. Treat as read-only; instances assign a new dict."""
    scheduler_config: dict[str, Any] | None = None
    """The diffusers scheduler config a discrete-time model ships with (a diffusers folder's
    ``scheduler_config.json``: its noise table and its sampling settings), or ``None``. Samplers
    that run diffusers' own schedulers start from it (``ModelView.scheduler_config``), as a
    diffusers user's ``CLASS.from_config`` does. Treat as read-only."""
    data_shape: tuple[int, ...]
    spec: str

    Options: ClassVar[type] = NoOptions
    """Load-time options (``-o model.NAME.KEY=VALUE``), e.g. a checkpoint's architecture config;
    a model with options receives them as ``load(..., options=...)``."""

    @classmethod
    @abc.abstractmethod
    def load(cls, arg: str | None, *, device: torch.device, dtype: torch.dtype) -> ScoreModel:
        """Build the model from the ``ARG`` of ``NAME[:ARG]`` (``None`` when absent); models
        with ``Options`` also take ``options=``."""

    native: str = "score"
    """What the network outputs: ``score``, ``eps`` (noise prediction), ``x0`` (denoiser D),
    ``v`` (Salimans & Ho's v) or ``velocity`` (flow matching's u = dx_t/dt).

    Score models implement :meth:`score_fn`; models with another native output implement
    :meth:`native_fn` instead. Samplers get every view from either (:mod:`bench.core.views`).
    """

    def score_fn(self, sde: SDE) -> ScoreFn:
        """The score function (x, t) → ∇ₓ log p_t(x) for the marginals of ``sde``."""
        if self.native == "score":
            raise NotImplementedError(
                f"{type(self).__name__} implements neither score_fn nor native_fn"
            )
        return self.view(sde).score

    def native_fn(self, sde: SDE) -> ModelFn:
        """The network's own output as a function (x, t), of the kind ``native`` names."""
        return self.score_fn(sde)

    classes: int = 0
    """A class-conditional model's number of classes (labels 0..classes − 1); 0: unconditional.

    Conditional models implement :meth:`conditional_fn`; every sample gets a label from the
    run's ``--labels`` policy (:mod:`bench.core.labels`) and guidance combines the outputs
    (:mod:`bench.core.guidance`)."""
    null_label: bool = False
    """Whether a conditional model also has an unconditional output (a null label, e.g. from
    label dropout): needed for any guidance scale other than 1."""
    null_label_reason: str = ""
    """Why a conditional model has no null label (the ``unsupported`` reason of s ≠ 1)."""

    def conditional_fn(self, sde: SDE) -> ConditionalFn:
        """A conditional model's native output ``fn(x, t, labels)`` (labels int64 (B,),
        :data:`~bench.core.guidance.NULL_LABEL` for the unconditional output)."""
        raise BenchError(f"model {self.spec!r} is not class-conditional")

    def view(self, sde: SDE) -> ModelView:
        """The model under ``sde`` behind a fresh NFE counter (score, ε and D views)."""
        return ModelView(self.native_fn(sde), self.native, sde, self.scheduler_config)

    def check_sde(self, sde: SDE) -> None:
        """Raise :class:`bench.Unsupported` if the model cannot serve ``sde``."""
        if self.trained_for is not None and sde.name != self.trained_for:
            raise Unsupported(
                f"model {self.spec!r} was trained for the {self.trained_for} SDE, not {sde.name}"
            )

    def to_data(self, x: Tensor) -> Tensor:
        """Map sampler output to data space (identity unless the model rescales its data)."""
        return x

    def compile(self, mode: str) -> None:
        """Compile the network with ``torch.compile(mode=mode)`` (``reduce-overhead``: CUDA graphs).

        Models without a network (the exact-score oracles) refuse.
        """
        raise BenchError(f"model {self.spec!r} has no network to compile; drop --compile")

    def sample_data(self, n: int, generator: torch.Generator) -> Tensor:
        """Exact samples from p_0 (exact models only)."""
        raise Unsupported(f"model {self.spec!r} has no exact data distribution")

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log density of p_0 per sample (exact models only)."""
        raise Unsupported(f"model {self.spec!r} has no exact density")

    def describe(self) -> dict[str, Any]:
        """What a results row and run.json record about the model."""
        out: dict[str, Any] = {
            "spec": self.spec,
            "data_shape": list(self.data_shape),
            "trained_for": self.trained_for,
        }
        if self.classes:
            out.update(classes=self.classes, null_label=self.null_label)
        return out
