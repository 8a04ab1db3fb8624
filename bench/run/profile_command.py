"""The body of ``bench profile`` (heavy imports live here)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import click
import pandas as pd
import torch

import bench
from bench.core.options import apply_sde_defaults
from bench.errors import BenchError, Unsupported
from bench.run import profile
from bench.run.cells import (
    DTYPES,
    OptionSet,
    check_pairing,
    guard_cpu_autocast,
    machine_info,
    resolve_device,
    resolve_threads,
    tf32_enabled,
    with_autocast,
)
from bench.run.store import RunStore
from bench.run.sweep import canonical, load_model, say


def run_profile(session: Any, kw: dict[str, Any]) -> list[dict[str, Any]]:
    registry = session.registry
    device = resolve_device(kw["device"])
    dtype = DTYPES[kw["dtype"]]
    model = load_model(registry, kw["model"], device, dtype)
    if kw["compile_mode"]:
        model.compile(kw["compile_mode"])
    warning = guard_cpu_autocast(kw["dtype"], device)
    if warning:
        say(warning)
    threads = resolve_threads(kw["threads"], model, device)
    torch.set_num_threads(threads)
    (sde_name,) = canonical(registry, "sdes", (kw["sde"],))
    (predictor,) = canonical(registry, "predictors", (kw["predictor"],))
    (corrector,) = canonical(registry, "correctors", (kw["corrector"],))
    options = OptionSet.parse(list(kw["options"]), registry)
    apply_sde_defaults(options.values, model.sde_defaults, (sde_name,))
    sde_entry = registry.get("sdes", sde_name)
    sde = sde_entry.obj(kw["steps"], options.build("sdes", sde_name, sde_entry.obj))
    try:
        check_pairing(
            model,
            sde,
            registry.get("predictors", predictor).obj,
            registry.get("correctors", corrector).obj,
        )
    except Unsupported as exc:
        raise BenchError(f"cannot profile this configuration: {exc.reason}") from None
    score = with_autocast(model.score_fn(sde), device, kw["dtype"])
    setup = profile.Setup(
        sde,
        score,
        predictor,
        corrector,
        kw["snr"],
        kw["corrector_steps"],
        profile.default_x(model, sde, kw["batch_size"], device, dtype),
        device,
    )
    say(
        f"profiling {model.spec} · {sde_name} · {predictor}+{corrector} · N={kw['steps']} · "
        f"batch {kw['batch_size']} · {device} · threads {threads} · {kw['repeats']} repeats"
    )
    try:
        measurements = profile.profile(setup, registry, kw["repeats"], kw["calls"])
    except Unsupported as exc:  # e.g. the VP chain's beta_k >= 1 at small N
        raise BenchError(f"cannot profile this configuration: {exc.reason}") from None
    agreement = matches = None
    if kw["compile_mode"]:
        eager = load_model(registry, kw["model"], device, dtype)
        eager_setup = dataclasses.replace(
            setup, score=with_autocast(eager.score_fn(sde), device, kw["dtype"])
        )
        agreement = profile.agreement(setup, eager_setup, registry)
        tolerance = profile.COMPILE_TOLERANCE[kw["dtype"]]
        matches = agreement <= tolerance
        say(
            f"compiled vs eager samples: relative difference {agreement:.3g} (same noise; "
            f"tolerance {tolerance:g} for {kw['dtype']}): {'ok' if matches else 'MISMATCH'}"
        )
    base = {
        "kind": "profile",
        "model": model.spec,
        "sde": sde_name,
        "predictor": predictor,
        "corrector": corrector,
        "steps": kw["steps"],
        "snr": kw["snr"],
        "corrector_steps": kw["corrector_steps"],
        "batch_size": kw["batch_size"],
        "device": str(device),
        "dtype": kw["dtype"],
        "threads": threads,
        "compile": kw["compile_mode"],
        "tf32": tf32_enabled(device),
        "compiled_vs_eager_rel_diff": agreement,
        "compiled_matches_eager": matches if kw["compile_mode"] else None,
        "torch": torch.__version__,
        "sde_bench": bench.__version__,
        "syncs_per_step": profile.count_syncs(setup, registry),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    rows = profile.rows(measurements, base)
    for row in rows:
        row["cell_id"] = f"profile-{row['variant']}-{row['started_at']}"
    click.echo(_table(rows))
    if kw["out"]:
        store = RunStore(kw["out"])
        store.prepare()
        store.write_meta({"kind": "profile", "options": kw, "machine": machine_info(device)})
        for row in rows:
            store.append(row)
        say(f"rows: {store.csv_path}")
    if matches is False:
        say("error: the compiled network's samples differ from the eager run's beyond tolerance")
        raise click.exceptions.Exit(1)
    return rows


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
