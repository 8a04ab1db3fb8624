"""The body of ``bench profile`` (heavy imports live here)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import click
import pandas as pd
import torch

import bench
from bench.core.pc import PCSampler
from bench.errors import BenchError, Unsupported
from bench.run import profile
from bench.run.components import Components
from bench.run.conditioning import CellModel
from bench.run.grid import Cell
from bench.run.setup import Environment, canonical, canonical_specs, machine_info, tf32_enabled
from bench.run.store import RunStore
from bench.run.sweep import say


def profile_cell(env: Environment, kw: dict[str, Any]) -> Cell:
    """The one configuration ``bench profile`` times, as a cell of a sweep."""
    registry = env.registry
    (sde,) = canonical(registry, "sdes", (kw["sde"],)) if kw.get("sde") else env.sdes[:1]
    (sampler,) = canonical_specs(registry, "samplers", (kw["sampler"],))
    parts = Components(env)
    schedule = kw.get("schedule") or parts.default_schedule(sampler)
    (schedule,) = canonical_specs(registry, "schedules", (schedule,))
    pc = sampler == PCSampler.name
    (predictor,) = canonical(registry, "predictors", (kw["predictor"],)) if pc else (None,)
    (corrector,) = canonical(registry, "correctors", (kw["corrector"],)) if pc else (None,)
    fields = dict(
        model=kw["model"],
        sde=sde,
        sampler=sampler,
        schedule=schedule,
        predictor=predictor,
        corrector=corrector,
        probability_flow=False if pc else None,
        steps=(parts.fixed_steps(schedule) or kw["steps"]) if parts.uses_steps(sampler) else None,
        snr=kw["snr"] if pc and corrector != "none" else None,
        corrector_steps=kw["corrector_steps"] if pc and corrector != "none" else None,
        seed=0,
        samples=kw["batch_size"],
        batch_size=kw["batch_size"],
        denoise=True if pc else None,
        dtype=kw["dtype"],
        metrics=(),
    )
    cell = Cell(**fields, options=parts.resolved_options(fields))
    if env.model.classes:  # a conditional model runs guided, labels balanced
        cell = dataclasses.replace(cell, guidance=kw.get("guidance") or 1.0, labels="balanced")
    return cell


def make_setup(env: Environment, cell: Cell, steps: int | None = None) -> profile.Setup:
    """The profiled setup of ``cell`` (on a grid of ``steps`` steps if given)."""
    parts = Components(env)
    if steps is not None:
        cell = dataclasses.replace(cell, steps=steps)
    try:
        built = parts.build(cell)
    except Unsupported as exc:
        raise BenchError(f"cannot profile this configuration: {exc.reason}") from None
    x_T = profile.default_x(env.model, built.sde, cell.batch_size, env.device, env.state_dtype)
    model = CellModel(cell, env, built.sde)  # the guided function of a conditional model
    model.start_batch(0, cell.batch_size)
    return profile.Setup(
        built.sde,
        built.grid,
        built.sampler,
        model.fn,
        env.model.native,
        x_T,
        env.device,
        scheduler_config=env.model.scheduler_config,
    )


def run_profile(session: Any, kw: dict[str, Any]) -> list[dict[str, Any]]:
    env = Environment.create(session.registry, {**kw, "sdes": (kw["sde"],) if kw["sde"] else ()})
    for warning in env.warnings:
        say(warning)
    torch.set_num_threads(env.threads)
    cell = profile_cell(env, kw)
    setup = make_setup(env, cell)
    say(
        f"profiling {env.model.spec} · {cell.sde} · {cell.label} · {cell.schedule} · "
        f"N={cell.steps} · batch {cell.batch_size} · {env.device} · threads {env.threads} · "
        f"{kw['repeats']} repeats"
    )
    try:
        measurements = profile.profile(setup, kw["repeats"], kw["calls"])
    except Unsupported as exc:  # e.g. the VP chain's beta_k >= 1 at small N
        raise BenchError(f"cannot profile this configuration: {exc.reason}") from None
    if env.model.classes:
        measurements += guided_measurements(env, cell, setup, kw)
    agreement, matches = compare_compiled(env, kw, setup)
    base = {
        "kind": "profile",
        "model": env.model.spec,
        "sde": cell.sde,
        "sampler": cell.sampler,
        "schedule": cell.schedule,
        "predictor": cell.predictor,
        "corrector": cell.corrector,
        "steps": cell.steps,
        "snr": cell.snr,
        "corrector_steps": cell.corrector_steps,
        "guidance": cell.guidance,
        "guidance_batch": env.guidance_batch if cell.guidance is not None else None,
        "batch_size": cell.batch_size,
        "device": str(env.device),
        "dtype": env.dtype,
        "eps": setup.sde.eps,
        "threads": env.threads,
        "compile": env.compile_mode,
        "tf32": tf32_enabled(env.device),
        "compiled_vs_eager_rel_diff": agreement,
        "compiled_matches_eager": matches,
        "torch": torch.__version__,
        "sde_bench": bench.__version__,
        "syncs_per_step": profile.count_syncs(setup, make_setup(env, cell, steps=5)),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    rows = profile.rows(measurements, base)
    add_two_pass_ratio(rows, env.guidance_batch)
    for row in rows:
        row["cell_id"] = f"profile-{row['variant']}-{row['started_at']}"
    click.echo(_table(rows))
    if kw["out"]:
        store = RunStore(kw["out"])
        store.prepare()
        store.write_meta({"kind": "profile", "options": kw, "machine": machine_info(env.device)})
        for row in rows:
            store.append(row)
        say(f"rows: {store.csv_path}")
    if matches is False:
        say("error: the compiled network's samples differ from the eager run's beyond tolerance")
        raise click.exceptions.Exit(1)
    return rows


def guided_measurements(
    env: Environment, cell: Cell, setup: profile.Setup, kw: dict[str, Any]
) -> list[profile.Measurement]:
    """A conditional model's guided evaluation as one forward of 2B and as two of B."""
    from bench.run.profile_guidance import guided_batch

    fn = env.conditional_fn(setup.sde)
    labels = (torch.arange(cell.batch_size) % env.model.classes).to(env.device)
    return guided_batch(setup, fn, labels, cell.guidance or 1.0, kw["calls"], kw["repeats"])


