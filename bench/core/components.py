"""Base classes for predictors, correctors, score models and metrics (the plugin boundary)."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from bench.core.options import NoOptions
from bench.core.sde import SDE, ScoreFn
from bench.errors import Unsupported

Noise = Callable[[Tensor], Tensor]
"""Draws standard-normal noise shaped like its argument (from the cell's seeded generator)."""


def _options(cls: type, options: Any) -> Any:
    return options if options is not None else cls.Options()


class Predictor(abc.ABC):
    """A predictor: one step of a numerical solver of the reverse-time SDE, from t to t − 1/N.

    ``update(x, t)`` returns ``(x, x_mean)``: the new state and the same step without fresh noise
    (used for the final denoising), as in the reference code.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        probability_flow: bool = False,
        noise: Noise = torch.randn_like,
        options: Any = None,
    ) -> None:
        self.sde = sde
        self.score_fn = score_fn
        self.probability_flow = probability_flow
        self.rsde = sde.reverse(score_fn, probability_flow)
        self.noise = noise
        self.options = _options(type(self), options)

    @classmethod
    def supports(cls, sde: SDE, probability_flow: bool) -> None:
        """Raise :class:`bench.Unsupported` with a reason if this pairing cannot run."""

    @abc.abstractmethod
    def update(self, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        """One predictor step at time t; returns (x, x_mean)."""


class Corrector(abc.ABC):
    """A corrector: ``n_steps`` score-based MCMC iterations at a fixed time t.

    ``snr`` is the signal-to-noise ratio r of the paper's Algorithms 4 and 5.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        snr: float,
        n_steps: int,
        noise: Noise = torch.randn_like,
        options: Any = None,
    ) -> None:
        self.sde = sde
        self.score_fn = score_fn
        self.snr = snr
        self.n_steps = n_steps
        self.noise = noise
        self.options = _options(type(self), options)

    @classmethod
    def supports(cls, sde: SDE) -> None:
        """Raise :class:`bench.Unsupported` with a reason if this corrector cannot run on ``sde``."""

    @abc.abstractmethod
    def update(self, x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        """``n_steps`` corrector iterations at time t; returns (x, x_mean) of the last one."""


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
    data_shape: tuple[int, ...]
    spec: str

    @classmethod
    @abc.abstractmethod
    def load(cls, arg: str | None, *, device: torch.device, dtype: torch.dtype) -> ScoreModel:
        """Build the model from the ``ARG`` of ``NAME[:ARG]`` (``None`` when absent)."""

    @abc.abstractmethod
    def score_fn(self, sde: SDE) -> ScoreFn:
        """The score function (x, t) → ∇ₓ log p_t(x) for the marginals of ``sde``."""

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
        from bench.errors import BenchError

        raise BenchError(f"model {self.spec!r} has no network to compile; drop --compile")

    def sample_data(self, n: int, generator: torch.Generator) -> Tensor:
        """Exact samples from p_0 (exact models only)."""
        raise Unsupported(f"model {self.spec!r} has no exact data distribution")

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log density of p_0 per sample (exact models only)."""
        raise Unsupported(f"model {self.spec!r} has no exact density")

    def describe(self) -> dict[str, Any]:
        """What a results row and run.json record about the model."""
        return {
            "spec": self.spec,
            "data_shape": list(self.data_shape),
            "trained_for": self.trained_for,
        }


class Metric(abc.ABC):
    """A streaming metric: ``update(batch)`` per batch of data-space samples, then ``compute()``.

    ``compute`` returns named values; the runner adds ``<name>_n`` (the number of samples).
    ``higher_is_better`` gives the direction of the column named like the metric;
    ``column_directions`` may name others (``"lower"``, ``"higher"`` or ``"info"``: not gated).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    higher_is_better: ClassVar[bool] = False
    column_directions: ClassVar[dict[str, str]] = {}

    def __init__(self, model: ScoreModel, n: int, *, device: torch.device, options: Any = None):
        self.model = model
        self.n = n
        self.device = device
        self.options = _options(type(self), options)

    @classmethod
    def supports(cls, model: ScoreModel) -> None:
        """Raise :class:`bench.Unsupported` if this metric cannot evaluate ``model``."""

    @classmethod
    def prepare(cls, model: ScoreModel, options: Any, device: torch.device) -> None:
        """Check prerequisites once, before any cell runs (raise :class:`bench.BenchError`).

        For example a feature extractor whose weights file is missing: the user gets one clear
        error before any work starts, not a failure in every cell.
        """

    @abc.abstractmethod
    def update(self, samples: Tensor) -> None:
        """Accumulate one batch of data-space samples."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric values over everything accumulated."""


def options_of(component: type) -> dict[str, Any]:
    """Default option values of a component class (for listings)."""
    opts = getattr(component, "Options", NoOptions)
    return {f.name: f.default for f in dataclasses.fields(opts)}
