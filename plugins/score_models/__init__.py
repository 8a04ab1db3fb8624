"""Built-in score models: exact-score Gaussian-mixture oracles and diffusers checkpoints."""

from __future__ import annotations

from bench_plugins.score_models import diffusers_unet, gmm

import bench


@bench.hookimpl
def register_score_models(register):
    for model in (*gmm.MODELS, *diffusers_unet.MODELS):
        register(model)
