"""Synthetic results rows for report and compare tests (the columns the runner writes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

METRICS = "swd,coverage"


def row(
    *,
    predictor: str = "euler_maruyama",
    corrector: str = "none",
    steps: int = 10,
    seed: int = 0,
    sde: str = "vp",
    status: str = "ok",
    swd: float | None = 0.1,
    coverage_min: float | None = -1.0,
    nfe: float | None = None,
    wall: float = 0.01,
    **extra: Any,
) -> dict[str, Any]:
    """One row with the runner's config, timing and metric columns."""
    cfg = {
        "model": "ring8",
        "sde": sde,
        "predictor": predictor,
        "corrector": corrector,
        "probability_flow": False,
        "steps": steps,
        "snr": None if corrector == "none" else 0.16,
        "corrector_steps": None if corrector == "none" else 1,
        "seed": seed,
        "samples": 100,
        "batch_size": 100,
        "denoise": True,
        "dtype": "float32",
        "metrics": METRICS,
        "eps": 1e-3,
        "sde_options": "beta_max=20.0,beta_min=0.1,eps=0.001",
    }
    cfg.update({k: v for k, v in extra.items() if k in cfg})
    cell_id = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    out = {
        "cell_id": cell_id,
        "status": status,
        "reason": "" if status == "ok" else "why not",
        **cfg,
        "device": "cpu",
        "threads": 1,
        "torch": "2.x",
        "sde_bench": "0.1.0",
        "started_at": "2026-01-01T00:00:00Z",
    }
    if status == "ok":
        calls = nfe if nfe is not None else steps * (1 if corrector == "none" else 2)
        out.update(
            {
                "nfe": calls,
                "score_calls": calls,
                "wall_clock_s": wall,
                "samples_per_s": 100 / wall,
                "s_per_nfe": wall / calls,
                "swd": swd,
                "swd_n": 100,
                "coverage_min": coverage_min,
                "coverage_tv_ref": -1.5,
                "coverage_n": 100,
            }
        )
    out.update({k: v for k, v in extra.items() if k not in cfg})
    return out


def seeds(values: dict[str, list[float]], **kw: Any) -> list[dict[str, Any]]:
    """Rows for seeds 0..k-1 with the metric values given per seed, e.g. ``{"swd": [1, 2]}``."""
    n = len(next(iter(values.values())))
    return [row(seed=s, **{**kw, **{m: v[s] for m, v in values.items()}}) for s in range(n)]


def write_run(folder: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """A run folder as the runner leaves it: run.json, rows.jsonl and results.csv."""
    from bench.run.store import RunStore

    store = RunStore(folder)
    store.prepare()
    store.write_meta({"sde_bench": "0.1.0", "invocation": {"argv": ["bench", "run"]}})
    for r in rows:
        store.append(r)
    return folder
