"""Automatic tuning of the Langevin signal-to-noise ratio r (Song et al. 2021, Alg. 4/5 and
App. G, Table 5, where r was tuned by hand on a 0.01 grid).

For each target — one (SDE, predictor, corrector, steps, corrector steps, probability flow) — the
search evaluates a coarse grid of SNRs, then bisects around the best, every SNR on the same seeds:
a seed fixes each sample's prior noise and each batch's step noise (common random numbers), so
two SNRs are compared by their **paired** differences over seeds, whose interval is far tighter
than either value's own. A side of the bracket around the best is refined only while its
neighbour is significantly worse than the best (the paired interval excludes 0); the search
stops when no side is (the remaining interval is inside the noise), when the gaps reach the
resolution, or when the target's budget of cells is spent. The chosen SNR comes with every
evaluated SNR that is not significantly worse than it: its uncertainty.

The cells are ordinary rows of a run folder (:class:`bench.run.sweep.Sweep`, :func:`run_cell`,
:class:`bench.run.store.RunStore`), so ``bench report`` and ``bench compare`` read them; rerunning
the same command skips the cells already done.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from bench.errors import BenchError

MAX_SNR = 4.0
"""The search never extends the grid above this SNR."""


class TargetUnsupported(BenchError):
    """A configuration the model or the SDE cannot run (the sweep's ``unsupported`` row)."""


@dataclass(frozen=True)
class Target:
    """One sampler configuration whose SNR is tuned."""

    sde: str
    predictor: str
    corrector: str
    steps: int
    corrector_steps: int
    probability_flow: bool

    @property
    def label(self) -> str:
        pf = "(pf)" if self.probability_flow else ""
        extra = f"×{self.corrector_steps}" if self.corrector_steps != 1 else ""
        return f"{self.sde} {self.predictor}{pf}+{self.corrector}{extra} N={self.steps}"


@dataclass(frozen=True)
class Search:
    """How the search runs.

    Attributes:
        metric: the results column to optimise (e.g. ``fid``, ``logp_gap``, ``swd``).
        sign: +1 to minimise it, −1 to maximise it.
        coarse: the first grid of SNRs.
        budget: most corrector cells (SNRs × seeds) per target.
        resolution: the finest SNR step; new SNRs are rounded to multiples of it (paper: 0.01).
        confidence: level of the paired intervals.
    """

    metric: str
    sign: int = 1
    coarse: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
    budget: int = 36
    resolution: float = 0.01
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not self.coarse or min(self.coarse) <= 0:
            raise BenchError("the coarse SNR grid needs positive values")
        if self.resolution <= 0:
            raise BenchError("the SNR resolution must be > 0")


@dataclass
class Curve:
    """Metric values (signed: lower is better) per SNR and seed."""

    values: dict[float, dict[int, float]] = field(default_factory=dict)
    confidence: float = 0.95

    @property
    def snrs(self) -> list[float]:
        return sorted(self.values)

    def mean(self, snr: float) -> float:
        vals = list(self.values[snr].values())
        return sum(vals) / len(vals) if vals else math.inf

    def ci(self, snr: float) -> float:
        return halfwidth(list(self.values[snr].values()), self.confidence)

    def best(self) -> float:
        return min(self.snrs, key=lambda s: (self.mean(s), s))

    def paired(self, a: float, b: float) -> tuple[float, float]:
        """Mean and CI half-width of value(a) − value(b) over the seeds both have."""
        return paired(self.values[a], self.values[b], self.confidence)

    def worse(self, snr: float, than: float) -> bool | None:
        """Whether ``snr`` is significantly worse than ``than`` (``None``: no interval)."""
        diff, hw = self.paired(snr, than)
        if math.isinf(diff):
            return diff > 0
        if math.isnan(hw):
            return None
        return diff - hw > 0

    def neighbours(self, snr: float) -> tuple[float | None, float | None]:
        snrs = self.snrs
        i = snrs.index(snr)
        return (snrs[i - 1] if i > 0 else None), (snrs[i + 1] if i + 1 < len(snrs) else None)

    def plausible(self) -> list[float]:
        """The SNRs not significantly worse than the best (the best itself included)."""
        best = self.best()
        return [s for s in self.snrs if s == best or self.worse(s, best) is False]


def halfwidth(values: list[float], confidence: float = 0.95) -> float:
    """Student-t half-width for the mean of ``values`` (NaN for fewer than two; inf if any is)."""
    from scipy import stats

    if len(values) < 2:
        return math.nan
    if any(math.isinf(v) for v in values):
        return math.inf
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * sd / math.sqrt(len(values))


def paired(
    a: dict[int, float], b: dict[int, float], confidence: float = 0.95
) -> tuple[float, float]:
    """Mean and half-width of a − b over the seeds present in both (common random numbers)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return math.nan, math.nan
    diffs = [a[s] - b[s] if not (math.isinf(a[s]) and math.isinf(b[s])) else 0.0 for s in seeds]
    if any(math.isinf(d) for d in diffs):
        return (math.inf if any(d > 0 for d in diffs) else -math.inf), math.nan
    return sum(diffs) / len(diffs), halfwidth(diffs, confidence)


def snap(value: float, resolution: float) -> float:
    """``value`` rounded to a multiple of ``resolution`` (at least ``resolution``)."""
    return round(max(resolution, round(value / resolution) * resolution), 10)


def proposals(curve: Curve, search: Search) -> tuple[list[float], str | None]:
    """The next SNRs to evaluate, or none and why the search stops (``noise``/``resolution``).

    The best SNR's neighbours are refined (a midpoint, snapped to the resolution) on each side
    whose neighbour is significantly worse than the best, or when the seeds give no interval.
    A best SNR at the upper edge of the grid doubles the range outward (at the lower edge it
    halves it) when its inner neighbour is significantly worse: the curve still falls there.
    """
    best = curve.best()
    left, right = curve.neighbours(best)
    out: list[float] = []
    inner = left if right is None else right  # at an edge: extend if the curve still falls
    falling = inner is None or curve.worse(inner, best) is not False
    if right is None and best * 2 <= MAX_SNR and falling:
        out.append(snap(best * 2, search.resolution))
    if left is None and best / 2 >= search.resolution and falling:
        out.append(snap(best / 2, search.resolution))
    reasons = []
    for side in (left, right):
        if side is None:
            continue
        if abs(side - best) <= search.resolution * (1 + 1e-9):
            reasons.append("resolution")
            continue
        if curve.worse(side, best) is False:
            reasons.append("noise")
            continue
        out.append(snap(best + (side - best) / 2, search.resolution))
    fresh = [s for s in dict.fromkeys(out) if s not in curve.values]
    if fresh:
        return fresh, None
    return [], "noise" if "noise" in reasons else "resolution"


class Runner(Protocol):
    """What the search needs: run a target's cells at some SNRs, and read a column back."""

    seeds: tuple[int, ...]

    def run(self, target: Target, snrs: list[float | None]) -> None: ...

    def values(self, target: Target, snr: float | None, column: str) -> dict[int, float]: ...


@dataclass
class Outcome:
    """A target's tuning: the curve, the choice and its uncertainty, and the comparisons."""

    target: Target
    metric: str
    chosen: float
    plausible: tuple[float, float]
    bracket: tuple[float | None, float | None]
    stop: str
    cells: int
    curve: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "target": dataclasses.asdict(self.target)}


