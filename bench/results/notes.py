"""Notes under a results table for what would otherwise read as a bug: samplers identical to
every digit, a metric that takes one value across samplers, KID's scale and sign, values
below a data floor, and the metrics the plots leave out because they cannot separate the cells.

Each note is one sentence (one logical line); :mod:`bench.results.short_report` wraps them to
the terminal and :func:`bench.results.report.render` lists them under the tables.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import pandas as pd

from bench.results.floors import floor_of, inside_floor
from bench.results.frame import LABEL, Directions, key_frame
from bench.results.stats import context_columns
from bench.results.text import fmt

Cell = tuple[str, str, Any]
"""A cell of a note: (block, sampler label, steps); block is the SDE and other context."""


# -- per-seed values ------------------------------------------------------------------------------
BLOCK_SKIP = ("steps", "seed", "metrics", "eps", "sde_options")
"""Context columns that name no block of a note (they follow the SDE or vary inside a block)."""


def _block_keys(frame: pd.DataFrame) -> pd.Series:
    """The block of every row as text: its SDE, with the model and any other context column
    that varies (``subvp``, ``ring8 vp``)."""
    cols = [c for c in context_columns(frame) if c not in BLOCK_SKIP]
    shown = [c for c in cols if c == "sde" or frame[c].nunique(dropna=False) > 1]
    if not shown:
        return pd.Series("", index=frame.index)
    return key_frame(frame, shown).agg(" ".join, axis=1)


def _per_seed(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The ok rows with ``block``, ``label``, ``steps``, ``seed`` and the metric values."""
    ok = frame[frame["status"] == "ok"].copy()
    if ok.empty:
        return ok
    ok["_block"] = _block_keys(ok)
    for col in ("steps", "seed"):
        if col not in ok:
            ok[col] = None
    ok["steps"] = ok["steps"].map(lambda v: None if v is None or v != v else v)
    return ok


SAME_RTOL = 1e-4
"""Two samplers whose every metric agrees to this relative tolerance (four printed digits) in
every cell count as one: computing one update in another order changes float32 round-off only,
which a difference such as ``logp_gap`` magnifies to about 1e-5."""


def _close(a: Any, b: Any) -> bool:
    """Equal within :data:`SAME_RTOL` (two missing values are equal)."""
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)]
    if any(missing):
        return all(missing)
    return math.isclose(float(a), float(b), rel_tol=SAME_RTOL, abs_tol=1e-12)


# -- samplers identical to every digit ------------------------------------------------------------
def identical_samplers(frame: pd.DataFrame, metrics: Sequence[str]) -> dict[str, list[list[str]]]:
    """Per block, the groups of sampler labels whose every metric value is the same (within
    :data:`SAME_RTOL`) in every (steps, seed) where both ran ok, one such cell at least."""
    ok = _per_seed(frame, metrics)
    out: dict[str, list[list[str]]] = {}
    if ok.empty or not metrics:
        return out
    for block, rows in ok.groupby("_block", sort=False):
        groups = [g for g in _identical_groups(rows, metrics) if len(g) > 1]
        if groups:
            out[str(block)] = groups
    return out


def _identical_groups(rows: pd.DataFrame, metrics: Sequence[str]) -> list[list[str]]:
    """The labels of one block grouped by :func:`_identical` metric values."""
    values = {
        label: {(r["steps"], r["seed"]): [r.get(m) for m in metrics] for _, r in g.iterrows()}
        for label, g in rows.groupby(LABEL, sort=False)
    }
    return _union(list(values), lambda a, b: _identical(values[a], values[b]))


def _identical(a: dict, b: dict) -> bool:
    shared = set(a) & set(b)
    return bool(shared) and all(all(map(_close, a[k], b[k])) for k in shared)


def _union(items: list[str], same: Any) -> list[list[str]]:
    """The items grouped by ``same`` (each joins the first group holding a match)."""
    groups: list[list[str]] = []
    for item in items:
        home = next((g for g in groups if any(same(item, other) for other in g)), None)
        if home is None:
            groups.append([item])
        else:
            home.append(item)
    return groups


SUBVP_FALLBACK = (
    "on sub-VP the reference code has no discrete chain, so reverse diffusion falls back to "
    "Euler–Maruyama: the two are one sampler there"
)


def identical_note(block: str, groups: list[list[str]]) -> str:
    """``subvp: reverse_diffusion+none = euler_maruyama+none ... (every metric, every seed)``,
    with the reason when it is the sub-VP fallback of reverse diffusion."""
    text = "; ".join(" = ".join(g) for g in groups)
    where = f"{block}: " if block else ""
    note = f"{where}{text}: identical to every printed digit in every cell they share"
    if "subvp" in block.split() and all(_fallback_pair(g) for g in groups):
        note += f" ({SUBVP_FALLBACK})"
    return note + "."


def _fallback_pair(labels: list[str]) -> bool:
    heads = {label.split("+", 1)[0].removesuffix("(pf)") for label in labels}
    tails = {label.split("+", 1)[1] if "+" in label else "" for label in labels}
    return heads == {"euler_maruyama", "reverse_diffusion"} and len(tails) == 1


