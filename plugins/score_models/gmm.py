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

import numpy as np
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


class TimeConstants:
    """The per-component constants of p_t at one time, in one preallocated (K, D + 2) table.

    Columns: ``A`` (K, D) = a·μ_k/v_k, ``u`` = 1/v_k and ``c`` = log w_k − (D/2)·log v_k −
    a²|μ_k|²/(2v_k), with v_k = a²s_k² + std² (see :meth:`GaussianMixtureModel.score_fn`).
    They are computed in float64 and stored in the model's dtype. On the CPU the table is a
    NumPy array shared with the tensor, so :meth:`fill` costs a dozen ufunc calls on K values
    (about 4 µs for K = 5) instead of a dozen torch kernels; elsewhere it is computed with
    torch on the device (a copy from host memory would synchronise every call).

    The table is overwritten by the next :meth:`fill`: the score function reads it only inside
    one call, and never returns a view of it.
    """

    def __init__(
        self,
        mixture: Mixture,
        device: torch.device,
        dtype: torch.dtype,
        *,
        host: bool | None = None,
    ) -> None:
        """Args:
        mixture: the mixture at t = 0.
        device: where the table lives.
        dtype: the table's dtype (the model's).
        host: fill the table with NumPy (default: on the CPU, for the dtypes NumPy has).
        """
        K, D = mixture.means.shape
        self.D = D
        usable = torch.device(device).type == "cpu" and dtype in NUMPY_DTYPES
        self.on_host = usable if host is None else host and usable
        if self.on_host:
            self._mu = mixture.means.numpy()
            self._s2 = mixture.stds.square().numpy()
            self._log_w = mixture.weights.log().numpy()
            self._mu_sq_half = 0.5 * mixture.means.square().sum(1).numpy()
            self._v, self._u, self._tmp = np.empty(K), np.empty(K), np.empty(K)
            self._table = np.zeros((K, D + 2), dtype=NUMPY_DTYPES[dtype])
            self._views = (self._table[:, :D], self._table[:, D], self._table[:, D + 1])
            self._tmp_col = self._tmp[:, None]
            table = torch.from_numpy(self._table)
            self.fill = self._fill_host
        else:
            kw = {"device": device, "dtype": torch.float64}
            self._mu = mixture.means.to(**kw)
            self._s2 = mixture.stds.square().to(**kw)
            self._log_w = mixture.weights.log().to(**kw)
            self._mu_sq_half = 0.5 * self._mu.square().sum(1)
            table = torch.zeros(K, D + 2, device=device, dtype=dtype)
            self.fill = self._fill_device
        self.table = table
        self.A, self.u_col, self.u, self.c = (
            table[:, :D],
            table[:, D : D + 1],
            table[:, D],
            table[:, D + 1 :],
        )

    def _fill_host(self, a: float, std: float) -> None:
        v, u, tmp = self._v, self._u, self._tmp
        table_A, table_u, table_c = self._views
        a2 = a * a
        np.multiply(self._s2, a2, out=v)
        np.add(v, std * std, out=v)  # v_k = a²s_k² + std²
        np.reciprocal(v, out=u)
        table_u[:] = u
        np.multiply(u, a, out=tmp)
        np.multiply(self._mu, self._tmp_col, out=table_A)  # a·μ_k/v_k
        np.log(v, out=tmp)
        np.multiply(tmp, -0.5 * self.D, out=tmp)
        np.add(tmp, self._log_w, out=tmp)
        np.multiply(u, self._mu_sq_half, out=v)  # v is not needed any more
        np.multiply(v, a2, out=v)
        np.subtract(tmp, v, out=table_c)

    def _fill_device(self, a: float, std: float) -> None:
        D, a2 = self.D, a * a
        v = self._s2 * a2 + std * std
        u = v.reciprocal()
        self.table[:, D] = u
        self.table[:, :D] = self._mu * (a * u)[:, None]
        self.table[:, D + 1] = self._log_w - (0.5 * D) * v.log() - a2 * self._mu_sq_half * u


