"""Seed statistics: mean ± t-interval per group, and paired differences against a baseline sampler.

Every interval here is a two-sided Student-t interval for a mean over seeds (or over seed
pairs), ``t_{(1+c)/2, n-1} · s / √n`` with the sample standard deviation ``s`` (ddof 1). It needs
two values at least; with one it is NaN (unknown), never zero.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from bench.results.frame import LABEL, SAMPLER_COLUMNS, Directions, group_columns, key_frame

GROUP = "_group"


def t_quantile(confidence: float, dof: float) -> float:
    """The ``(1 + confidence) / 2`` quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, dof))


def ci_halfwidth(values: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width of the t-interval for the mean of ``values`` (NaN with fewer than two)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size < 2:
        return math.nan
    return t_quantile(confidence, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)


def welch_halfwidth(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width of Welch's t-interval for ``mean(b) − mean(a)`` (unpaired, unequal variances).

    NaN unless both sides have two values at least. With no spread on either side it is 0.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        return math.nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se2 = va + vb
    if se2 == 0:
        return 0.0
    dof = se2**2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return t_quantile(confidence, dof) * math.sqrt(se2)


def with_groups(frame: pd.DataFrame, keys: Iterable[str]) -> pd.DataFrame:
    """A copy of ``frame`` with a ``_group`` column: the canonical text of the key columns."""
    keys = list(keys)
    out = frame.copy()
    text = key_frame(frame, keys)
    if not keys or out.empty:
        out[GROUP] = pd.Series("", index=out.index, dtype=object)
    else:
        out[GROUP] = text.agg("|".join, axis=1)
    return out


def summarize(
    frame: pd.DataFrame,
    columns: Sequence[str],
    confidence: float = 0.95,
    describe: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per group of seeds: config, status, and each column's mean and CI over ok seeds.

    Args:
        frame: rows with a ``sampler`` column (see :func:`bench.results.frame.to_frame`).
        columns: numeric columns to average (metrics, ``nfe``, ``wall_clock_s``, ...).
        confidence: level of the intervals.
        describe: columns that say how a metric was measured (``fid_extractor``, ``fid_n``,
            ...): carried over as their value on the ok seeds (see :func:`describe_value`).

    Returns:
        The group's config columns and ``label``; ``seeds`` (rows in the group); ``n_ok``;
        ``status`` (``ok``, a status shared by every seed, or e.g. ``diverged 1/3``);
        ``reason`` (the first non-ok reason); then ``<col>`` (mean) and ``<col>_ci``
        (half-width, NaN with fewer than two ok seeds) for every column; then the
        ``describe`` columns.
    """
    keys = group_columns(frame)
    framed = with_groups(frame, keys)
    grouped = framed.groupby(GROUP, sort=False)
    out = grouped[keys + [LABEL]].first()
    out["seeds"] = grouped.size()
    out["n_ok"] = grouped["status"].agg(lambda s: int((s == "ok").sum()))
    out["status"] = grouped["status"].agg(status_summary)
    out["reason"] = grouped.apply(_first_reason, include_groups=False)
    ok = framed[framed["status"] == "ok"]
    values = ok[[GROUP, *columns]].copy()
    values[list(columns)] = values[list(columns)].apply(pd.to_numeric, errors="coerce")
    if columns:
        stats = values.groupby(GROUP, sort=False)[list(columns)].agg(["mean", "std", "count"])
    else:  # e.g. every cell ended in error: no timings, no metrics
        stats = pd.DataFrame()
    for col in columns:
        mean = stats.get((col, "mean"))
        out[col] = mean if mean is not None else math.nan
        out[f"{col}_ci"] = _halfwidths(stats, col, confidence) if mean is not None else math.nan
    described = ok.groupby(GROUP, sort=False)
    for col in describe:
        if col in ok:
            out[col] = described[col].agg(describe_value)
    return out.reset_index(drop=True)


def describe_value(values: pd.Series) -> object:
    """The one value of a descriptive column over a group's seeds; ``64–360`` (numbers) or
    ``a | b`` (text) when the seeds disagree; None when every value is missing."""
    distinct = list(dict.fromkeys(values.dropna()))
    if not distinct:
        return None
    if len(distinct) == 1:
        return distinct[0]
    numbers = pd.to_numeric(pd.Series(distinct), errors="coerce")
    if numbers.notna().all():
        lo, hi = numbers.min(), numbers.max()
        return f"{lo:g}–{hi:g}"
    return " | ".join(map(str, distinct))


def _halfwidths(stats: pd.DataFrame, col: str, confidence: float) -> pd.Series:
    n = stats[(col, "count")]
    sd = stats[(col, "std")]
    t = n.map(lambda k: t_quantile(confidence, k - 1) if k >= 2 else math.nan)
    return t * sd / np.sqrt(n.where(n >= 2))


def status_summary(statuses: pd.Series) -> str:
    """``ok`` when every seed is ok, the shared status when all agree, else ``diverged 1/3``."""
    values = list(statuses.fillna("?"))
    if len(set(values)) == 1:
        return values[0]
    bad = [s for s in values if s != "ok"]
    worst = max(set(bad), key=bad.count)
    return (
        f"{worst} {len(bad)}/{len(values)}"
        if len(set(bad)) == 1
        else f"mixed {len(bad)}/{len(values)}"
    )


def _first_reason(group: pd.DataFrame) -> str:
    reasons = group.loc[group["status"] != "ok", "reason"] if "reason" in group else pd.Series()
    reasons = [r for r in reasons.dropna() if str(r)]
    return str(reasons[0]) if reasons else ""


# -- paired differences ---------------------------------------------------------------------------
def context_columns(frame: pd.DataFrame) -> list[str]:
    """Group columns minus the sampler's: what two samplers share when they are compared."""
    return [c for c in group_columns(frame) if c not in SAMPLER_COLUMNS]


def resolve_sampler(frame: pd.DataFrame, wanted: str) -> str:
    """The sampler label meant by ``wanted``: an exact label, or the one label it is a prefix of.

    Raises:
        BenchError: no label or several labels match.
    """
    from bench.errors import BenchError

    labels = list(dict.fromkeys(frame[LABEL]))
    if wanted in labels:
        return wanted
    matches = [label for label in labels if label.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    what = "ambiguous" if matches else "unknown"
    raise BenchError(
        f"{what} baseline sampler {wanted!r}; samplers in this run: {', '.join(labels)}"
    )


PAIR_BY = ("steps", "nfe")
"""What paired cells share besides the context: the number of steps, or the NFE (counted)."""


def paired_differences(
    frame: pd.DataFrame,
    baseline: str,
    columns: Sequence[str],
    confidence: float = 0.95,
    directions: Directions | None = None,
    pair_by: str = "steps",
) -> pd.DataFrame:
    """Per sampler, ``metric − metric(baseline)`` paired by seed, with its mean and t-interval.

    Two cells are paired when they share every config column except the sampler's (predictor,
    corrector, probability flow, SNR, corrector steps) — so the same model, SDE, steps, samples
    and seed. With ``pair_by="nfe"`` the steps may differ and the counted NFE must be equal
    instead: a Heun cell of N steps (2N − 1 NFE) pairs with a one-evaluation-per-step solver
    at 2N − 1 steps. The runner derives each sample's prior noise from (seed, sample index)
    alone, so paired cells start from the same x_T, and the pair difference cancels that noise
    (common random numbers). Only ok cells are paired.

    Returns:
        One row per (context, sampler ≠ baseline, column): the context columns, ``label`` (the
        sampler), ``baseline``, ``metric``, ``pairs`` (seeds paired), ``diff`` (mean
        difference), ``diff_ci`` (half-width, NaN with one pair) and ``verdict``: ``better`` or
        ``worse`` when the interval excludes 0 (by the column's direction), ``same`` when every
        pair difference is exactly 0, else ``~`` (within the noise, or unknown with one pair).
        With ``pair_by="nfe"`` also ``nfe`` and ``baseline_steps`` (``steps`` is the sampler's).
    """
    directions = directions or Directions()
    context = context_columns(frame)
    ok = frame[frame["status"] == "ok"]
    if pair_by == "nfe":
        context = [c for c in context if c != "steps"] + ["nfe"]
        ok = ok.assign(nfe=pd.to_numeric(ok["nfe"], errors="coerce").round(6))
    ok = with_groups(ok, [*context, "seed"])
    base = ok[ok[LABEL] == baseline].drop_duplicates(GROUP).set_index(GROUP)
    records = []
    for sampler, rows in ok[ok[LABEL] != baseline].groupby(LABEL, sort=False):
        kept = list(columns) + (["steps"] if pair_by == "nfe" and "steps" in base else [])
        renamed = base[kept].rename(columns=lambda c: f"{c}__base")
        joined = rows.join(renamed, on=GROUP, how="inner")
        for col in columns:
            diffs = pd.to_numeric(joined[col], errors="coerce") - pd.to_numeric(
                joined[f"{col}__base"], errors="coerce"
            )
            joined[f"{col}__diff"] = diffs
        records += _pair_records(
            joined, context, sampler, baseline, columns, confidence, directions
        )
    return pd.DataFrame.from_records(records)


def _pair_records(
    joined, context, sampler, baseline, columns, confidence, directions
) -> list[dict]:
    out = []
    ctx = with_groups(joined, context)
    for _, rows in ctx.groupby(GROUP, sort=False):
        head = {c: rows.iloc[0][c] for c in context}
        for name, col in (("steps", "steps"), ("baseline_steps", "steps__base")):
            if col in rows and name not in head:  # pairs at equal NFE: the steps of each side
                head[name] = rows.iloc[0][col]
        for col in columns:
            d = rows[f"{col}__diff"].dropna().to_numpy(dtype=float)
            if d.size == 0:
                continue
            ci = ci_halfwidth(d, confidence)
            out.append(
                {
                    **head,
                    LABEL: sampler,
                    "baseline": baseline,
                    "metric": col,
                    "pairs": int(d.size),
                    "diff": float(d.mean()),
                    "diff_ci": ci,
                    "verdict": pair_verdict(d, ci, directions(col)),
                }
            )
    return out


def pair_verdict(diffs: np.ndarray, ci: float, direction: str) -> str:
    """``better``/``worse`` when the interval excludes 0, ``same`` for all-zero, else ``~``."""
    if np.all(diffs == 0):
        return "same"
    mean = float(diffs.mean())
    if math.isnan(ci) or abs(mean) <= ci or direction == "info":
        return "~"
    lower_is_better = direction == "lower"
    return "better" if (mean < 0) == lower_is_better else "worse"
