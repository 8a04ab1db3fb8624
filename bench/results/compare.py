"""``bench compare``: match the cells of two runs by config and flag regressions beyond the noise.

Cells are matched on their config minus the seed (and minus the list of metrics requested), the
*group* of :mod:`bench.results.frame`; seeds are replicates on each side. For every matched group and
gated metric the comparison reports the old mean, the new mean, the change, the noise of the
change and a verdict. The rule (also in ``docs/reports.md``):

    worsening = (new − old) for lower-is-better metrics, (old − new) for higher-is-better;
    allowed   = tol·|old| for a relative tolerance ``tol%``, tol for an absolute one;
    noise     = half-width of the CI of the change over seeds (paired when ≥ 2 seeds are common
                to both runs, Welch when each side has ≥ 2 seeds, 0 otherwise);
    regression  ⇔  worsening > allowed  and  worsening > noise.

A group whose status changes to anything but ``ok`` (ok → diverged, unsupported → error, ...),
a gated metric that disappears, and (unless allowed) a group missing from the current run also
fail the comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

from bench.errors import BenchError
from bench.results.compare_settings import DEFAULT_EXTRA_GATED, Settings
from bench.results.frame import (
    LABEL,
    SAMPLER_COLUMNS,
    Directions,
    group_columns,
    key_frame,
    key_value,
    metric_columns,
    sampler_labels,
)
from bench.results.stats import GROUP, ci_halfwidth, status_summary, welch_halfwidth, with_groups


# -- the comparison -------------------------------------------------------------------------------
@dataclass
class Comparison:
    """The outcome of :func:`compare`.

    Attributes:
        table: one row per matched group × gated column: every column that identifies the
            group (:attr:`identity`: the display columns first, then the whole config key,
            option strings included — what ``--csv`` writes), ``metric``, ``direction``,
            ``old``, ``new``, ``change``, ``rel_change``, ``noise``, ``noise_kind``,
            ``tolerance``, ``allowed``, ``seeds_old``, ``seeds_new`` and ``verdict`` (same,
            regression, improved, within noise, within tolerance, missing).
        status: groups whose status differs: display columns, ``old``, ``new``, ``failed``.
        missing: groups of the baseline absent from the current run (display columns).
        added: groups of the current run absent from the baseline.
        metrics: the gated columns.
        notes: remarks (columns on one side only, seeds that differ, ...).
        display: the columns the terminal and Markdown tables show: those that identify a
            group and differ between groups (:func:`display_columns`).
        identity: every identifying column, in the order of :attr:`table`.
        constant: identifying columns with one value in every compared group (not shown in
            the tables; named once above them).
        differences: per identifying column whose values differ between the runs, the values
            found in the baseline only and in the current run only (canonical text, sorted):
            what explains a comparison in which nothing matched.
    """

    table: pd.DataFrame
    status: pd.DataFrame
    missing: pd.DataFrame
    added: pd.DataFrame
    metrics: list[str]
    settings: Settings
    notes: list[str] = field(default_factory=list)
    display: list[str] = field(default_factory=list)
    matched: int = 0
    identity: list[str] = field(default_factory=list)
    constant: dict[str, Any] = field(default_factory=dict)
    differences: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)

    @property
    def regressions(self) -> pd.DataFrame:
        if self.table.empty:
            return self.table
        return self.table[self.table["verdict"].isin(["regression", "missing", "not comparable"])]

    @property
    def status_failures(self) -> pd.DataFrame:
        return self.status[self.status["failed"]] if not self.status.empty else self.status

    @property
    def failed(self) -> bool:
        """True when the comparison must fail CI (exit status 1)."""
        missing = not self.missing.empty and not self.settings.allow_missing
        return bool(len(self.regressions) or len(self.status_failures) or missing)


def compare(
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    settings: Settings | None = None,
    directions: Directions | None = None,
) -> Comparison:
    """Match the groups of two runs and judge every gated column (see the module docstring)."""
    settings = settings or Settings()
    directions = directions or Directions()
    current = apply_renames(current, settings.renames)
    notes: list[str] = []
    keys = _shared_keys(baseline, current, notes)
    gated = gated_columns(baseline, current, settings, directions, notes)
    old, new = with_groups(baseline, keys), with_groups(current, keys)
    display = _display_columns(old, new, keys)
    identity = display + [c for c in [LABEL, *keys] if c not in display]
    old_groups, new_groups = _index(old), _index(new)
    matched = [g for g in old_groups if g in new_groups]
    missing = [g for g in old_groups if g not in new_groups]
    added = [g for g in new_groups if g not in old_groups]
    records, status = [], []
    for g in matched:
        a, b = old_groups[g], new_groups[g]
        status += _status_change(a, b, display)
        records += [_judge(a, b, m, settings, directions(m), identity) for m in gated]
    records = [r for r in records if r is not None]
    notes += _seed_notes(old_groups, new_groups, matched)
    return Comparison(
        table=pd.DataFrame.from_records(records),
        status=pd.DataFrame.from_records(status, columns=[*display, "old", "new", "failed"]),
        missing=_heads(old_groups, missing, display),
        added=_heads(new_groups, added, display),
        metrics=gated,
        settings=settings,
        notes=notes,
        display=display,
        matched=len(matched),
        identity=identity,
        constant=_constant_columns(old, new, keys, display),
        differences=grid_differences(old, new, keys),
    )


def apply_renames(frame: pd.DataFrame, renames: Mapping[str, Mapping[str, str]]) -> pd.DataFrame:
    """Replace config values (``{column: {new: old}}``) and rebuild the sampler labels."""
    if not renames:
        return frame
    out = frame.copy()
    for column, mapping in renames.items():
        if column not in out:
            raise BenchError(
                f"cannot rename in column {column!r}: the current run has no such column"
            )
        out[column] = out[column].replace(dict(mapping))
    if set(renames) & set(SAMPLER_COLUMNS):
        out[LABEL] = sampler_labels(out)
    return out


def _shared_keys(baseline: pd.DataFrame, current: pd.DataFrame, notes: list[str]) -> list[str]:
    old, new = group_columns(baseline), group_columns(current)
    only = sorted(set(old) ^ set(new))
    if only:
        notes.append(f"config column(s) on one side only, not used for matching: {', '.join(only)}")
    return [c for c in old if c in new]


def gated_columns(
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    settings: Settings,
    directions: Directions,
    notes: list[str],
) -> list[str]:
    """The columns to judge; a requested column absent from both runs is an error."""
    if settings.metrics:
        absent = [m for m in settings.metrics if m not in baseline and m not in current]
        if absent:
            known = sorted(set(metric_columns(baseline)) | set(metric_columns(current)))
            raise BenchError(
                f"no column {', '.join(map(repr, absent))} in either run; "
                f"metric columns: {', '.join(known) or '(none)'}"
            )
        return list(settings.metrics)
    old = metric_columns(baseline, include_info=False)
    new = metric_columns(current, include_info=False)
    for m in new:
        if m not in old:
            notes.append(f"metric {m!r} is new in the current run (not compared)")
    cols = old + [c for c in DEFAULT_EXTRA_GATED if c in baseline and c not in old]
    return [c for c in cols if directions(c) != "info"]


def _index(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {g: rows for g, rows in frame.groupby(GROUP, sort=False)}


def _display_columns(old: pd.DataFrame, new: pd.DataFrame, keys: list[str]) -> list[str]:
    groups = pd.concat([old, new], ignore_index=True).drop_duplicates(GROUP)
    return display_columns(groups, keys)


def display_columns(groups: pd.DataFrame, keys: list[str]) -> list[str]:
    """The columns a reader needs to tell the groups (one row each) apart, and no others.

    Model, SDE, sampler label and steps where they differ between groups (the label always),
    then — only while two groups still look alike — the other key columns that separate the
    most of them: for example ``samples`` when a run sweeps it, but not the metric options
    that merely follow the model, nor any option string that follows the sampler's label.
    """
    base = [c for c in ("model", "sde") if c in keys] + [LABEL]
    base += ["steps"] if "steps" in keys else []
    shown = [c for c in base if c == LABEL or groups[c].nunique(dropna=False) > 1]
    rest = [c for c in keys if c not in base and groups[c].nunique(dropna=False) > 1]
    rest.sort(key=lambda c: c in SAMPLER_COLUMNS)  # the label names the sampler: try them last
    while rest and _alike(groups, shown):
        best = min(rest, key=lambda c: _alike(groups, [*shown, c]))
        if _alike(groups, [*shown, best]) == _alike(groups, shown):
            break
        shown.append(best)
        rest.remove(best)
    order = [*base, *keys]
    return sorted(shown, key=order.index)


def _alike(groups: pd.DataFrame, columns: list[str]) -> int:
    """How many groups share their values of ``columns`` with another group."""
    text = key_frame(groups, columns).agg("|".join, axis=1) if columns else groups[GROUP]
    return int(text.duplicated(keep=False).sum())


def _constant_columns(
    old: pd.DataFrame, new: pd.DataFrame, keys: list[str], display: list[str]
) -> dict[str, Any]:
    """Identifying columns with a single value across both runs (model, SDE, samples, ...)."""
    both = pd.concat([old, new], ignore_index=True)
    out = {}
    for c in [c for c in ("model", "sde", "steps") if c in keys] + keys:
        if c not in display and c not in out and both[c].nunique(dropna=False) == 1:
            if key_value(both[c].iloc[0]) != "-":  # empty option strings say nothing
                out[c] = both[c].iloc[0]
    return out


def grid_differences(
    old: pd.DataFrame, new: pd.DataFrame, keys: list[str]
) -> dict[str, tuple[list[str], list[str]]]:
    """For each key column whose set of values differs: (baseline only, current run only)."""
    out = {}
    for c in keys:
        a, b = set(old[c].map(key_value)), set(new[c].map(key_value))
        if a != b:
            out[c] = (_sorted_values(a - b), _sorted_values(b - a))
    return out


def _sorted_values(values: set[str]) -> list[str]:
    """Numbers in numeric order (10 before 100), then text."""

    def order(text: str) -> tuple[int, float, str]:
        try:
            return (0, float(text), text)
        except ValueError:
            return (1, 0.0, text)

    return sorted(values, key=order)


def _heads(groups: dict[str, pd.DataFrame], names: list[str], display: list[str]) -> pd.DataFrame:
    rows = [{**groups[g].iloc[0][display].to_dict(), "seeds": len(groups[g])} for g in names]
    return pd.DataFrame.from_records(rows, columns=[*display, "seeds"])


def _status_change(a: pd.DataFrame, b: pd.DataFrame, display: list[str]) -> list[dict]:
    old, new = status_summary(a["status"]), status_summary(b["status"])
    if old == new:
        return []
    head = a.iloc[0][display].to_dict()
    return [{**head, "old": old, "new": new, "failed": new != "ok"}]


def _values(rows: pd.DataFrame, column: str) -> pd.Series:
    """A column's values on the ok seeds, indexed by seed."""
    ok = rows[rows["status"] == "ok"]
    if column not in ok:
        return pd.Series(dtype=float)
    values = pd.to_numeric(ok[column], errors="coerce")
    return pd.Series(values.to_numpy(), index=ok["seed"].to_numpy()).dropna()


