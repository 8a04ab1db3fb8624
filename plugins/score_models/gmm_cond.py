"""Class-conditional exact-score oracles: a Gaussian mixture whose components carry classes.

Class c is the sub-mixture of its components, p_0(x | c) = Σ_{k∈c} w_k N(μ_k, s_k²I) / W_c with
W_c = Σ_{k∈c} w_k, and the classes are drawn with probabilities W_c, so the unconditional p_0
is the whole mixture. Under the perturbation kernel N(a(t)·x_0, std(t)²I) each stays a mixture
with the same responsibilities restricted to the class (:mod:`.gmm`), so the conditional score
∇ log p_t(x | c) and the unconditional one ∇ log p_t(x) are both exact, and so is the guided
score ∇ log p_t(x) + s·(∇ log p_t(x | c) − ∇ log p_t(x)) of classifier-free guidance (Ho &
Salimans 2022, Eq. 6). Any error in guided samples is then the sampler's own.

A mixture file becomes conditional with a ``classes`` list: one class index (0, 1, …) per
component, every class from 0 to the largest used.
"""

from __future__ import annotations

from typing import Any

import torch
from bench_plugins.score_models.gmm import (
    RING8_GRID,
    GaussianMixtureModel,
    Mixture,
    TimeConstants,
    _preset,
)
from torch import Tensor

from bench.core.guidance import NULL_LABEL, ConditionalFn
from bench.core.sde import SDE
from bench.errors import BenchError

CONDITIONAL_METRICS = ("swd", "fd", "logp", "coverage", "ode_err")


def parse_classes(value: Any, components: int, source: str) -> Tensor:
    """The ``classes`` list of a mixture file: one int ≥ 0 per component, none of 0..C−1 empty."""
    try:
        classes = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{source}: classes must be a list of integers ({exc})") from None
    if classes.shape != (components,):
        raise BenchError(
            f"{source}: need one class per component ({components}), got {tuple(classes.shape)}"
        )
    if not bool((classes == classes.round()).all()) or not bool((classes >= 0).all()):
        raise BenchError(f"{source}: classes must be integers 0, 1, ...")
    out = classes.to(torch.int64)
    missing = sorted(set(range(int(out.max()) + 1)) - set(out.tolist()))
    if missing:
        raise BenchError(f"{source}: classes {missing} have no component (number them 0..C-1)")
    return out


class ConditionalMixtureModel(GaussianMixtureModel):
    """Exact-score class-conditional Gaussian mixture: a ``gmm:PATH`` file with ``classes``.

    Loaded through ``gmm`` (whose name it keeps); the presets are registered under their own.
    """

    default_metrics = CONDITIONAL_METRICS
    null_label = True  # the whole mixture is the unconditional model

    def __init__(self, mixture: Mixture, classes_of: Tensor, *args: Any, **kwargs: Any) -> None:
        super().__init__(mixture, *args, **kwargs)
        self.classes_of = classes_of
        self.classes = int(classes_of.max()) + 1
        member = classes_of[:, None] == torch.arange(self.classes)[None]  # (K, C)
        self.members = torch.cat([member, torch.ones(len(classes_of), 1, dtype=torch.bool)], 1)
        """(K, C + 1): component k belongs to class c; the last column is the null label."""

    def column(self, labels: Tensor) -> Tensor:
        """The column of :attr:`members` of each label (NULL_LABEL: the last one)."""
        return torch.where(labels == NULL_LABEL, self.classes, labels).to(torch.int64)

    def conditional_fn(self, sde: SDE, dtype: torch.dtype | None = None) -> ConditionalFn:
        """∇ log p_t(x | c): the mixture's score with the responsibilities restricted to the
        components of class c (all of them for the null label); in ``dtype`` (the model's)."""
        D = self.mixture.dim
        table = TimeConstants(self.mixture, self.device, dtype or self.dtype)
        A, u, u_col, c = table.A, table.u, table.u_col, table.c
        outside = torch.zeros(self.members.shape, dtype=table.table.dtype, device=self.device)
        outside.masked_fill_(~self.members.to(self.device), -torch.inf)  # (K, C + 1)

        def score(x: Tensor, t: float, labels: Tensor) -> Tensor:
            table.fill(*sde.marginal_coef(t))
            xf = x.reshape(-1, D).to(table.table.dtype)
            logits = torch.addmm(c, A, xf.T)  # (K, B): log w_k N(x; a·μ_k, v_k) + const
            logits.addr_(u, torch.linalg.vecdot(xf, xf), alpha=-0.5)
            logits += outside[:, self.column(labels).to(self.device)]
            r = torch.softmax(logits, 0).T  # (B, K): responsibilities within the class
            s = torch.addcmul(torch.mm(r, A), xf, torch.mm(r, u_col), value=-1)
            return s.reshape(x.shape).to(x.dtype)

        return score

    def sample_conditional(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Exact samples from p_0(x | c_i), one per label (NULL_LABEL: from p_0), float64."""
        m = self.mixture
        probs = m.weights[:, None] * self.members[:, self.column(labels.cpu())]  # (K, B)
        k = torch.multinomial(probs.T, 1, generator=generator)[:, 0]
        z = torch.randn(len(labels), m.dim, generator=generator, dtype=torch.float64)
        return (m.means[k] + m.stds[k, None] * z).reshape(len(labels), *self.data_shape)

    def component_shares(self, labels: Tensor) -> Tensor:
        """E[share of component k] of exact samples with these labels: mean of w_k/W_c, k ∈ c."""
        w = self.mixture.weights[:, None] * self.members[:, self.column(labels.cpu())]
        return (w / w.sum(0, keepdim=True)).mean(1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "component_classes": self.classes_of.tolist()}


def from_data(data: dict[str, Any], mixture: Mixture, spec: str, source: str, **kw: Any) -> Any:
    """A :class:`ConditionalMixtureModel` from a parsed mixture file with ``classes``."""
    classes = parse_classes(data["classes"], mixture.weights.numel(), source)
    return ConditionalMixtureModel(
        mixture, classes, spec, data.get("shape"), description=data.get("description", ""), **kw
    )


Ring8Cond = _preset(
    "ring8-cond",
    "Exact-score ring8 with 4 classes of 2 adjacent components, for guidance.",
    RING8_GRID,
    ConditionalMixtureModel,
)
Mixture64Cond = _preset(
    "gmm64-cond",
    "Exact-score gmm64 with each 'digit' Gaussian a class (10 classes, 64-D).",
    base=ConditionalMixtureModel,
)

MODELS = (Ring8Cond, Mixture64Cond)
