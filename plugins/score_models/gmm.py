"""Exact-score oracles: isotropic Gaussian mixtures, whose perturbed marginals are closed form.

Under every SDE here the perturbation kernel is affine in x_0, p_0t(x_t|x_0) = N(a(t)·x_0, std(t)²I),
so p_0 = Σ_k w_k N(μ_k, s_k²I) becomes p_t = Σ_k w_k N(a(t)μ_k, (a(t)²s_k² + std(t)²)I). Its score,
samples and density are exact: any error in the samples is the sampler's own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench.core.model import ScoreModel
from bench.core.sde import SDE, ScoreFn
from bench.errors import BenchError

ORACLE_METRICS = ("swd", "fd", "logp", "coverage")


@dataclass(frozen=True)
class Mixture:
    """An isotropic Gaussian mixture Σ_k w_k N(μ_k, s_k²I) in float64."""

    weights: Tensor  # (K,)
    means: Tensor  # (K, D)
    stds: Tensor  # (K,)

    @classmethod
    def from_dict(cls, spec: dict[str, Any], source: str) -> Mixture:
        """Validate and build a mixture from ``{"weights", "means", "stds"}``."""
        try:
            weights = torch.as_tensor(spec["weights"], dtype=torch.float64)
            means = torch.as_tensor(spec["means"], dtype=torch.float64)
            stds = torch.as_tensor(spec["stds"], dtype=torch.float64)
        except KeyError as exc:
            raise BenchError(
                f"{source}: missing key {exc.args[0]!r} (need weights, means, stds)"
            ) from None
        except (TypeError, ValueError) as exc:
            raise BenchError(
                f"{source}: weights, means and stds must be numeric arrays ({exc})"
            ) from None
        K = weights.numel()
        if weights.ndim != 1 or K == 0 or means.ndim != 2 or means.shape[0] != K:
            raise BenchError(
                f"{source}: need K weights and a K×D list of means (got {K} weights, "
                f"means of shape {tuple(means.shape)})"
            )
        if stds.shape != (K,):
            raise BenchError(
                f"{source}: need one isotropic std per component ({K}), got {tuple(stds.shape)}"
            )
        if not bool((weights > 0).all()) or not bool((stds > 0).all()):
            raise BenchError(f"{source}: weights and stds must be positive")
        if not bool(torch.isfinite(means).all()):
            raise BenchError(f"{source}: means must be finite")
        return cls(weights / weights.sum(), means, stds)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n exact samples (float64, CPU)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) per row of the (n, D) tensor x."""
        return torch.logsumexp(self._log_joint(x, self.means.to(x), self.stds.to(x) ** 2), dim=1)

    def _log_joint(self, x: Tensor, means: Tensor, var: Tensor) -> Tensor:
        """log w_k + log N(x; m_k, v_k I), shape (n, K)."""
        sq = (x[:, None, :] - means[None]).square().sum(-1)
        log_w = self.weights.log().to(x)
        return log_w - 0.5 * self.dim * torch.log(2 * math.pi * var) - sq / (2 * var)

    def nearest(self, x: Tensor) -> Tensor:
        """Index of the nearest component mean for each row of x."""
        return torch.cdist(x.to(torch.float64), self.means.to(x.device)).argmin(dim=1)


