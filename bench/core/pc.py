"""The predictor–corrector sampler (Song et al. 2021, Alg. 1, in the reference code's order).

A predictor is one step of a numerical solver of the reverse-time SDE from t to t_next; a
corrector is score-based MCMC at a fixed t. ``pc`` is the sampler built from one of each; every
predictor × corrector pair of ``--predictors``/``--correctors`` is one ``pc`` cell.

Both take ``update(x, t, t_next) → (x, x_mean)``. Predictors written before time grids existed
take ``update(x, t)`` and assume the paper's dt = −1/N: they keep working on the ``uniform``
schedule and are unsupported on any other; correctors of that form work on every schedule.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from bench.core.options import NoOptions, default_options
from bench.core.sampler import Callback, Noise, Sampler
from bench.core.schedule import Schedule, TimeGrid
from bench.core.sde import SDE, ScoreFn
from bench.core.views import ModelView
from bench.errors import Unsupported

Step = Callable[[Tensor, float, float], tuple[Tensor, Tensor]]


class Predictor(abc.ABC):
    """A predictor: one step of a numerical solver of the reverse-time SDE, from t to t_next.

    ``update(x, t, t_next)`` returns ``(x, x_mean)``: the new state and the same step without
    fresh noise (used for the final denoising), as in the reference code. On the paper's uniform
    grid (``sde.discrete``) the built-in steps follow the reference code exactly (dt = −1/N and
    the discrete tables); :meth:`bench.SDE.step_dt` and :meth:`bench.SDE.discretize` choose.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    nfe_per_step: ClassVar[int] = 1
    """Score evaluations per step (for the nominal NFE; the suite counts the real ones)."""
    batch_dependence: ClassVar[str | None] = None
    """Why a step depends on the rest of the batch, if it does (see :class:`bench.Sampler`)."""

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        probability_flow: bool = False,
        noise: Noise = torch.randn_like,
        options: Any = None,
    ) -> None:
        self.sde = sde
        self.score_fn = score_fn
        self.probability_flow = probability_flow
        self.rsde = sde.reverse(score_fn, probability_flow)
        self.noise = noise
        self.options = default_options(type(self), options)

    @classmethod
    def supports(cls, sde: SDE, probability_flow: bool) -> None:
        """Raise :class:`bench.Unsupported` with a reason if this pairing cannot run."""

    @abc.abstractmethod
    def update(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, Tensor]:
        """One predictor step from t to t_next; returns (x, x_mean)."""