def _judge(
    a: pd.DataFrame,
    b: pd.DataFrame,
    metric: str,
    settings: Settings,
    direction: str,
    display: list[str],
) -> dict[str, Any] | None:
    """One comparison row, or None when neither side has an ok value (a status row covers it)."""
    old, new = _values(a, metric), _values(b, metric)
    if old.empty and new.empty:
        return None
    head = {
        **a.iloc[0][display].to_dict(),
        "metric": metric,
        "direction": direction,
        "seeds_old": len(old),
        "seeds_new": len(new),
    }
    tol = settings.tolerance(metric)
    if new.empty:
        if not (b["status"] == "ok").any():
            return None  # the status row reports it
        return {
            **head,
            "old": _mean(old),
            "new": math.nan,
            "verdict": "missing",
            "tolerance": str(tol),
        }
    if old.empty:
        return {**head, "old": math.nan, "new": _mean(new), "verdict": "new", "tolerance": str(tol)}
    measured = measured_differently(a, b, metric)
    if measured:
        return {
            **head,
            "old": _mean(old),
            "new": _mean(new),
            "verdict": "not comparable",
            "tolerance": str(tol),
            "reason": measured,
        }
    old_mean, new_mean, noise, kind = change_and_noise(old, new, settings.confidence)
    change = new_mean - old_mean
    allowed = tol.allowed(old_mean)
    return {
        **head,
        "old": old_mean,
        "new": new_mean,
        "change": change,
        "rel_change": change / abs(old_mean) if old_mean else math.nan,
        "noise": noise,
        "noise_kind": kind,
        "tolerance": str(tol),
        "allowed": allowed,
        "verdict": verdict_of(change, direction, allowed, noise),
    }


