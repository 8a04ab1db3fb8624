"""The ``nll`` metric: negative log-likelihood of the model's **data** (not of the samples) under
its probability-flow ODE, in nats and bits per dimension (Song et al. 2021, App. D.2, Eq. 39–40).

The value depends on the model and the SDE, not on the sampler of the cell: it is computed once
per (model, options) in a process and repeated in every cell, so a sweep shows it beside sample
quality at the cost of one evaluation. ``bench likelihood`` is the command for the likelihood on
its own (several SDEs, JSON, progress). Columns:

* ``nll`` ± ``nll_ci``: mean −log p_eps(x) per data point in nats, data space (images in [0, 1]),
  with the half-width of the 95 % Student-t interval over data points;
* ``nll_bpd`` ± ``nll_bpd_ci``: the same in bits per dimension (with the 8-bit dequantisation
  offset for images);
* ``nll_nfe``: forward score evaluations per point (= the ODE solver's evaluations);
  ``nll_vjp``: vector–Jacobian products per point (one per probe per evaluation);
* ``nll_points`` (data points), ``nll_s`` (seconds of the evaluation, spent in the first cell).

The SDE is the model's own (``trained_for``, with its trained hyperparameters); a model without
one (the exact oracles) takes the cell's SDE in a sweep, or ``-o nll.sde=NAME`` (that SDE's
default hyperparameters).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

import bench
from bench.core.metric import Metric, MetricContext
from bench.core.model import ScoreModel
from bench.core.sde import SDE
from bench.errors import BenchError, Unsupported
from bench.likelihood import Settings, evaluate, evaluation_points

_cache: dict[tuple[Any, ...], tuple[ScoreModel, dict[str, float]]] = {}


class NegativeLogLikelihood(Metric):
    """Negative log-likelihood of the model's data (bits/dim) through the probability-flow ODE."""

    name = "nll"
    column_directions = {
        "nll": "lower",
        "nll_bpd": "lower",
        **{f"nll_{c}": "info" for c in ("ci", "bpd_ci", "probe_se", "nfe", "vjp", "points", "s")},
    }

    @dataclasses.dataclass
    class Options:
        sde: str = ""
        """The SDE (default: the model's own)."""
        data: str = ""
        """``exact``, a dataset ``NAME[:ARG]`` (default: the model's own data)."""
        split: str = ""
        """The dataset split (default: ``test`` where there is one)."""
        points: int = 0
        """Data points (0: the whole split; exact draws: the cell's n)."""
        probes: int = 1
        hutchinson: str = "rademacher"
        rtol: float = 1e-5
        atol: float = 1e-5
        eps: float = 1e-5
        batch_size: int = 1000
        repeats: int = 1
        prior: str = "sde"
        seed: int = 0

        def settings(self) -> Settings:
            names = {f.name for f in dataclasses.fields(Settings)}
            return Settings(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    @classmethod
    def prepare(cls, model: ScoreModel, options: Any, context: MetricContext) -> None:
        """Refuse, before any work, a bad option or SDE (a model without one of its own takes
        each cell's SDE in a sweep)."""
        options.settings()
        if options.sde or model.trained_for:
            _sde(model, options, context)

    def update(self, samples: Tensor) -> None:
        """Nothing: the likelihood is of the data, not of the samples."""

    def compute(self) -> dict[str, float]:
        if self.context is None:
            raise BenchError("the nll metric needs a metric context (the registry)")
        sde = _sde(self.model, self.options, self.context)
        key = (id(self.model), self.n, dataclasses.astuple(self.options), sde.name, sde.eps)
        key += tuple(sorted(dataclasses.asdict(sde.options).items()))
        hit = _cache.get(key)
        if hit is not None and hit[0] is self.model:
            return hit[1]
        opts = self.options
        points, text = evaluation_points(
            self.model,
            self.context,
            opts.data or None,
            opts.split or None,
            opts.points or (self.n if self.model.exact else None),
        )
        dtype = getattr(self.model, "dtype", torch.float32)
        result = evaluate(
            self.model, sde, points, opts.settings(), device=self.device, dtype=dtype, data=text
        ).summary()
        out = {
            "nll": result["nll"],
            "nll_ci": result["nll_ci"],
            "nll_bpd": result["bpd"],
            "nll_bpd_ci": result["bpd_ci"],
            "nll_probe_se": result["nll_probe_se"],
            "nll_nfe": result["nfe"],
            "nll_vjp": result["vjp"],
            "nll_points": float(result["points"]),
            "nll_s": result["seconds"],
        }
        if len(_cache) >= 16:
            _cache.clear()
        _cache[key] = (self.model, out)
        return out


def _sde(model: ScoreModel, options: Any, context: MetricContext) -> SDE:
    """The SDE the likelihood is taken under: ``-o nll.sde``, else the cell's, else the model's
    own, with the model's hyperparameters."""
    if not options.sde and context.sde is not None:
        return context.sde
    name = options.sde or model.trained_for
    if not name:
        raise BenchError(
            f"the nll metric needs an SDE for model {model.spec!r}: -o nll.sde=ve|vp|subvp"
        )
    entry = context.registry.get("sdes", name)
    values = dict(model.sde_defaults.get(entry.name, {}))
    sde = entry.obj(1000, entry.obj.Options(**values))
    try:
        model.check_sde(sde)
    except Unsupported as exc:
        raise BenchError(f"nll: {exc.reason}") from None
    return sde


@bench.hookimpl
def register_metrics(register):
    register(NegativeLogLikelihood)
