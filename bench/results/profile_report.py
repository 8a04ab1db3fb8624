"""Tables of ``bench profile`` folders (timings per loop variant), as ``bench report`` shows them."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.results.text import fmt, heading, markdown_table, text_table

# -- `bench profile` folders ----------------------------------------------------------------------
PROFILE_RUN_COLUMNS = (
    "model",
    "sde",
    "predictor",
    "corrector",
    "steps",
    "snr",
    "corrector_steps",
    "batch_size",
    "device",
    "dtype",
    "threads",
    "compile",
    "tf32",
    "started_at",
)
"""What one ``bench profile`` invocation measured (its rows differ only in ``variant``)."""

PROFILE_COLUMNS = {
    "variant": "variant",
    "nfe": "nfe",
    "wall_s": "wall_s",
    "wall_s_iqr": "wall_s_iqr",
    "wall_s_min": "wall_s_min",
    "repeats": "repeats",
    "us_per_nfe": "us_per_nfe",
    "ratio_vs_bare_forward": "×bare",
    "ratio_vs_minimal": "×minimal",
    "ratio_vs_minimal_min": "×minimal(min)",
}


def profile_tables(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, variant table) per ``bench profile`` invocation in ``frame``."""
    frame = frame.copy()
    if "s_per_nfe" in frame:
        frame["us_per_nfe"] = pd.to_numeric(frame["s_per_nfe"], errors="coerce") * 1e6
    keys = [c for c in PROFILE_RUN_COLUMNS if c in frame]
    groups = frame.groupby(keys, sort=False, dropna=False) if keys else [((), frame)]
    out = []
    for values, rows in groups:
        values = values if isinstance(values, tuple) else (values,)
        run = dict(zip(keys, values))
        shown = [c for c in PROFILE_COLUMNS if c in rows]
        table = rows[shown].rename(columns=PROFILE_COLUMNS).map(lambda v: fmt(v, 4))
        out.append((_profile_title(run), table.reset_index(drop=True)))
    return out


def _profile_title(run: dict[str, Any]) -> str:
    def given(key: str) -> bool:
        v = run.get(key)
        return v is not None and not (isinstance(v, float) and math.isnan(v)) and v != ""

    parts = [str(run[k]) for k in ("model", "sde") if given(k)]
    if given("predictor"):
        parts.append(f"{run['predictor']}+{run.get('corrector', 'none')}")
    parts += [
        f"{label}{fmt(run[k])}"
        for k, label in (("steps", "N="), ("batch_size", "batch "))
        if given(k)
    ]
    parts += [str(run[k]) for k in ("device", "dtype") if given(k)]
    parts += [f"{k} {fmt(run[k])}" for k in ("threads", "compile") if given(k)]
    if given("started_at"):
        parts.append(str(run["started_at"]))
    return " · ".join(parts) or "bench profile"


def render_profile(frame: pd.DataFrame, title: str, markdown: bool = False) -> str:
    """The timing tables of ``bench profile`` rows, one per invocation, grouped by variant."""
    table = markdown_table if markdown else text_table
    out = [
        heading(title, 1, markdown),
        "`bench profile` rows: timings of one configuration per variant, not a sweep (no seeds, "
        "statuses or metrics). wall_s: median of the repeats (wall_s_iqr its interquartile "
        "range); wall_s_min: the fastest; ×: ratios of medians (min: of the fastest runs).",
    ]
    for name, variants in profile_tables(frame):
        out += [heading(name, 2, markdown), table(variants)]
    return "\n\n".join(out) + "\n"