MEASUREMENT_SUFFIXES = ("_extractor", "_ref", "_ref_n")
"""Columns that say how a metric was measured (feature extractor and its weights hash, reference
set and its size): values measured differently are not compared."""


def measured_differently(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> str:
    """``"fid_extractor: x → y"`` when the two sides measured ``metric`` differently, else ``""``.

    The metric's own columns are found by its name and each prefix of it (``kid_std`` is
    described by ``kid_extractor``); a numeric ``<metric>_ref`` is a reference value, not a set.
    """
    parts = metric.split("_")
    bases = ["_".join(parts[:k]) for k in range(len(parts), 0, -1)]
    changes = []
    for base in bases:
        for column in (base + suffix for suffix in MEASUREMENT_SUFFIXES):
            if column not in a or column not in b:
                continue
            old = set(a.loc[a["status"] == "ok", column].dropna().astype(str))
            new = set(b.loc[b["status"] == "ok", column].dropna().astype(str))
            numeric = (
                column.endswith("_ref")
                and pd.to_numeric(pd.Series([*old, *new]), errors="coerce").notna().all()
            )
            if old and new and old != new and not numeric:
                changes.append(f"{column}: {' | '.join(sorted(old))} → {' | '.join(sorted(new))}")
        if changes:
            break
    return "; ".join(changes)


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def change_and_noise(
    old: pd.Series, new: pd.Series, confidence: float
) -> tuple[float, float, float, str]:
    """(old mean, new mean, noise half-width, how the noise was estimated).

    With two or more seeds on both sides the change is paired by seed (same prior noise in both
    runs) and both means are taken over those common seeds; otherwise, with two or more seeds
    per side, Welch's interval; otherwise the noise is unknown and taken as 0.
    """
    common = old.index.intersection(new.index)
    if len(common) >= 2:
        o, n = old.loc[common], new.loc[common]
        diffs = (n - o).to_numpy(dtype=float)
        return (
            float(o.mean()),
            float(n.mean()),
            ci_halfwidth(diffs, confidence),
            f"paired n={len(common)}",
        )
    if len(old) >= 2 and len(new) >= 2:
        return (
            float(old.mean()),
            float(new.mean()),
            welch_halfwidth(old.to_numpy(), new.to_numpy(), confidence),
            "welch",
        )
    return float(old.mean()), float(new.mean()), 0.0, "none"


def verdict_of(change: float, direction: str, allowed: float, noise: float) -> str:
    """The verdict for one change (see the module docstring for the rule)."""
    if change == 0 or math.isnan(change):
        return "same"
    noise = 0.0 if math.isnan(noise) else noise
    worsening = -change if direction == "higher" else change
    size = abs(worsening)
    if size <= noise:
        return "within noise"
    if size <= allowed:
        return "within tolerance"
    return "regression" if worsening > 0 else "improved"


def _seed_notes(old: dict, new: dict, matched: list[str]) -> list[str]:
    differ = [g for g in matched if set(old[g]["seed"].dropna()) != set(new[g]["seed"].dropna())]
    if not differ:
        return []
    return [
        f"{len(differ)} matched group(s) ran different seeds in the two runs; the change is "
        "taken over common seeds when two or more are shared, else over all (Welch)"
    ]


def summary_counts(result: Comparison) -> dict[str, int]:
    """Counts of verdicts, status failures and missing or new groups."""
    counts = result.table["verdict"].value_counts().to_dict() if not result.table.empty else {}
    return {
        **{str(k): int(v) for k, v in counts.items()},
        "status failures": len(result.status_failures),
        "missing groups": len(result.missing),
        "new groups": len(result.added),
    }