# -- a metric with one value across samplers ------------------------------------------------------
def constant_metric_cells(
    frame: pd.DataFrame, metric: str, identical: dict[str, list[list[str]]]
) -> list[Cell]:
    """The cells (block, label, steps) that share one value of ``metric`` in every seed with a
    cell of another sampler (samplers identical in every metric do not count as another)."""
    ok = _per_seed(frame, [metric])
    if ok.empty or metric not in ok:
        return []
    same_as = {
        (block, label): group[0]
        for block, gs in identical.items()
        for group in gs
        for label in group
    }
    vectors: dict[tuple, list[Cell]] = {}
    for (block, label, steps), rows in ok.groupby(
        ["_block", LABEL, "steps"], sort=False, dropna=False
    ):
        by_seed = tuple(sorted((repr(s), repr(v)) for s, v in zip(rows["seed"], rows[metric])))
        vectors.setdefault(by_seed, []).append((str(block), str(label), steps))
    cells: list[Cell] = []
    for members in vectors.values():
        samplers = {same_as.get((b, label), label) for b, label, _ in members}
        if len(samplers) > 1:
            cells += members
    return cells


def constant_metric_notes(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    directions: Directions,
    identical: dict[str, list[list[str]]] | None = None,
) -> list[str]:
    """One note per set of metrics that take one value across the cells of several samplers
    (e.g. ``coverage_tv`` and ``coverage_min`` under deterministic samplers), with the reason."""
    identical = identical_samplers(frame, metrics) if identical is None else identical
    by_cells: dict[tuple, tuple[list[Cell], list[str]]] = {}
    for metric in metrics:
        cells = constant_metric_cells(frame, metric, identical)
        if cells:
            key = tuple(sorted(map(repr, cells)))
            by_cells.setdefault(key, (cells, []))[1].append(metric)
    notes = []
    for cells, names in by_cells.values():
        heads = ", ".join(f"{m}{directions.arrow(m)}" for m in names)
        why = (
            COVERAGE_REASON
            if all(m.startswith("coverage") for m in names)
            else "it does not change between these samplers, so it cannot rank them"
        )
        notes.append(f"{heads}: the same value in {describe_cells(cells)}: {why}.")
    return notes


COVERAGE_REASON = (
    "every cell of a seed starts from the same prior samples x_T (common random numbers) and "
    "these samplers carry each x_T into the same mode, so the mode shares that coverage counts "
    "are the same: it cannot rank them"
)


def describe_cells(cells: Iterable[Cell]) -> str:
    """``36 cells (heun, dpmpp_2m at N=5, 10, 20; ve, vp, subvp)``."""
    cells = list(cells)
    labels = ", ".join(dict.fromkeys(label for _, label, _ in cells))
    steps = sorted({s for _, _, s in cells if s is not None and s == s})
    blocks = ", ".join(dict.fromkeys(b for b, _, _ in cells if b))
    at = f" at N={', '.join(fmt(float(s)) for s in steps)}" if steps else ""
    where = f"; {blocks}" if blocks else ""
    return f"{len(cells)} cell{'s' if len(cells) != 1 else ''} ({labels}{at}{where})"


