"""Built-in score models: exact-score oracles, trained digits networks, diffusers checkpoints,
the SDE paper's own checkpoints (``score_sde``) and EDM's network pickles (``edm``)."""

from __future__ import annotations

from bench_plugins.score_models import diffusers_unet, gmm, gmm_cond, trained, trained_cond
from bench_plugins.score_models.edm import model as edm_model
from bench_plugins.score_models.score_sde import model as score_sde_model

import bench


@bench.hookimpl
def register_score_models(register):
    models = (*gmm.MODELS, *gmm_cond.MODELS, *trained.MODELS, *trained_cond.MODELS)
    models = (*models, *diffusers_unet.MODELS)
    for model in (*models, *score_sde_model.MODELS, *edm_model.MODELS):
        register(model)
