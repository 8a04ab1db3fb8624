"""The score networks of the SDE paper, compatible with its released PyTorch checkpoints.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon and Poole, "Score-Based Generative Modeling through
Stochastic Differential Equations", ICLR 2021: NCSN++ and DDPM++ (Sec. 4.4, App. H.1), trained
for the VE, VP and sub-VP SDEs. Ho, Jain and Abbeel, "Denoising Diffusion Probabilistic Models",
NeurIPS 2020: the DDPM U-Net, which the SDE paper reuses for VP and VE models.

This package is an independent implementation (its FIR resampling included, in pure PyTorch)
whose module names match the reference checkpoints' state dicts:

* :func:`load_config` / :func:`config_names`: the paper's CIFAR-10 configs, shipped as JSON, or
  any ``config.json`` written as ``config.to_dict()``; validated into :class:`ScoreSdeConfig`.
* :class:`NCSNpp` (NCSN++ and DDPM++) and :class:`DDPM`; :func:`build_network` picks one.
* :func:`read_checkpoint` reads a checkpoint with ``torch.load(weights_only=True)`` (never
  running pickled code); :func:`load_network` builds the network and loads the EMA weights.
* :func:`score_function` / :func:`score_sde_output`: ``(x, t) -> score`` with the labels and
  output scaling each SDE was trained with, plus the raw output, labels and noise view.
"""

from __future__ import annotations

from bench_plugins.score_models.score_sde.checkpoint import (
    build_network,
    load_network,
    read_checkpoint,
)
from bench_plugins.score_models.score_sde.configs import (
    ScoreSdeConfig,
    config_from_dict,
    config_names,
    load_config,
)
from bench_plugins.score_models.score_sde.ddpm import DDPM
from bench_plugins.score_models.score_sde.ncsnpp import NCSNpp
from bench_plugins.score_models.score_sde.score import (
    ScoreOutput,
    SdeParams,
    continuous_std,
    network_labels,
    score_function,
    score_sde_output,
)

__all__ = [
    "DDPM",
    "NCSNpp",
    "ScoreOutput",
    "ScoreSdeConfig",
    "SdeParams",
    "build_network",
    "config_from_dict",
    "config_names",
    "continuous_std",
    "load_config",
    "load_network",
    "network_labels",
    "read_checkpoint",
    "score_function",
    "score_sde_output",
]
