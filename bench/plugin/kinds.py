"""The component kinds of sde-bench, defined once.

Every kind has a registration hook (``register_<key>``), a base class its components derive from,
the row column that names the component of a cell, the word ``-o KIND.NAME.KEY=VALUE`` uses, and
the choice ``bench list KIND`` accepts. The hookspecs, the registry, the loader, ``bench list``,
the option parser and the provenance columns all read this table: adding a kind touches only it
(and the base class it names).

This module imports nothing heavy: base classes are named as ``module:attribute`` and imported
on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One component kind.

    Attributes:
        key: the registry key and ``bench list`` choice (``"samplers"``).
        singular: how messages name one component (``"sampler"``).
        base: the base class as ``module:attribute`` (imported lazily).
        option: the ``KIND`` of ``-o KIND.NAME.KEY=VALUE`` (``"sampler"``).
        column: the results column naming the component of a cell, or ``None`` when a row does
            not name one (metrics are listed in ``metrics``; datasets are not part of a cell).
        accepts: what ``register`` accepts, for the hook's docstring.
    """

    key: str
    singular: str
    base: str
    option: str
    column: str | None
    accepts: str

    @property
    def hook(self) -> str:
        """The registration hook's name, ``register_<key>``."""
        return "register_" + self.key.replace("-", "_")

    def base_class(self) -> type:
        """The base class every component of this kind derives from."""
        module, _, attribute = self.base.partition(":")
        return getattr(importlib.import_module(module), attribute)


KINDS: tuple[Kind, ...] = (
    Kind("sdes", "SDE", "bench.core.sde:SDE", "sde", "sde", "forward SDEs"),
    Kind(
        "schedules",
        "schedule",
        "bench.core.schedule:Schedule",
        "schedule",
        "schedule",
        "time schedules: the grid t_0 = T > … > t_N a sampler walks",
    ),
    Kind(
        "samplers",
        "sampler",
        "bench.core.sampler:Sampler",
        "sampler",
        "sampler",
        "whole samplers that own their loop (multistep, higher-order, adaptive)",
    ),
    Kind(
        "predictors",
        "predictor",
        "bench.core.pc:Predictor",
        "predictor",
        "predictor",
        "predictors of the predictor–corrector sampler",
    ),
    Kind(
        "correctors",
        "corrector",
        "bench.core.pc:Corrector",
        "corrector",
        "corrector",
        "correctors of the predictor–corrector sampler",
    ),
    Kind(
        "score-models",
        "score model",
        "bench.core.model:ScoreModel",
        "model",
        "model",
        "score models, selected with --model NAME[:ARG]",
    ),
    Kind(
        "metrics",
        "metric",
        "bench.core.metric:Metric",
        "metric",
        None,
        "streaming metrics, selected with --metrics NAME",
    ),
    Kind(
        "datasets",
        "dataset",
        "bench.core.dataset:Dataset",
        "dataset",
        None,
        "image datasets, as NAME[:ARG] (training data, FID/KID references)",
    ),
)
"""Every kind, in the order ``bench list`` and the docs show them."""

BY_KEY: dict[str, Kind] = {kind.key: kind for kind in KINDS}
BY_OPTION: dict[str, Kind] = {kind.option: kind for kind in KINDS}
BY_HOOK: dict[str, Kind] = {kind.hook: kind for kind in KINDS}
KEYS: tuple[str, ...] = tuple(BY_KEY)
