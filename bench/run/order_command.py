"""The body of ``bench order`` (heavy imports live here): components from the registry, the
sweep of :mod:`bench.run.order` per sampler × SDE × schedule, and the rows it prints."""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.core.pc import PCSampler
from bench.core.sampler import Sampler
from bench.core.schedule import Schedule
from bench.core.sde import SDE
from bench.errors import BenchError
from bench.plugin.registry import Registry
from bench.run.order import DrewNoise, Measurement, fit_order, measure
from bench.run.order_stochastic import measure_strong, measure_weak
from bench.run.setup import OptionSet, canonical, canonical_specs

DEFAULT_SDES = ("ve", "vp", "subvp")
KINDS = ("flow", "weak", "strong")
"""What ``--kind`` measures: the deterministic order against the probability flow, or a
stochastic sampler's weak or strong order (:mod:`bench.run.order_stochastic`)."""
PC_DEFAULTS = ("euler_maruyama", "none")
"""The predictor and corrector of ``pc`` here: ``bench run``'s first predictor, no corrector."""


def build_sampler(registry: Registry, options: OptionSet, spec: str) -> Sampler:
    """The sampler of ``NAME[:ARG]`` with its ``-o`` options; one whose steps N do not set its
    grid (an adaptive solver) is refused."""
    name, _, arg = spec.partition(":")
    entry = registry.get("samplers", name)
    cls = entry.obj
    if cls.adaptive or not cls.uses_steps:
        raise BenchError(
            f"sampler {spec!r} chooses its own steps (adaptive): its error does not follow N, "
            f"so it has no order to measure; bench order takes fixed-step samplers"
        )
    if issubclass(cls, PCSampler):
        predictor, corrector = (
            registry.get(kind, name)
            for kind, name in zip(("predictors", "correctors"), PC_DEFAULTS, strict=True)
        )
        return cls(
            predictor.obj,
            corrector.obj,
            predictor_options=options.build("predictors", predictor.name, predictor.obj),
            corrector_options=options.build("correctors", corrector.name, corrector.obj),
        )
    return cls(options.build("samplers", entry.name, cls), arg or None)


def build_schedule(registry: Registry, options: OptionSet, spec: str) -> Schedule:
    name, _, arg = spec.partition(":")
    entry = registry.get("schedules", name)
    schedule = entry.obj(options.build("schedules", entry.name, entry.obj), arg or None)
    if schedule.fixed_steps() is not None:
        raise BenchError(f"schedule {spec!r} fixes the number of steps: no order to measure")
    return schedule


def sde_factory(registry: Registry, options: OptionSet, name: str) -> Any:
    entry = registry.get("sdes", name)
    values = options.build("sdes", entry.name, entry.obj)

    def make(N: int) -> SDE:
        return entry.obj(N, values)

    return make


def stochastic(spec: str, sampler: Sampler) -> BenchError:
    """The refusal of a sampler that drew noise."""
    built = (
        f" (here: predictor {PC_DEFAULTS[0]}, no corrector)"
        if isinstance(sampler, PCSampler)
        else ""
    )
    return BenchError(
        f"sampler {spec!r}{built} draws noise: it is stochastic, and --kind flow measures "
        f"deterministic samplers, whose N → ∞ limit is the probability-flow ODE's exact "
        f"solution; measure its weak and strong orders with --kind weak,strong, or give it "
        f"options that make it deterministic if it has them (e.g. -o ddim.eta=0)"
    )


