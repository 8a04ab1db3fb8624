"""Tables from results rows."""

from __future__ import annotations

from typing import Any

import pandas as pd

CONFIG_COLUMNS = ["sde", "predictor", "corrector", "probability_flow", "steps", "snr",
                  "corrector_steps", "seed"]
SKIP_METRIC_SUFFIXES = ("_n",)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric value columns, in the order the metrics were requested."""
    cols: list[str] = []
    for metrics in frame.get("metrics", pd.Series(dtype=str)).dropna().unique():
        for name in str(metrics).split(","):
            cols += [c for c in frame.columns
                     if (c == name or c.startswith(name + "_")) and not c.endswith(SKIP_METRIC_SUFFIXES)
                     and c not in cols]
    return cols


def short_report(rows: list[dict[str, Any]]) -> str:
    """The table ``bench run`` prints: one line per cell, then the reasons of non-ok cells."""
    if not rows:
        return "(no results)"
    frame = pd.DataFrame(rows)
    config = [c for c in CONFIG_COLUMNS if c in frame and frame[c].nunique(dropna=False) > 1
              or c in ("sde", "predictor", "corrector", "steps")]
    if "probability_flow" in config:
        frame["probability_flow"] = frame["probability_flow"].map({True: "pf", False: ""})
    shown = config + ["status", "nfe", "wall_clock_s"] + metric_columns(frame)
    table = frame[[c for c in shown if c in frame]].copy()
    text = table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}")
    notes = [f"  {r['sde']} {r['predictor']}+{r['corrector']} N={r['steps']}: {r['status']}: {r['reason']}"
             for r in rows if r.get("status") != "ok"]
    return text + ("\n\nnot ok:\n" + "\n".join(notes) if notes else "")