class GaussianMixtureModel(ScoreModel):
    """Exact-score Gaussian mixture from a JSON file: --model gmm:PATH."""

    name = "gmm"
    exact = True
    preferred_threads = 1
    default_metrics = ORACLE_METRICS

    def __init__(
        self,
        mixture: Mixture,
        spec: str,
        shape: tuple[int, ...] | None,
        device: torch.device,
        dtype: torch.dtype,
        description: str = "",
    ) -> None:
        self.mixture = mixture
        self.spec = spec
        self.description = description
        self.data_shape = tuple(shape) if shape else (mixture.dim,)
        if math.prod(self.data_shape) != mixture.dim:
            raise BenchError(f"{spec}: shape {self.data_shape} does not hold {mixture.dim} values")
        self.device = device
        self.dtype = dtype
        self._means = mixture.means.to(device, dtype)
        self._var0 = (mixture.stds**2).to(device, dtype)
        self._log_w = mixture.weights.log().to(device, dtype)

    @classmethod
    def load(cls, arg: str | None, *, device: torch.device, dtype: torch.dtype) -> ScoreModel:
        if not arg:
            raise BenchError(
                "the gmm model needs a JSON file: --model gmm:PATH "
                '(with {"weights": [...], "means": [[...], ...], "stds": [...]})'
            )
        return cls.from_file(Path(arg), f"gmm:{arg}", device=device, dtype=dtype)

    @classmethod
    def from_file(
        cls, path: Path, spec: str, *, device: torch.device, dtype: torch.dtype
    ) -> GaussianMixtureModel:
        if not path.is_file():
            raise BenchError(f"mixture file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchError(f"{path}: not a readable JSON file ({exc})") from None
        if not isinstance(data, dict):
            raise BenchError(f"{path}: expected a JSON object with weights, means and stds")
        mixture = Mixture.from_dict(data, str(path))
        return cls(mixture, spec, data.get("shape"), device, dtype, data.get("description", ""))

    def score_fn(self, sde: SDE) -> ScoreFn:
        """∇ₓ log p_t(x) = Σ_k r_k(x)·(a·μ_k − x)/v_k with v_k = a²s_k² + std², r the posterior.

        Laid out as (K, B) because torch's CPU kernels are slow along a short last dimension;
        squared distances use the expansion |m|² − 2m·x + |x|² (one matrix product).
        """
        D = self.mixture.dim

        def score(x: Tensor, t: float) -> Tensor:
            a, std = sde.marginal_coef(t)
            var = ((a * a) * self._var0 + std * std)[:, None]  # (K, 1)
            means = a * self._means  # (K, D)
            xf = x.reshape(-1, D)
            sq = torch.addmm(means.square().sum(1, keepdim=True), means, xf.T, alpha=-2)
            sq += xf.square().sum(1)  # (K, B)
            logits = (self._log_w[:, None] - (0.5 * D) * var.log()) - sq / (2 * var)
            r_over_v = torch.softmax(logits, dim=0) / var
            s = r_over_v.T @ means - xf * r_over_v.sum(0)[:, None]
            return s.reshape(x.shape)

        return score

    def sample_data(self, n: int, generator: torch.Generator) -> Tensor:
        return self.mixture.sample(n, generator).reshape(n, *self.data_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.mixture.log_prob(x.reshape(x.shape[0], -1).to(torch.float64))

    def describe(self) -> dict[str, Any]:
        m = self.mixture
        return {**super().describe(), "components": m.weights.numel(), "dim": m.dim}


def _preset(name: str, summary: str) -> type[GaussianMixtureModel]:
    """A registered preset: a shipped mixture file under a fixed name."""

    def load(cls, arg: str | None, *, device: torch.device, dtype: torch.dtype) -> ScoreModel:
        if arg:
            raise BenchError(f"model {name!r} takes no argument (got {name}:{arg})")
        path = resources.files("bench_plugins") / "data" / f"{name}.json"
        with resources.as_file(path) as file:
            return GaussianMixtureModel.from_file(file, name, device=device, dtype=dtype)

    return type(
        f"Preset_{name}",
        (GaussianMixtureModel,),
        {"name": name, "__doc__": summary, "load": classmethod(load)},
    )


Gauss1D = _preset(
    "gauss1d", "Exact-score 1-D Gaussian N(0.5, 0.2²), the reference doc's test case."
)
Ring8 = _preset("ring8", "Exact-score 2-D ring of eight Gaussians (radius 2, std 0.1).")
Mixture64 = _preset(
    "gmm64", "Exact-score 64-D mixture of ten 8×8 'digit' Gaussians, unequal weights and stds."
)

MODELS = (GaussianMixtureModel, Gauss1D, Ring8, Mixture64)