def tune_target(
    runner: Runner,
    target: Target,
    search: Search,
    include: tuple[float, ...] = (),
    baselines: tuple[str, ...] = (),
    say: Callable[[str], None] = lambda _: None,
) -> Outcome:
    """Tune one target's SNR (see the module docstring); ``include`` SNRs are always evaluated
    (e.g. the paper's 0.16) and compared; ``baselines`` are predictors run without a corrector
    at the same steps and seeds, compared with the chosen SNR."""
    seeds = len(runner.seeds)
    curve = Curve(confidence=search.confidence)

    def evaluate(snrs: list[float]) -> None:
        runner.run(target, list(snrs))
        for snr in snrs:
            curve.values[snr] = {
                s: search.sign * v for s, v in runner.values(target, snr, search.metric).items()
            }

    first = sorted({snap(s, search.resolution) for s in (*search.coarse, *include)})
    if len(first) * seeds > search.budget:
        raise BenchError(
            f"the budget ({search.budget} cells) is smaller than the coarse grid "
            f"({len(first)} SNRs × {seeds} seeds): raise --budget or shorten --coarse"
        )
    evaluate(first)
    say(f"{target.label}: coarse grid {first} → best {curve.best():g}")
    while True:
        nxt, stop = proposals(curve, search)
        room = (search.budget - len(curve.values) * seeds) // seeds
        if stop is None and room < 1:
            stop = "budget"
        if stop is not None:
            break
        evaluate(nxt[:room])
        say(f"{target.label}: refined at {nxt[:room]} → best {curve.best():g}")
    best = curve.best()
    plausible = curve.plausible()
    return Outcome(
        target=target,
        metric=search.metric,
        chosen=best,
        plausible=(min(plausible), max(plausible)),
        bracket=curve.neighbours(best),
        stop=stop,
        cells=len(curve.values) * seeds,
        curve=_curve_rows(curve, search.sign),
        comparisons=_comparisons(runner, target, search, curve, include, baselines),
    )


def _curve_rows(curve: Curve, sign: int) -> list[dict[str, Any]]:
    best = curve.best()
    rows = []
    for snr in curve.snrs:
        diff, hw = curve.paired(snr, best)
        rows.append(
            {
                "snr": snr,
                "mean": sign * curve.mean(snr),
                "ci": curve.ci(snr),
                "seeds": len(curve.values[snr]),
                "diff_vs_best": sign * diff,
                "diff_ci": hw,
                "worse": curve.worse(snr, best) if snr != best else False,
            }
        )
    return rows


