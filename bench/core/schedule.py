"""Time schedules: the grid of times a sampler walks, as data.

A schedule with N steps gives t_0 = T > t_1 > … > t_{N−1} ≥ eps, and the grid ends with
t_N = 0, the data (σ = 0, α = 1). Samplers evaluate the model at t_0 … t_{N−1} only; the step into
t_N is each sampler's last (EDM's final step to σ = 0, the PC sampler's noise removal). On the
``uniform`` schedule the visited times are exactly the reference code's ``linspace(T, eps, N)``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from bench.core.options import NoOptions
from bench.core.sde import SDE
from bench.errors import BenchError


@dataclass(frozen=True)
class TimeGrid:
    """The times of one run: ``t[0] = T > … > t[N−1] ≥ eps``, ``t[N] = 0`` (the data).

    Attributes:
        t: the N + 1 times, float64 on the host.
        alpha: a(t_i) of the perturbation kernel, 1 at the data end.
        sigma: std(t_i) of the perturbation kernel, 0 at the data end.
        paper: the reference code's discrete conventions apply (only the ``uniform`` schedule):
            predictors use dt = −1/N and the discrete tables at k = floor(t·(N−1)).
    """

    t: tuple[float, ...]
    alpha: tuple[float, ...]
    sigma: tuple[float, ...]
    paper: bool = False

    @classmethod
    def build(cls, sde: SDE, times: list[float], paper: bool = False) -> TimeGrid:
        """The grid of ``times`` (t_0 … t_{N−1}) followed by the data end t_N = 0."""
        coefs = [sde.marginal_coef(t) for t in times]
        return cls(
            tuple(times) + (0.0,),
            tuple(a for a, _ in coefs) + (1.0,),
            tuple(s for _, s in coefs) + (0.0,),
            paper,
        )

    @property
    def steps(self) -> int:
        """N, the number of steps (and of visited times)."""
        return len(self.t) - 1

    def pairs(self) -> Iterator[tuple[int, float, float]]:
        """(i, t_i, t_{i+1}) for every step."""
        for i in range(self.steps):
            yield i, self.t[i], self.t[i + 1]

    def lambdas(self) -> list[float]:
        """λ_i = log(a_i/σ_i) (+inf at the data end)."""
        return [math.log(a / s) if s > 0 else math.inf for a, s in zip(self.alpha, self.sigma)]


class Schedule(abc.ABC):
    """A time schedule, selected with ``--schedules NAME[:ARG]``.

    Subclasses implement :meth:`times`. ``Options`` (a dataclass) holds their parameters, set with
    ``-o schedule.NAME.KEY=VALUE``; ``arg`` is the ``ARG`` of ``NAME:ARG`` (e.g. a file path).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    takes_arg: ClassVar[bool] = False
    paper: ClassVar[bool] = False
    """Whether predictors follow the reference code's discrete conventions on this grid."""

    def __init__(self, options: Any = None, arg: str | None = None) -> None:
        self.options = options if options is not None else self.Options()
        if arg is not None and not self.takes_arg:
            raise BenchError(f"schedule {self.name!r} takes no argument (got {self.name}:{arg})")
        self.arg = arg

    @property
    def spec(self) -> str:
        """``NAME`` or ``NAME:ARG``, as rows record it."""
        return self.name if self.arg is None else f"{self.name}:{self.arg}"

    def describe(self) -> dict[str, Any]:
        """What defines the grid besides the SDE and N (part of the cell id): the options."""
        return dataclasses.asdict(self.options)

    def fixed_steps(self) -> int | None:
        """The number of steps if the schedule fixes it (a file of times), else ``None``."""
        return None

    def check(self, sde: SDE) -> None:
        """Refuse a schedule that cannot serve ``sde`` (:class:`bench.BenchError`), before any work."""

    @abc.abstractmethod
    def times(self, sde: SDE, steps: int) -> list[float]:
        """t_0 = T > … > t_{N−1} ≥ eps, N = ``steps`` values (the data end is added by ``grid``)."""

    def grid(self, sde: SDE, steps: int) -> TimeGrid:
        """The time grid for ``sde`` with ``steps`` steps, checked to be strictly decreasing."""
        times = self.times(sde, steps)
        for i in range(1, len(times)):
            if not times[i] < times[i - 1]:
                raise BenchError(
                    f"schedule {self.spec!r} is not strictly decreasing at point {i} "
                    f"({times[i - 1]!r} then {times[i]!r}); use fewer steps"
                )
        return TimeGrid.build(sde, times, self.paper)


def sigma_range(sde: SDE) -> tuple[float, float]:
    """(σ̃(eps), σ̃(T)) with σ̃ = std/a = e^{−λ}, EDM's noise level of x/a (Karras et al. 2022)."""
    return math.exp(-sde.log_snr(sde.eps)), math.exp(-sde.log_snr(sde.T))


def times_of_sigmas(sde: SDE, sigmas: list[float]) -> list[float]:
    """The times at which σ̃(t) takes the given values (σ̃ = e^{−λ})."""
    return [sde.t_of_log_snr(-math.log(s)) for s in sigmas]