NUMPY_DTYPES = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}


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
        if "classes" in data:  # a class-conditional mixture (imported here: it builds on this)
            from bench_plugins.score_models import gmm_cond

            return gmm_cond.from_data(data, mixture, spec, str(path), device=device, dtype=dtype)
        return cls(mixture, spec, data.get("shape"), device, dtype, data.get("description", ""))

    def score_fn(self, sde: SDE) -> ScoreFn:
        """∇ₓ log p_t(x) = Σ_k r_k(x)·(a·μ_k − x)/v_k with v_k = a²s_k² + std², r the posterior.

        Per call, the K per-component constants of time t (see :class:`TimeConstants`) are
        written into one preallocated (K, D + 2) table ``[A | u | c]`` with A_k = a·μ_k/v_k,
        u_k = 1/v_k and c_k = log w_k − (D/2)·log v_k − a²|μ_k|²/(2v_k). The batch then costs
        seven kernels: the logits c_k + A_k·x − u_k|x|²/2 (a matrix product, |x|² and a
        rank-one update, laid out as (K, B) because torch's CPU softmax is slow along a short
        last dimension), the softmax over components, and s = r·A − x·(r·u) (two matrix
        products and one fused multiply-add). No shape work beyond a view, no per-call
        conversion; with autograd on (``x.requires_grad``) the table is copied, since the
        backward pass reads it after the next call has overwritten it.
        """
        D = self.mixture.dim
        table = TimeConstants(self.mixture, self.device, self.dtype)
        fill, A, u, u_col, c = table.fill, table.A, table.u, table.u_col, table.c
        coef = sde.marginal_coef
        addmm, softmax, mm, addcmul, vecdot = (
            torch.addmm,
            torch.softmax,
            torch.mm,
            torch.addcmul,
            torch.linalg.vecdot,
        )

        def score(x: Tensor, t: float) -> Tensor:
            fill(*coef(t))
            if x.requires_grad:  # autograd keeps A and u for backward: not the shared table
                return _score(x, A.clone(), u.clone(), u_col.clone(), c.clone())
            return _score(x, A, u, u_col, c)

        def _score(x: Tensor, A: Tensor, u: Tensor, u_col: Tensor, c: Tensor) -> Tensor:
            flat = x.dim() == 2
            xf = x if flat else x.reshape(-1, D)
            logits = addmm(c, A, xf.T)  # (K, B): c_k + A_k·x
            logits.addr_(u, vecdot(xf, xf), alpha=-0.5)  # − u_k·|x|²/2
            r = softmax(logits, 0).T  # (B, K) posterior responsibilities
            s = addcmul(mm(r, A), xf, mm(r, u_col), value=-1)
            return s if flat else s.reshape(x.shape)

        return score

    def sample_data(self, n: int, generator: torch.Generator) -> Tensor:
        return self.mixture.sample(n, generator).reshape(n, *self.data_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.mixture.log_prob(x.reshape(x.shape[0], -1).to(torch.float64))

    def describe(self) -> dict[str, Any]:
        m = self.mixture
        return {**super().describe(), "components": m.weights.numel(), "dim": m.dim}


def _preset(
    name: str,
    summary: str,
    grid: dict[str, Any] | None = None,
    base: type[GaussianMixtureModel] | None = None,
) -> type[GaussianMixtureModel]:
    """A registered preset: a shipped mixture file under a fixed name (and its default grid);
    ``base`` is the class it registers as (a conditional mixture's, for ``*-cond`` files)."""

    def load(cls, arg: str | None, *, device: torch.device, dtype: torch.dtype) -> ScoreModel:
        if arg:
            raise BenchError(f"model {name!r} takes no argument (got {name}:{arg})")
        path = resources.files("bench_plugins") / "data" / f"{name}.json"
        with resources.as_file(path) as file:
            model = GaussianMixtureModel.from_file(file, name, device=device, dtype=dtype)
        if grid:
            model.default_grid = grid
        return model

    return type(
        f"Preset_{name.replace('-', '_')}",
        (base or GaussianMixtureModel,),
        {"name": name, "__doc__": summary, "load": classmethod(load)},
    )


RING8_GRID = {"steps": (10, 25, 100), "samples": 4000, "batch_size": 4000, "seeds": "0-2"}
"""The default sweep's grid (``bench run`` with no options): few steps, where discretisation
error separates the samplers beyond the metrics' floors, enough samples and seeds to see it; about
40 s of CPU (docs/reports.md has the measurements behind the choice)."""

Gauss1D = _preset("gauss1d", "Exact-score 1-D Gaussian N(0.5, 0.2²), the paper's test case.")
Ring8 = _preset("ring8", "Exact-score 2-D ring of eight Gaussians (radius 2, std 0.1).", RING8_GRID)
Mixture64 = _preset(
    "gmm64", "Exact-score 64-D mixture of ten 8×8 'digit' Gaussians, unequal weights and stds."
)

MODELS = (GaussianMixtureModel, Gauss1D, Ring8, Mixture64)
