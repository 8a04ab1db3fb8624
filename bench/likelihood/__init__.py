"""Likelihood of data under a score model: the probability-flow ODE with the instantaneous change
of variables and the Skilling–Hutchinson trace estimator (Song et al. 2021, App. D.2,
Eq. 39–40), reported in nats and bits per dimension with confidence intervals.

* :mod:`bench.likelihood.ode` — the augmented ODE, the probes and one batch's solve;
* :mod:`bench.likelihood.data` — data points, data/model space, dequantisation, bits/dim and the
  oracles' closed-form densities;
* :mod:`bench.likelihood.evaluate` — batches, repeats, settings and the summary.
"""

from __future__ import annotations

from bench.likelihood.data import DataMap, bits_per_dim, evaluation_points, mixture_logp
from bench.likelihood.evaluate import Likelihood, Settings, evaluate
from bench.likelihood.ode import Trajectory, draw_probes, integrate_batch

__all__ = [
    "DataMap",
    "Likelihood",
    "Settings",
    "Trajectory",
    "bits_per_dim",
    "draw_probes",
    "evaluate",
    "evaluation_points",
    "integrate_batch",
    "mixture_logp",
]
