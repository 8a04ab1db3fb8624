"""The built-in samplers, one file each; ``pc`` (the paper's predictor–corrector family) lives in
the core, since the grid expands it from ``--predictors`` × ``--correctors``."""

import bench
from bench.core.pc import PCSampler


@bench.hookimpl
def register_samplers(register):
    register(PCSampler)