# -- FID and KID ----------------------------------------------------------------------------------
def kid_notes(frame: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """KID's scale (as torch-fidelity returns it, not ×10³) and, when some value is negative,
    why an unbiased estimate can be."""
    if "kid" not in metrics:
        return []
    ok = frame[frame["status"] == "ok"]
    note = "kid is torch-fidelity's unbiased MMD² (cubic kernel (x·y/d + 1)³) as it is, not ×10³"
    if "digits-classifier" in _distinct_text(ok, "kid_extractor"):
        note += (
            ": on the digits classifier's 128-d features (norms about 10²) it runs to tens and "
            "compares only with itself, never with Inception KID (0.001–0.05)"
        )
    values = pd.to_numeric(ok.get("kid", pd.Series(dtype=float)), errors="coerce")
    if (values < 0).any():
        note += (
            "; it can be negative: the unbiased estimate centres on the true MMD² ≥ 0, so near 0 "
            "(samples close to the data) about half the estimates fall below it"
        )
    return [note + "."]


def below_floor_notes(summary: pd.DataFrame, frame: pd.DataFrame) -> list[str]:
    """For a data floor (FID/KID of real images at the cells' n), the cells whose mean lies
    below it, and what that means (one note for both metrics)."""
    parts, sds, how = [], [], ""
    for metric in ("fid", "kid"):
        if metric not in summary or f"{metric}_floor" not in summary:
            continue
        rows = summary[(summary["n_ok"] > 0) & summary[metric].notna()]
        low = rows[rows[metric] < rows[f"{metric}_floor"]]
        floor = floor_of(rows, metric)
        if low.empty or floor is None:
            continue
        cells = [(_block_text(r), r[LABEL], r.get("steps")) for _, r in low.iterrows()]
        parts.append(f"{metric} in {describe_cells(cells)}")
        sds.append(f"sd {floor.sd:.2g}")
        how = how or _distinct_text(frame, f"{metric}_floor_of")
    if not parts:
        return []
    note = (
        f"Below the real-data floor: {'; '.join(parts)}. The floor is what real images score at "
        f"this n{f' ({how})' if how else ''}, itself noisy ({', '.join(sds)}): a mean below it "
        "says the samples cannot be told from real data at this n, not that they beat it"
    )
    if "split-half" in how:
        note += "; a split-half floor is measured against a smaller reference than the cells"
    if _distinct_text(frame, "fid_ref").endswith(":train"):
        note += "; a model may reproduce images of its training split, the cells' reference"
    return [note + "."]


def _distinct_text(frame: pd.DataFrame, col: str) -> str:
    if col not in frame:
        return ""
    return " | ".join(str(v) for v in dict.fromkeys(frame[col].dropna()) if str(v))


def _block_text(row: pd.Series) -> str:
    return str(row.get("sde", "")) if row.get("sde") is not None else ""


# -- metrics the plots leave out ------------------------------------------------------------------
def cannot_separate(rows: pd.DataFrame, metric: str, directions: Directions) -> str | None:
    """Why ``metric`` cannot separate the ok summary ``rows`` (one model), or None when it can:
    one value in every cell, or every cell inside the floor (within the noise of exact
    sampling at this n, so no cell can be told from another by this metric).

    Overlapping intervals over seeds are no such reason: the cells of a seed share their prior
    noise, so paired differences can separate samplers whose separate intervals overlap."""
    if metric not in rows:
        return None
    ok = rows[(rows["n_ok"] > 0) & rows[metric].notna()]
    if len(ok) < 2:
        return None
    means = ok[metric].astype(float)
    if means.nunique() == 1:
        return "one value in every cell"
    if directions(metric) != "info" and all(
        inside_floor(r, metric, directions) for _, r in ok.iterrows()
    ):
        return "every cell inside the floor: within the noise of exact sampling"
    return None


def unplotted(summary: pd.DataFrame, metrics: Sequence[str], directions: Directions) -> dict:
    """``{(model, metric): reason}`` for the metrics that plots leave out, per model."""
    out = {}
    models = summary.groupby("model", sort=False) if "model" in summary else [("", summary)]
    for model, rows in models:
        for metric in metrics:
            reason = cannot_separate(rows, metric, directions)
            if reason:
                out[(str(model), metric)] = reason
    return out


def unplotted_note(skipped: dict) -> list[str]:
    """``Plots leave out coverage_tv (ring8: one value in every cell), ...``."""
    if not skipped:
        return []
    parts = [f"{m} ({model + ': ' if model else ''}{why})" for (model, m), why in skipped.items()]
    return [f"Plots leave out what cannot separate the cells: {', '.join(parts)}."]


# -- cells not ok ---------------------------------------------------------------------------------
def not_ok_lines(frame: pd.DataFrame) -> list[str]:
    """One line per distinct (status, reason) of the cells not ok, with the cells it covers
    summarised: ``unsupported in 4 cells (a, b at N=10; vp, subvp) × 3 seeds: <reason>``."""
    bad = frame[frame["status"] != "ok"].fillna({"reason": ""})
    if bad.empty:
        return []
    cell_cols = [c for c in ("model", "sde", LABEL, "steps") if c in bad]
    lines = []
    for (status, reason), rows in bad.groupby(["status", "reason"], sort=False, dropna=False):
        cells = rows.groupby(cell_cols, sort=False, dropna=False).size() if cell_cols else None
        seeds = set(cells) if cells is not None else {len(rows)}
        count = (
            f" × {seeds.pop()} seeds"
            if len(seeds) == 1 and max(seeds) > 1
            else f", {len(rows)} seeds in all"
            if len(seeds) > 1
            else ""
        )
        where = describe_cells(_cells_of(cells)) if cells is not None else f"{len(rows)} rows"
        lines.append(f"{status} in {where}{count}: {reason}".rstrip(": "))
    return lines


def _cells_of(counts: pd.Series) -> list[tuple[str, str, Any]]:
    """(block, label, steps) of each cell in a groupby index of model, SDE, label and steps;
    the block is the SDE, with the model when the cells span several."""
    names = list(counts.index.names)
    rows = [dict(zip(names, v if isinstance(v, tuple) else (v,))) for v in counts.index]
    models = len({r.get("model") for r in rows}) > 1
    cols = ["model", "sde"] if models else ["sde"]
    return [
        (" ".join(str(r[c]) for c in cols if c in r), str(r.get(LABEL, "")), r.get("steps"))
        for r in rows
    ]


# -- all of them ----------------------------------------------------------------------------------
def table_notes(
    frame: pd.DataFrame, summary: pd.DataFrame, metrics: Sequence[str], directions: Directions
) -> list[str]:
    """Every note that applies to these rows, in a fixed order."""
    identical = identical_samplers(frame, metrics)
    notes = [identical_note(block, groups) for block, groups in identical.items()]
    notes += constant_metric_notes(frame, metrics, directions, identical)
    notes += kid_notes(frame, metrics)
    notes += below_floor_notes(summary, frame)
    return notes
