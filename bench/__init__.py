"""sde-bench: a benchmark suite for the samplers of score-based generative models.

The public API is re-exported here. Only :data:`hookimpl` and :class:`Unsupported` are imported
eagerly; the numerical base classes (which import torch) load on first access, so
``bench --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from bench.errors import BenchError, Unsupported

__version__ = "0.1.0"

PROJECT = "sde_bench"
hookimpl = pluggy.HookimplMarker(PROJECT)

_LAZY = {
    "SDE": "bench.core.sde",
    "ReverseSDE": "bench.core.sde",
    "Schedule": "bench.core.schedule",
    "TimeGrid": "bench.core.schedule",
    "Sampler": "bench.core.sampler",
    "ModelView": "bench.core.views",
    "Predictor": "bench.core.pc",
    "Corrector": "bench.core.pc",
    "PCSampler": "bench.core.pc",
    "ScoreModel": "bench.core.model",
    "Metric": "bench.core.metric",
    "Dataset": "bench.core.dataset",
    "pc_sample": "bench.core.pc",
}

__all__ = ["BenchError", "Unsupported", "__version__", "hookimpl", *_LAZY]

if TYPE_CHECKING:
    from bench.core.dataset import Dataset
    from bench.core.metric import Metric
    from bench.core.model import ScoreModel
    from bench.core.pc import Corrector, PCSampler, Predictor, pc_sample
    from bench.core.sampler import Sampler
    from bench.core.schedule import Schedule, TimeGrid
    from bench.core.sde import SDE, ReverseSDE
    from bench.core.views import ModelView


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
