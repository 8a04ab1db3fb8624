"""The built-in samplers, one module each (every module lists its classes in ``SAMPLERS``).

``pc`` — the paper's predictor–corrector family — lives in the core (:mod:`bench.core.pc`), since
the grid expands it from ``--predictors`` × ``--correctors``; it is registered here like the rest.
"""

import importlib
import pkgutil

import bench
from bench.core.pc import PCSampler


def sampler_modules() -> list[str]:
    """The modules of this package, in name order."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


@bench.hookimpl
def register_samplers(register):
    register(PCSampler)
    for name in sampler_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        for cls in module.SAMPLERS:
            register(cls)