class Corrector(abc.ABC):
    """A corrector: ``n_steps`` score-based MCMC iterations at a fixed time t.

    ``snr`` is the signal-to-noise ratio r of the paper's Algorithms 4 and 5; ``t_next`` (the next
    time of the grid) only sets the one-step α of the VP family off the paper's grid.
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    nfe_per_step: ClassVar[int] = 1
    """Score evaluations per corrector iteration (for the nominal NFE)."""
    batch_dependence: ClassVar[str | None] = None
    """Why an iteration depends on the rest of the batch, if it does (e.g. batch-mean norms)."""

    def __init__(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        snr: float,
        n_steps: int,
        noise: Noise = torch.randn_like,
        options: Any = None,
    ) -> None:
        self.sde = sde
        self.score_fn = score_fn
        self.snr = snr
        self.n_steps = n_steps
        self.noise = noise
        self.options = default_options(type(self), options)

    @classmethod
    def supports(cls, sde: SDE) -> None:
        """Raise :class:`bench.Unsupported` with a reason if this corrector cannot run on ``sde``."""

    @abc.abstractmethod
    def update(self, x: Tensor, t: float, t_next: float | None = None) -> tuple[Tensor, Tensor]:
        """``n_steps`` corrector iterations at time t; returns (x, x_mean) of the last one."""


def takes_t_next(component: type[Predictor] | type[Corrector]) -> bool:
    """Whether ``component.update`` takes ``(x, t, t_next)`` (else the older ``(x, t)``)."""
    params = list(inspect.signature(component.update).parameters.values())[1:]  # minus self
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


def stepper(component: Predictor | Corrector) -> Step:
    """``component.update`` as a function of (x, t, t_next), whatever its signature."""
    if takes_t_next(type(component)):
        return component.update
    update = component.update
    return lambda x, t, t_next: update(x, t)  # an update(x, t) plugin: t_next unused


@torch.no_grad()
def pc_sample(
    predictor: Predictor,
    corrector: Corrector,
    x_T: Tensor,
    grid: TimeGrid,
    *,
    denoise: bool = True,
    callback: Callback | None = None,
) -> Tensor:
    """Run the PC sampler from the prior sample ``x_T`` and return the final sample.

    At each visited time t_i of the grid the corrector runs first, then the predictor steps to
    t_{i+1} — the order of the reference code, which applies a corrector at t = T and ends on a
    predictor step from t_{N−1} = eps. With ``denoise`` (the paper's "noise removal") the result
    is the last step's ``x_mean``, i.e. that step without its fresh noise; with the ``none``
    predictor the last ``x_mean`` is x itself, as in the reference.

    Args:
        predictor: the predictor, built on the model's score and the SDE.
        corrector: the corrector, built on the same score and SDE.
        x_T: the starting point, ``sde.prior_sampling(z)``.
        grid: the time grid (on the uniform schedule the visited times are
            ``linspace(T, eps, N)``).
        denoise: return ``x_mean`` (True) or the noisy ``x`` (False) of the last step.
        callback: called after every step with ``{"i", "t", "x", "x_mean"}``.
    """
    correct, predict = stepper(corrector), stepper(predictor)
    # Initial sample from the prior.
    x = x_mean = x_T
    for i, t, t_next in grid.pairs():
        # Corrector, then predictor, as in the reference code.
        x, x_mean = correct(x, t, t_next)
        x, x_mean = predict(x, t, t_next)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x_mean": x_mean})
    # Optional final denoising: drop the last step's noise.
    return x_mean if denoise else x


class PCSampler(Sampler):
    """The predictor–corrector sampler (Alg. 1): a corrector, then a predictor, at every t."""

    name = "pc"
    default_schedule = "uniform"

    def __init__(
        self,
        predictor: type[Predictor],
        corrector: type[Corrector],
        *,
        snr: float = 0.0,
        corrector_steps: int = 0,
        probability_flow: bool = False,
        denoise: bool = True,
        predictor_options: Any = None,
        corrector_options: Any = None,
    ) -> None:
        super().__init__()
        self.predictor, self.corrector = predictor, corrector
        self.snr, self.corrector_steps = snr, corrector_steps
        self.probability_flow, self.denoise = probability_flow, denoise
        self.predictor_options, self.corrector_options = predictor_options, corrector_options

    def supports(self, sde: SDE, schedule: Schedule) -> None:
        self.predictor.supports(sde, self.probability_flow)
        self.corrector.supports(sde)
        if not schedule.paper and not takes_t_next(self.predictor):
            raise Unsupported(
                f"predictor {self.predictor.name!r} takes update(x, t) and assumes the paper's "
                f"dt = -1/N: it runs on the uniform schedule only (give update a t_next argument)"
            )

    def batch_dependent(self) -> str | None:
        reasons = [c.batch_dependence for c in (self.predictor, self.corrector)]
        return "; ".join(r for r in reasons if r) or None

    def nfe_nominal(self, steps: int) -> int:
        per_step = self.predictor.nfe_per_step
        per_step += self.corrector_steps * self.corrector.nfe_per_step
        return steps * per_step

    def build(self, model: ModelView, noise: Noise) -> tuple[Predictor, Corrector]:
        """The predictor and corrector of one batch, on the model's score and ``noise``."""
        sde, score = model.sde, model.score
        predictor = self.predictor(sde, score, self.probability_flow, noise, self.predictor_options)
        corrector = self.corrector(
            sde, score, self.snr, self.corrector_steps, noise, self.corrector_options
        )
        return predictor, corrector

    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        predictor, corrector = self.build(model, noise)
        return pc_sample(predictor, corrector, x_T, grid, denoise=self.denoise, callback=callback)
