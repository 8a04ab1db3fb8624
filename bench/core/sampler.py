"""The sampler: a whole sampling loop from the prior sample to the final sample.

A sampler owns its loop, as in k-diffusion: it is handed the prior sample x_T, the time grid
(:class:`bench.core.schedule.TimeGrid`), the model behind one NFE counter
(:class:`bench.core.views.ModelView`: score, ε or denoiser) and a noise source, and it returns the
final sample. It may keep multistep history, spend several evaluations per step, or adapt its
steps. The paper's predictor–corrector family is one sampler, ``pc`` (:mod:`bench.core.pc`).
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar

from torch import Tensor

from bench.core.options import NoOptions
from bench.core.schedule import Schedule, TimeGrid
from bench.core.sde import SDE
from bench.core.views import ModelView
from bench.errors import BenchError

Noise = Callable[[Tensor], Tensor]
"""Draws standard-normal noise shaped like its argument (from the cell's seeded streams)."""

Callback = Callable[[dict[str, Any]], None]
"""Called after every step with at least ``{"i", "t", "x"}`` (k-diffusion's per-step callback)."""


class Sampler(abc.ABC):
    """A sampler, selected with ``--samplers NAME``; its ``Options`` are set with
    ``-o sampler.NAME.KEY=VALUE`` and are part of the cell id.

    Subclasses implement :meth:`sample` and :meth:`nfe_nominal`, and may refuse an SDE or a
    schedule in :meth:`supports` (raise :class:`bench.Unsupported` with the reason: the cell
    becomes an ``unsupported`` row).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    default_schedule: ClassVar[str] = "uniform"
    """The schedule cells use when ``--schedules`` is not given."""
    adaptive: ClassVar[bool] = False
    """True when the number of evaluations is chosen at run time (error control)."""
    host_loop: ClassVar[bool] = False
    """True for a loop that runs on the host by design (e.g. scipy's RK45): it synchronises with
    the device at every evaluation, and the no-host-sync test does not apply."""
    batch_dependence: ClassVar[str | None] = None
    """Why the samples depend on the batch they are drawn in, if they do (e.g. step sizes shared
    by the batch); ``None`` when every sample depends only on its seed and index. Rows say it."""
    takes_arg: ClassVar[bool] = False
    """Whether the sampler is named ``NAME:ARG`` (e.g. ``diffusers:DDIMScheduler``)."""
    uses_steps: ClassVar[bool] = True
    """False when ``steps`` means nothing to the sampler (a black-box adaptive solver): the grid
    then has one cell whatever ``--steps`` says, with ``steps`` empty."""

    def __init__(self, options: Any = None, arg: str | None = None) -> None:
        """Every sampler but ``pc`` is built as ``cls(options, arg)`` (``pc`` from its predictor
        and corrector, :class:`bench.core.pc.PCSampler`); ``arg`` is the ``ARG`` of
        ``NAME:ARG`` for samplers that take one."""
        if arg is not None and not self.takes_arg:
            raise BenchError(f"sampler {self.name!r} takes no argument (got {self.name}:{arg})")
        self.options = options if options is not None else self.Options()
        self.arg = arg

    def supports(self, sde: SDE, schedule: Schedule) -> None:
        """Raise :class:`bench.Unsupported` if this sampler (with its options) cannot run on
        ``sde`` and ``schedule``."""

    def batch_dependent(self) -> str | None:
        """Why this sampler's samples depend on the batch, or ``None`` (see ``batch_dependence``)."""
        return self.batch_dependence

    def row_columns(self) -> dict[str, Any]:
        """Columns this sampler adds to its rows once it has sampled (e.g. where each setting
        of a wrapped library came from); none by default."""
        return {}

    @abc.abstractmethod
    def nfe_nominal(self, steps: int) -> int | None:
        """The evaluations per trajectory this sampler claims for ``steps`` steps (e.g. Heun's
        2N − 1); ``None`` when it cannot be known in advance (adaptive samplers)."""

    @abc.abstractmethod
    def sample(
        self,
        x_T: Tensor,
        grid: TimeGrid,
        model: ModelView,
        noise: Noise,
        callback: Callback | None = None,
    ) -> Tensor:
        """Run the sampler from the prior sample ``x_T`` over ``grid`` and return the sample.

        Args:
            x_T: the prior sample at t_0 = T, shaped ``(batch, *data_shape)``.
            grid: the times t_0 > … > t_{N−1} and the data end t_N = 0, with a(t_i), std(t_i).
            model: the model's views ``model.score``, ``model.eps``, ``model.denoise`` (each call
                one counted evaluation) and ``model.sde``.
            noise: fresh standard-normal noise shaped like its argument. A deterministic
                sampler never calls it (``bench order`` refuses a sampler that does). A
                sampler that wants the increments of one Brownian path per sample, the same
                at every N, builds them from it: ``StepNoise(noise, model.sde.T, "brownian")``
                or ``BrownianPath.of(noise, model.sde.T)`` (:mod:`bench.core.brownian`).
            callback: called after every step with ``{"i", "t", "x", ...}``.
        """
