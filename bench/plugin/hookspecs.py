"""The five registration hooks of sde-bench.

Every hook hands the plugin a ``register`` callback. Each is collected once per process, after
every plugin has loaded. A plugin calls ``register(cls, name=None, aliases=())`` once per
component; the class carries ``name`` (a lower-case id) and its docstring's first line is the
summary ``bench list`` shows.
"""

from __future__ import annotations

from typing import Callable

import pluggy

from bench import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)

Register = Callable[..., None]


@hookspec
def register_sdes(register: Register) -> None:
    """Register forward SDEs (subclasses of :class:`bench.SDE`).

    Args:
        register: call ``register(MySDE)`` for each SDE class.

    Called once per process after all plugins are loaded. Example::

        @bench.hookimpl
        def register_sdes(register):
            register(MySDE)
    """


@hookspec
def register_predictors(register: Register) -> None:
    """Register predictors (subclasses of :class:`bench.Predictor`).

    Args:
        register: call ``register(MyPredictor, aliases=("mine",))`` for each predictor class.

    Called once per process after all plugins are loaded. Example::

        @bench.hookimpl
        def register_predictors(register):
            register(MyPredictor)
    """


@hookspec
def register_correctors(register: Register) -> None:
    """Register correctors (subclasses of :class:`bench.Corrector`).

    Args:
        register: call ``register(MyCorrector)`` for each corrector class.

    Called once per process after all plugins are loaded. Example::

        @bench.hookimpl
        def register_correctors(register):
            register(MyCorrector)
    """


@hookspec
def register_score_models(register: Register) -> None:
    """Register score models (subclasses of :class:`bench.ScoreModel`).

    Args:
        register: call ``register(MyModel)``; users select it with ``--model NAME[:ARG]``.

    Called once per process after all plugins are loaded. Example::

        @bench.hookimpl
        def register_score_models(register):
            register(MyModel)
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register streaming metrics (subclasses of :class:`bench.Metric`).

    Args:
        register: call ``register(MyMetric)``; users select it with ``--metrics NAME``.

    Called once per process after all plugins are loaded. Example::

        @bench.hookimpl
        def register_metrics(register):
            register(MyMetric)
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register image datasets (subclasses of :class:`bench.Dataset`).

    Args:
        register: call ``register(MyDataset)``; users select it as ``NAME[:ARG]`` (e.g. for
            training, or as the reference set of FID/KID).

    Called once per process after all plugins are loaded. Example::

        @bench.hookimpl
        def register_datasets(register):
            register(MyDataset)
    """
