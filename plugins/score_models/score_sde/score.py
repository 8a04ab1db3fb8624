"""From network output to score: the label and scaling conventions of the score_sde models.

Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations",
Sec. 3.4 and App. B (perturbation kernels): the VE SDE with sigma(t) = sigma_min (sigma_max /
sigma_min)^t, the VP SDE with marginal std sqrt(1 - exp(-int beta)) and the sub-VP SDE with std
1 - exp(-int beta), beta(t) linear from beta_min to beta_max. The trained networks are
conditioned and scaled thus:

* VE, continuous: label sigma(t); the output is the score (NCSN++ divides by sigma itself).
* VE, discrete: label round((1 - t)(N - 1)), an index into the descending sigma ladder; the
  output is the score.
* VP / sub-VP, continuous (sub-VP always): label t * 999; score = -output / std(t), the network
  predicting the noise (Ho et al. 2020's epsilon-parameterisation).
* VP, discrete (DDPM, Ho et al. 2020): label t (N - 1), real and not rounded; score = -output /
  sqrt(1 - alphabar_k), k = floor(t (N - 1)), with beta_k = linspace(beta_min/N, beta_max/N, N).

Every quantity is computed in the dtype of ``x`` (``t`` is cast to it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from bench_plugins.score_models.score_sde.configs import ScoreSdeConfig
from bench_plugins.score_models.score_sde.ncsnpp import ve_sigma_ladder
from torch import nn

Tensor = torch.Tensor


@dataclass(frozen=True)
class SdeParams:
    """The SDE a score_sde network was trained for, and its label convention.

    Attributes:
        sde: ``"vesde"``, ``"vpsde"`` or ``"subvpsde"``.
        continuous: continuous-time labels (always true for sub-VP).
        sigma_min, sigma_max: VE noise range.
        beta_min, beta_max: VP / sub-VP beta(0) and beta(1).
        num_scales: N, the number of discrete noise levels.
    """

    sde: str
    continuous: bool
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    beta_min: float = 0.1
    beta_max: float = 20.0
    num_scales: int = 1000

    @classmethod
    def from_config(cls, config: ScoreSdeConfig) -> SdeParams:
        """The SDE of a config (``model.sigma_*``, ``model.beta_*``, ``model.num_scales``)."""
        m = config.model
        return cls(
            sde=config.sde,
            continuous=config.continuous_labels,
            sigma_min=m.sigma_min,
            sigma_max=m.sigma_max,
            beta_min=m.beta_min,
            beta_max=m.beta_max,
            num_scales=m.num_scales,
        )


@dataclass(frozen=True)
class ScoreOutput:
    """Everything one score evaluation computes (for debugging and alternative "views").

    Attributes:
        score: the score, ``[B, C, H, W]``.
        net_out: the raw network output (VP/sub-VP: the predicted noise).
        labels: the labels the network received, ``[B]``.
        std: the marginal std of x(t) given x(0) used by the model, ``[B]``.
        eps: the noise-prediction view ``-score * std`` (equal to ``net_out`` for VP/sub-VP).
    """

    score: Tensor
    net_out: Tensor
    labels: Tensor
    std: Tensor
    eps: Tensor


def ve_sigma(t: Tensor, p: SdeParams) -> Tensor:
    """sigma(t) = sigma_min (sigma_max / sigma_min)^t (Song et al. 2021, Sec. 3.4)."""
    return p.sigma_min * (p.sigma_max / p.sigma_min) ** t


def vp_log_mean_coeff(t: Tensor, p: SdeParams) -> Tensor:
    """log of the VP mean coefficient, -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min (App. B)."""
    return -0.25 * t**2 * (p.beta_max - p.beta_min) - 0.5 * t * p.beta_min


def continuous_std(t: Tensor, p: SdeParams) -> Tensor:
    """The marginal std of x(t) given x(0) of the continuous SDE (Song et al. 2021, App. B)."""
    if p.sde == "vesde":
        return ve_sigma(t, p)
    one_minus = 1.0 - torch.exp(2.0 * vp_log_mean_coeff(t, p))
    return torch.sqrt(one_minus) if p.sde == "vpsde" else one_minus


def ddpm_sqrt_one_minus_alphas_cumprod(
    p: SdeParams, dtype: torch.dtype, device: torch.device | None = None
) -> Tensor:
    """sqrt(1 - alphabar_k) of DDPM's discretisation, beta_k = linspace(beta_min/N, beta_max/N, N).

    Ho et al. 2020, Sec. 2 and 4; Song et al. 2021, App. B (the VP SDE as the limit of DDPM).
    """
    n = p.num_scales
    betas = torch.linspace(p.beta_min / n, p.beta_max / n, n, dtype=dtype, device=device)
    return torch.sqrt(1.0 - torch.cumprod(1.0 - betas, dim=0))


def network_labels(t: Tensor, p: SdeParams) -> Tensor:
    """The labels the network is conditioned on at times ``t`` (see the module docstring)."""
    if p.sde == "vesde":
        if p.continuous:
            return ve_sigma(t, p)
        return torch.round((1 - t) * (p.num_scales - 1)).long()
    return t * 999 if p.continuous else t * (p.num_scales - 1)


def _model_std(t: Tensor, labels: Tensor, p: SdeParams) -> Tensor:
    """The std the model's output is scaled with (the discrete tables for discrete models)."""
    if p.continuous:
        return continuous_std(t, p)
    if p.sde == "vesde":
        return ve_sigma_ladder(p.sigma_min, p.sigma_max, p.num_scales).to(t)[labels]
    return ddpm_sqrt_one_minus_alphas_cumprod(p, t.dtype, t.device)[labels.long()]


def score_sde_output(net: nn.Module, x: Tensor, t: Tensor, p: SdeParams) -> ScoreOutput:
    """One score evaluation as the reference's ``get_score_fn`` does it, with its by-products.

    Args:
        net: a score_sde network (e.g. from ``load_network``), in eval mode.
        x: ``[B, C, H, W]`` states, in the data's scaling.
        t: ``[B]`` times in (0, 1], cast to ``x``'s dtype.
        p: the SDE and label convention.

    Returns:
        The score, the raw output, the labels, the std and the noise view.
    """
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape [{x.shape[0]}], got {tuple(t.shape)}")
    t = t.to(dtype=x.dtype, device=x.device)
    labels = network_labels(t, p)
    out = net(x, labels)
    std = _model_std(t, labels, p)
    if p.sde == "vesde":
        score = out
        eps = -out * std[:, None, None, None]
    else:
        score = -out / std[:, None, None, None]
        eps = out
    return ScoreOutput(score=score, net_out=out, labels=labels, std=std, eps=eps)


def score_function(
    net: nn.Module, sde: ScoreSdeConfig | SdeParams
) -> Callable[[Tensor, Tensor], Tensor]:
    """``(x, t) -> score`` for a score_sde network; puts ``net`` in eval mode (no dropout).

    Args:
        net: the network.
        sde: its config, or the SDE parameters.
    """
    p = SdeParams.from_config(sde) if isinstance(sde, ScoreSdeConfig) else sde
    net.eval()

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        return score_sde_output(net, x, t, p).score

    return score_fn
