"""Built-in score models: exact-score oracles, trained digits networks, diffusers checkpoints."""

from __future__ import annotations

from bench_plugins.score_models import diffusers_unet, gmm, trained

import bench


@bench.hookimpl
def register_score_models(register):
    for model in (*gmm.MODELS, *trained.MODELS, *diffusers_unet.MODELS):
        register(model)
