"""Built-in score models: exact-score Gaussian-mixture oracles and trained digits networks."""

from __future__ import annotations

import bench

from bench_plugins.score_models import gmm, trained


@bench.hookimpl
def register_score_models(register):
    for model in (*gmm.MODELS, *trained.MODELS):
        register(model)