def order_rows(registry: Registry, kw: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per sampler × SDE × schedule (see :func:`row`)."""
    options = OptionSet.parse(list(kw.get("options") or ()), registry)
    samplers = canonical_specs(registry, "samplers", tuple(kw["samplers"]))
    built = {spec: build_sampler(registry, options, spec) for spec in samplers}
    sdes = canonical(registry, "sdes", tuple(kw.get("sdes") or DEFAULT_SDES))
    given = canonical_specs(registry, "schedules", tuple(kw.get("schedules") or ()))
    steps = tuple(kw.get("steps") or ()) or None
    kinds = tuple(kw.get("kind") or ("flow",))
    if unknown := [k for k in kinds if k not in KINDS]:
        raise BenchError(f"--kind takes {', '.join(KINDS)}; got {', '.join(unknown)}")
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small float64 tensors: one thread is fastest
    try:
        for spec, sampler in built.items():
            for sde_name in sdes:
                for schedule_spec in given or (type(sampler).default_schedule,):
                    schedule = build_schedule(registry, options, schedule_spec)
                    make_sde = sde_factory(registry, options, sde_name)
                    schedule.check(make_sde(1))
                    for kind in kinds:
                        result, note = run_kind(kind, spec, sampler, make_sde, schedule, steps)
                        rows.append(row(spec, sde_name, schedule.spec, result, kind, note))
    finally:
        torch.set_num_threads(threads)
    return rows


def run_kind(
    kind: str,
    spec: str,
    sampler: Sampler,
    make_sde: Any,
    schedule: Schedule,
    steps: tuple[int, ...] | None,
) -> tuple[Measurement, str | None]:
    """One measurement of ``kind`` and its note, if any."""
    if kind == "strong":
        return measure_strong(sampler, make_sde, schedule, **_steps(steps))
    if kind == "weak":
        note = None
        if isinstance(sampler, PCSampler):
            note = "pc's last step is the predictor's, not the denoiser the limit assumes"
        return measure_weak(sampler, make_sde, schedule, **_steps(steps)), note
    try:
        return measure(sampler, make_sde, schedule, **_steps(steps)), None
    except DrewNoise:
        raise stochastic(spec, sampler) from None


def _steps(steps: tuple[int, ...] | None) -> dict[str, Any]:
    return {"steps": steps} if steps else {}


def row(
    sampler: str,
    sde: str,
    schedule: str,
    result: Measurement,
    kind: str = "flow",
    note: str | None = None,
) -> dict[str, Any]:
    """The JSON row: ``sampler``, ``sde``, ``schedule``, ``kind``, ``status``, ``order`` with
    its ``interval``, the fitted N, the local slopes, the sampler's first and last evaluation
    times (``start``, ``end``) beside the grid's, why the sweep stopped early, and every point."""
    points = [vars(p) for p in result.points]
    if all(p.error is None for p in result.points):
        reason = next((p.note for p in result.points if p.note), "no point could run")
        return _base(sampler, sde, schedule, "unsupported", points) | {
            "reason": reason,
            "kind": kind,
        }
    fit = fit_order(result.points)
    notes = [n for n in (note, result.stop, fit.note, _moved(result)) if n]
    return _base(sampler, sde, schedule, "ok", points) | {
        "kind": kind,
        "order": fit.order,
        "interval": None if fit.order is None else [fit.low, fit.high],
        "fit_steps": list(fit.steps),
        "local_slopes": list(fit.local),
        "start": result.start,
        "end": result.end,
        "grid_start": result.grid_start,
        "grid_end": result.grid_end,
        "note": "; ".join(notes) or None,
    }


def _base(sampler: str, sde: str, schedule: str, status: str, points: list) -> dict[str, Any]:
    return {
        "sampler": sampler,
        "sde": sde,
        "schedule": schedule,
        "status": status,
        "order": None,
        "interval": None,
        "points": points,
    }


def _moved(result: Measurement) -> str | None:
    """A note when the sampler starts or ends its evaluations off the grid's first/last time."""
    pairs = [(result.start, result.grid_start), (result.end, result.grid_end)]
    if all(a is None or b is None or math.isclose(a, b, rel_tol=1e-6) for a, b in pairs):
        return None
    return (
        f"evaluates from t = {result.start:.6g} to {result.end:.6g} (the grid: "
        f"{result.grid_start:.6g} to {result.grid_end:.6g}); the reference follows the sampler"
    )