def _comparisons(
    runner: Runner,
    target: Target,
    search: Search,
    curve: Curve,
    include: tuple[float, ...],
    baselines: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Chosen SNR against each ``include`` SNR and each predictor-only baseline (paired)."""
    best = curve.best()
    chosen = curve.values[best]
    out = []
    for snr in include:
        key = snap(snr, search.resolution)
        if key != best and key in curve.values:
            out.append(_compare(f"snr {key:g}", chosen, curve.values[key], search))
    for predictor in baselines:
        base = dataclasses.replace(target, predictor=predictor, corrector="none")
        runner.run(base, [None])
        label = f"{predictor} (no corrector)"
        try:
            values = runner.values(base, None, search.metric)
        except TargetUnsupported as exc:
            out.append({"against": label, "verdict": f"not run: {exc}"})
            continue
        other = {s: search.sign * v for s, v in values.items()}
        out.append(_compare(label, chosen, other, search))
    return out


def _compare(
    label: str, chosen: dict[int, float], other: dict[int, float], search: Search
) -> dict[str, Any]:
    diff, hw = paired(chosen, other, search.confidence)
    if math.isnan(hw) and not math.isinf(diff):
        verdict = "no interval (one seed)"
    elif diff + hw < 0 or diff == -math.inf:
        verdict = "tuned is better"
    elif diff - hw > 0 or diff == math.inf:
        verdict = "tuned is worse"
    else:
        verdict = "indistinguishable"
    values = [search.sign * v for v in other.values()]
    return {
        "against": label,
        "value": sum(values) / len(values) if values else math.nan,
        "value_ci": halfwidth(values, search.confidence),
        "diff": search.sign * diff,
        "diff_ci": hw,
        "verdict": verdict,
    }


# -- running the cells through the sweep machinery ----------------------------------------------
class SweepRunner:
    """Runs a target's cells as rows of one run folder, through :class:`bench.run.sweep.Sweep`.

    Args:
        sweep: a sweep built from the command line (its spec gives everything but the
            target's fields and the SNRs, which each call sets).
    """

    def __init__(self, sweep: Any) -> None:
        self.sweep = sweep
        self.seeds: tuple[int, ...] = sweep.spec.seeds
        self.ctx = sweep.context()
        self.snrs: set[float] = set()
        self.cells_run = 0

    def __enter__(self) -> SweepRunner:
        import torch

        torch.set_num_threads(self.sweep.threads)
        self.sweep.store.prepare()
        self.sweep.store.lock()
        self.sweep.prepare_metrics()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sweep.store.unlock()

    def run(self, target: Target, snrs: list[float | None]) -> None:
        from bench.run.cells import run_cell
        from bench.run.sweep import Progress

        corrector = target.corrector if snrs != [None] else "none"
        spec = dataclasses.replace(
            self.sweep.spec,
            sdes=(target.sde,),
            samplers=("pc",),
            predictors=(target.predictor,),
            correctors=(corrector,),
            steps=(target.steps,),
            snrs=tuple(s for s in snrs if s is not None) or self.sweep.spec.snrs,
            corrector_steps=(target.corrector_steps,),
            probability_flow=(target.probability_flow,),
        )
        sweep = dataclasses.replace(self.sweep, spec=spec)
        cells = sweep.cells()
        self.snrs.update(s for s in snrs if s is not None)
        sweep.open_store(len(cells))
        todo = sweep.cells_to_run(cells, self.ctx)
        with Progress(todo, sweep.progress) as bars:
            self.ctx.on_batch = bars.samples
            for cell in todo:
                row = run_cell(cell, self.ctx)
                sweep.store.append(row)
                self.cells_run += 1
                bars.cell_done()
                if row["status"] == "error" and sweep.fail_fast:
                    raise BenchError(f"--fail-fast: cell {cell.id} failed: {row['reason']}")

    def values(self, target: Target, snr: float | None, column: str) -> dict[int, float]:
        """The column per seed for the target at ``snr`` (``None``: no corrector); a cell that
        diverged counts as +inf (worse than anything); one that errored is an error."""
        out: dict[int, float] = {}
        for row in self.sweep.store.rows():
            if not _matches(row, target, snr):
                continue
            if row["status"] == "diverged":
                out[row["seed"]] = math.inf
            elif row["status"] == "ok":
                value = row.get(column)
                if value is None:
                    raise BenchError(f"the rows have no column {column!r} (is its metric on?)")
                out[row["seed"]] = float(value)
            elif row["status"] == "unsupported":
                raise TargetUnsupported(f"{target.label}: unsupported: {row['reason']}")
            else:
                raise BenchError(f"{target.label}, snr {snr}: {row['status']}: {row['reason']}")
        return {s: out[s] for s in self.seeds if s in out}


def _matches(row: dict[str, Any], target: Target, snr: float | None) -> bool:
    corrector = target.corrector if snr is not None else "none"
    if (row.get("sde"), row.get("predictor"), row.get("corrector")) != (
        target.sde,
        target.predictor,
        corrector,
    ):
        return False
    if row.get("steps") != target.steps or row.get("sampler") != "pc":
        return False
    if bool(row.get("probability_flow")) != (
        target.probability_flow and target.predictor != "none"
    ):
        return False
    if snr is None:
        return True
    return row.get("corrector_steps") == target.corrector_steps and math.isclose(
        float(row.get("snr") or math.nan), snr, rel_tol=1e-9, abs_tol=1e-12
    )