def add_two_pass_ratio(rows: list[dict[str, Any]], batching: str) -> None:
    """``ratio_vs_two_passes`` of the ``guided_2b`` and ``guided_split`` rows (median and
    fastest), if profiled; says the ratio of ``batching``, the way this device's runs take."""
    by = {r["variant"]: r for r in rows}
    if "guided_2b" not in by:
        return
    two = by["two_passes"]
    for name in ("guided_2b", "guided_split"):
        one = by[name]
        one["ratio_vs_two_passes"] = one["wall_s"] / two["wall_s"]
        one["ratio_vs_two_passes_min"] = one["wall_s_min"] / two["wall_s_min"]
    used = by["guided_2b" if batching == "joint" else "guided_split"]
    other = by["guided_split" if batching == "joint" else "guided_2b"]
    what = {"joint": "one forward of 2B", "split": "two forwards of B"}
    say(
        f"guided evaluation as runs here take it ({batching}: {what[batching]}): "
        f"{used['ratio_vs_two_passes']:.3f}× a hand-written pair of forwards of B (median; "
        f"fastest runs {used['ratio_vs_two_passes_min']:.3f}×); "
        f"{'split' if batching == 'joint' else 'joint'}: {other['ratio_vs_two_passes']:.3f}×"
    )


def compare_compiled(
    env: Environment, kw: dict[str, Any], setup: profile.Setup
) -> tuple[float | None, bool | None]:
    """With ``--compile``: the relative difference of compiled and eager samples, and whether
    it is within the dtype's tolerance (both ``None`` without ``--compile``)."""
    if not env.compile_mode:
        return None, None
    from bench.run.setup import load_model

    eager = load_model(env.registry, kw["model"], env.device, env.state_dtype, env.options)
    eager_setup = dataclasses.replace(setup, fn=env.model_fn(setup.sde, eager))
    agreement = profile.agreement(setup, eager_setup)
    tolerance = profile.COMPILE_TOLERANCE[env.dtype]
    matches = agreement <= tolerance
    say(
        f"compiled vs eager samples: relative difference {agreement:.3g} (same noise; "
        f"tolerance {tolerance:g} for {env.dtype}): {'ok' if matches else 'MISMATCH'}"
    )
    return agreement, matches


def _table(rows: list[dict[str, Any]]) -> str:
    frame = pd.DataFrame(rows)[
        [
            "variant",
            "nfe",
            "wall_s",
            "wall_s_iqr",
            "wall_s_min",
            "s_per_nfe",
            "ratio_vs_bare_forward",
            "ratio_vs_minimal",
            "ratio_vs_minimal_min",
        ]
    ]
    numeric = frame.columns.drop("variant")
    frame[numeric] = frame[numeric].apply(pd.to_numeric)  # a column of None prints "-", not "None"
    frame["us_per_nfe"] = frame.pop("s_per_nfe") * 1e6
    frame = frame.rename(
        columns={
            "ratio_vs_bare_forward": "×bare",
            "ratio_vs_minimal": "×minimal",
            "ratio_vs_minimal_min": "×minimal(min)",
        }
    )
    return (
        frame.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}")
        + "\nwall_s: median of the repeats (wall_s_iqr its interquartile range); "
        "wall_s_min: the fastest; ×: ratios of medians (min: of the fastest runs)"
    )
