"""The built-in time schedules: the paper's uniform grid, EDM's ρ-polynomial, uniform log-SNR,
quadratic in time, SD3's time shift, and an explicit list read from a file."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import bench
from bench.core.schedule import Schedule, sigma_range, times_of_sigmas
from bench.core.sde import SDE, paper_linspace
from bench.errors import BenchError


def _fraction(i: int, N: int) -> float:
    return i / (N - 1) if N > 1 else 0.0


def _between(a: float, b: float, f: float) -> float:
    """(1 − f)·a + f·b: exact at both ends (a + f·(b − a) loses b to cancellation when |a| ≫ |b|)."""
    return (1.0 - f) * a + f * b


def _with_ends(sde: SDE, times: list[float]) -> list[float]:
    """Pin the end points to T and eps exactly (the inverse maps round at the last bit)."""
    times[0] = sde.T
    if len(times) > 1:
        times[-1] = sde.eps
    return times


class Uniform(Schedule):
    """The paper's grid linspace(T, eps, N), with the reference code's discrete conventions."""

    name = "uniform"
    paper = True

    def times(self, sde: SDE, steps: int) -> list[float]:
        return paper_linspace(sde.T, sde.eps, steps)


class EDM(Schedule):
    """Karras et al. (2022, Eq. 5): σ_i = (σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ.

    σ is the noise level of x/a(t), σ = std/a = e^{−λ}; its range defaults to the SDE's own,
    σ(eps) … σ(T), and ``sigma_min``/``sigma_max`` may narrow it (EDM uses 0.002 … 80).
    """

    name = "edm"
    aliases = ("karras",)

    @dataclasses.dataclass
    class Options:
        rho: float = 7.0
        sigma_min: float | None = None
        sigma_max: float | None = None

        def __post_init__(self) -> None:
            if not self.rho > 0:
                raise ValueError(f"rho must be positive, got {self.rho}")

    def check(self, sde: SDE) -> None:
        self.range(sde)

    def range(self, sde: SDE) -> tuple[float, float]:
        lo, hi = sigma_range(sde)
        s_min = lo if self.options.sigma_min is None else self.options.sigma_min
        s_max = hi if self.options.sigma_max is None else self.options.sigma_max
        tol = 1e-12 * hi
        if not lo - tol <= s_min < s_max <= hi + tol:
            raise BenchError(
                f"schedule edm: need {lo:.6g} <= sigma_min < sigma_max <= {hi:.6g} for the "
                f"{sde.name} SDE (σ = std/a between eps and T), got {s_min:g} and {s_max:g}"
            )
        return s_min, s_max

    def sigmas(self, sde: SDE, steps: int) -> list[float]:
        """σ_0 … σ_{N−1} of Eq. 5."""
        s_min, s_max = self.range(sde)
        inv = 1.0 / self.options.rho
        a, b = s_max**inv, s_min**inv
        return [(_between(a, b, _fraction(i, steps))) ** self.options.rho for i in range(steps)]

    def times(self, sde: SDE, steps: int) -> list[float]:
        times = times_of_sigmas(sde, self.sigmas(sde, steps))
        full = self.options.sigma_min is None and self.options.sigma_max is None
        return _with_ends(sde, times) if full else times


class LogSNR(Schedule):
    """Uniform in the log-SNR λ = log(a/std) between T and eps (Lu et al. 2022, 'logSNR')."""

    name = "logsnr"

    def times(self, sde: SDE, steps: int) -> list[float]:
        hi, lo = sde.log_snr(sde.eps), sde.log_snr(sde.T)
        lams = [lo + _fraction(i, steps) * (hi - lo) for i in range(steps)]
        return _with_ends(sde, [sde.t_of_log_snr(lam) for lam in lams])


class Quadratic(Schedule):
    """Quadratic in time, t_i = (√T + i/(N−1)(√eps − √T))², denser near the data.

    DDIM's quadratic time-step selection (Song, Meng & Ermon 2021, App. D.2) in the continuous
    form of DPM-Solver's 'time_quadratic'; DDIM's original code also stopped at 0.8·T.
    """

    name = "quadratic"

    def times(self, sde: SDE, steps: int) -> list[float]:
        a, b = math.sqrt(sde.T), math.sqrt(sde.eps)
        return _with_ends(sde, [(a + _fraction(i, steps) * (b - a)) ** 2 for i in range(steps)])


class Shift(Schedule):
    """SD3's time shift (Esser et al. 2024, §5.3.2): t' = s·t/(1 + (s − 1)·t) of a uniform grid.

    On the flow SDE (σ̃ = std/a = t/(1 − t)) the shift multiplies the noise level, σ̃(t') = s·σ̃(t),
    i.e. λ(t') = λ(t) − log s; that is how it is applied on every SDE (t' = t(λ(t) − log s)), so
    on flow it is SD3's formula and diffusers' ``shift`` (FlowMatchEulerDiscreteScheduler,
    default 1; SD3 ships 3). The unshifted grid u_i is uniform in t between the pre-images of T
    and eps, so the shifted grid runs from T to eps like every schedule (diffusers' own grid
    starts at σ = 1 and shifts ``linspace(1, shift(1/1000), N)``: its low end is shifted twice).
    ``shift = 1`` is ``linspace(T, eps, N)`` without the reference code's discrete conventions;
    diffusers' resolution-dependent shifting with μ is ``shift = e^μ``.
    """

    name = "shift"
    aliases = ("sd3",)

    @dataclasses.dataclass
    class Options:
        shift: float = 3.0

        def __post_init__(self) -> None:
            if not (math.isfinite(self.shift) and self.shift > 0):
                raise ValueError(f"shift must be a positive number, got {self.shift}")

    def shifted(self, sde: SDE, t: float, power: float = 1.0) -> float:
        """t(λ(t) − power·log s): the shift (power 1) or its inverse (power −1)."""
        return sde.t_of_log_snr(sde.log_snr(t) - power * math.log(self.options.shift))

    def times(self, sde: SDE, steps: int) -> list[float]:
        hi, lo = self.shifted(sde, sde.T, -1.0), self.shifted(sde, sde.eps, -1.0)
        base = [_between(hi, lo, _fraction(i, steps)) for i in range(steps)]
        return _with_ends(sde, [self.shifted(sde, u) for u in base])


class FromFile(Schedule):
    """An explicit grid from a text file: file:PATH (times t, or σ's after a line 'sigma').

    One number per line, from the largest to the smallest; blank lines and ``#`` comments are
    ignored. A first line ``t`` or ``sigma`` says what the numbers are (default t). σ is the
    noise level of x/a(t) (std/a, EDM's σ), so published σ tables (AYS, GITS) work on any SDE. A
    final 0 (the data end) may be given or left out; the number of steps is the file's.
    """

    name = "file"
    takes_arg = True

    def __init__(self, options=None, arg: str | None = None) -> None:
        super().__init__(options, arg)
        if not arg:
            raise BenchError("the file schedule needs a path: --schedules file:PATH")
        self.unit, self.values = read_schedule_file(Path(arg))

    def fixed_steps(self) -> int:
        return len(self.values)

    def describe(self) -> dict:
        return {"unit": self.unit, "values": [v for _, v in self.values]}

    def check(self, sde: SDE) -> None:
        self.times(sde, len(self.values))

    def times(self, sde: SDE, steps: int) -> list[float]:
        times = (
            times_of_sigmas(sde, [v for _, v in self.values])
            if self.unit == "sigma"
            else [v for _, v in self.values]
        )
        for (line, value), t in zip(self.values, times):
            if not sde.eps * (1 - 1e-9) <= t <= sde.T * (1 + 1e-12):
                what = f"sigma {value:g} (t = {t:.6g})" if self.unit == "sigma" else f"t = {t:g}"
                raise BenchError(
                    f"{self.arg}:{line}: {what} lies outside the {sde.name} SDE's time range "
                    f"[eps, T] = [{sde.eps:g}, {sde.T:g}]"
                )
        return times


def read_schedule_file(path: Path) -> tuple[str, list[tuple[int, float]]]:
    """(unit, [(line number, value)]) of a schedule file, checked strictly decreasing."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"schedule file {str(path)!r} is unreadable: {exc}") from None
    unit, values = "t", []
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if not values and unit == "t" and text.lower() in ("t", "sigma"):
            unit = text.lower()
            continue
        try:
            value = float(text)
        except ValueError:
            raise BenchError(f"{path}:{number}: {text!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise BenchError(f"{path}:{number}: {text!r} is not a finite non-negative number")
        if values and not value < values[-1][1]:
            raise BenchError(
                f"{path}:{number}: {value:g} does not decrease (previous {values[-1][1]:g}); "
                f"list the grid from the largest {unit} to the smallest"
            )
        values.append((number, value))
    if values and values[-1][1] == 0:
        values.pop()  # the data end, which every grid has anyway
    if len(values) < 2:
        raise BenchError(f"{path}: a schedule needs at least two points before the data end")
    return unit, values


@bench.hookimpl
def register_schedules(register):
    register(Uniform)
    register(EDM)
    register(LogSNR)
    register(Quadratic)
    register(Shift)
    register(FromFile)
