"""Results rows as a pandas frame: loading run folders and naming what each column is.

Columns fall into four groups:

* **config** — what defines a cell (model, SDE, sampler, steps, SNR, seed, samples, ...);
* **environment** — where and when it ran (device, threads, versions, providers, cell id);
* **timing** — ``nfe``, ``wall_clock_s``, ``samples_per_s``, ``s_per_nfe``;
* **metrics** — the values the requested metrics returned, each with a direction
  (:func:`direction`): lower or higher is better, or informational (``*_ref``, ``*_std``).

A *group* is a config minus the seed: the unit that tables average over seeds and that
``bench compare`` matches between runs.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd

from bench.errors import BenchError

Direction = Literal["lower", "higher", "info"]

CONFIG_COLUMNS = (
    "run",
    "model",
    "sde",
    "sampler",
    "schedule",
    "predictor",
    "corrector",
    "probability_flow",
    "steps",
    "snr",
    "corrector_steps",
    "guidance",
    "guidance_interval",
    "labels",
    "seed",
    "samples",
    "batch_size",
    "denoise",
    "dtype",
    "metrics",
    "eps",
    "sde_options",
)
"""Config columns in display order; any further ``*_options`` column is config too. ``run`` is
set only when a folder of runs holds the same cell in several runs (:func:`tag_repeated_cells`)."""

SAMPLER_COLUMNS = (
    "sampler",
    "schedule",
    "predictor",
    "probability_flow",
    "corrector",
    "snr",
    "corrector_steps",
    "sampler_options",
    "schedule_options",
    "predictor_options",
    "corrector_options",
)
"""The columns that together name a sampler (what paired comparisons vary)."""

LABEL = "label"
"""The column :func:`to_frame` adds: a sampler's display name (see :func:`sampler_labels`)."""

NOT_IN_GROUP_KEY = ("seed", "metrics")
"""Config columns that do not identify a group: seeds are replicates, and the list of metrics
requested changes which columns exist, not the samples."""

TIMING_COLUMNS = ("nfe", "passes", "wall_clock_s", "samples_per_s", "s_per_nfe", "s_per_pass")

NFE_INFO = frozenset({"nfe_nominal", "nfe_min", "nfe_max"})
"""NFE columns beside the counted mean: what the sampler claims, and the spread over batches."""

SETTING_COLUMNS = frozenset({"kid_subset_size", "kid_subsets", "kid_pool_n", "isc_splits"})
"""Columns a metric reports about its own settings (subset sizes, pool size): kept in the rows,
never shown as metric tables."""

INFO_SUFFIXES = ("_ref", "_std", "_n", "_floor")
"""Metric columns with these suffixes describe a metric (its reference value or floor, its
spread, its n) rather than rate the sampler: tables may show them, compare never gates them."""

FLOOR_DRAWS = "floor_draws"
"""The column that says over how many independent exact draws the floors were taken."""

KNOWN_DIRECTIONS: dict[str, Direction] = {
    "swd": "lower",
    "fd": "lower",
    "fid": "lower",
    "kid": "lower",
    "kid_subset_size": "info",
    "kid_subsets": "info",
    "isc_splits": "info",
    "w2": "lower",
    "coverage_tv": "lower",
    "coverage_min": "higher",
    "logp": "info",  # over-concentrated samples score above logp_ref: gate logp_gap instead
    "logp_gap": "lower",
    "precision": "higher",
    "recall": "higher",
    "isc": "higher",
    "inception_score": "higher",
    "nfe": "lower",
    "passes": "lower",
    "score_calls": "lower",
    "wall_clock_s": "lower",
    "s_per_nfe": "lower",
    "s_per_pass": "lower",
    "samples_per_s": "higher",
    "metrics_s": "lower",
}
"""Fallback directions for columns whose metric class is not loaded or that a metric returns
besides its own name (``coverage`` has one ``higher_is_better`` flag for two columns)."""

STATUSES = ("ok", "unsupported", "diverged", "error")


# -- loading --------------------------------------------------------------------------------------
def run_folders(path: str | Path) -> list[Path]:
    """The run folders under ``path``: itself if it holds ``run.json`` or results, else every
    direct subfolder that does (so ``results/baseline/`` may hold one run per model)."""
    path = Path(path)
    if not path.exists():
        raise BenchError(f"{str(path)!r} does not exist")
    if path.is_file() or _is_run(path):
        return [path]
    runs = sorted(p for p in path.iterdir() if p.is_dir() and _is_run(p))
    if not runs:
        raise BenchError(f"{str(path)!r} holds no run (no run.json, rows.jsonl or results.csv)")
    return runs


def _is_run(path: Path) -> bool:
    return any((path / name).is_file() for name in ("run.json", "rows.jsonl", "results.csv"))


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a run folder, a folder of run folders, or a ``results.csv`` file."""
    return [r for _, rows in tag_repeated_cells(_rows_by_run(path)) for r in rows]


def tag_repeated_cells(
    by_run: list[tuple[Path, list[dict[str, Any]]]],
) -> list[tuple[Path, list[dict[str, Any]]]]:
    """Give every row a ``run`` column (its folder's name) when some cell is in several runs
    (e.g. the same sweep in one process and under torchrun): otherwise the two would be averaged
    as if they were seeds."""
    seen: dict[str, Path] = {}
    repeated = False
    for run, rows in by_run:
        for r in rows:
            first = seen.setdefault(str(r.get("cell_id")), run)
            repeated = repeated or first != run
    if not repeated:
        return by_run
    return [(run, [{**r, "run": run.name} for r in rows]) for run, rows in by_run]


def _rows_by_run(path: str | Path) -> list[tuple[Path, list[dict[str, Any]]]]:
    return [(run, _run_rows(run)) for run in run_folders(path)]


def _run_rows(run: Path) -> list[dict[str, Any]]:
    from bench.run.store import RunStore

    if run.is_file():
        return _csv_rows(run)
    store = RunStore(run)  # warns once per damaged line of rows.jsonl (stderr)
    found = store.rows()
    if found or store.damaged:  # a damaged log is still the truth: never the stale CSV
        return found
    return _csv_rows(run / "results.csv")


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    return [{k: _none_if_nan(v) for k, v in r.items()} for r in frame.to_dict("records")]


def _none_if_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


PROFILE_KIND = "profile"
"""The ``kind`` of the rows (and of ``run.json``) that ``bench profile --out`` writes: one row
per timed variant (``variant``, ``nfe``, ``wall_s``, ...), no seed, status or metric."""


def is_profile_run(run: Path, rows: list[dict[str, Any]] | None = None) -> bool:
    """True for a run folder (or ``results.csv``) written by ``bench profile``: its rows, or
    its ``run.json``, have ``kind == "profile"``."""
    rows = _run_rows(run) if rows is None else rows
    if any(r.get("kind") == PROFILE_KIND for r in rows):
        return True
    meta = run / "run.json" if run.is_dir() else run.parent / "run.json"
    try:
        return json.loads(meta.read_text()).get("kind") == PROFILE_KIND
    except (OSError, ValueError, AttributeError):
        return False


def holds_profile(path: str | Path) -> bool:
    """True when every run under ``path`` was written by ``bench profile``."""
    return all(is_profile_run(run, rows) for run, rows in _rows_by_run(path))


def load_frame(path: str | Path) -> pd.DataFrame:
    """The sweep rows of ``path`` (see :func:`load_rows`) as a frame.

    Raises a :class:`BenchError` when there are none, or when ``path`` holds ``bench profile``
    rows (timings of one configuration, with no seed, status or metric: not a sweep).
    """
    by_run = _rows_by_run(path)
    profiles = [run for run, rows in by_run if is_profile_run(run, rows)]
    if profiles:
        raise BenchError(_profile_message(Path(path), profiles, len(by_run)))
    rows = [r for _, rows in tag_repeated_cells(by_run) for r in rows]
    if not rows:
        raise BenchError(f"{str(path)!r} holds no result rows yet")
    return to_frame(rows)


def load_profile_frame(path: str | Path) -> pd.DataFrame:
    """The rows of a ``bench profile`` folder (or of a folder of them) as a frame."""
    rows = [r for run, rows in _rows_by_run(path) if is_profile_run(run, rows) for r in rows]
    if not rows:
        raise BenchError(f"{str(path)!r} holds no `bench profile` rows yet")
    return pd.DataFrame(rows)


def _profile_message(path: Path, profiles: list[Path], runs: int) -> str:
    if len(profiles) < runs:
        names = ", ".join(str(p) for p in profiles)
        return (
            f"{str(path)!r} mixes `bench profile` runs ({names}) with sweep runs: "
            "point at the sweep run folders instead"
        )
    if path.is_file():
        where = str(path)
    elif profiles == [path]:
        where = str(path / "results.csv")
    else:
        where = ", ".join(str(p / "results.csv") for p in profiles)
    return (
        f"{str(path)!r} holds `bench profile` rows (timings per variant), not a sweep: "
        f"read {where}, or `bench report {path}` for the timing table"
    )


def to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A frame of rows with a ``label`` column added (see :func:`sampler_labels`).

    Rows written before samplers were a kind (no ``sampler`` column) are PC rows on the paper's
    uniform grid: their ``sampler`` and ``schedule`` are filled in as ``pc`` and ``uniform``.
    """
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    if "status" not in frame:
        frame["status"] = "ok"
    if "predictor" in frame and "sampler" not in frame:
        frame["sampler"], frame["schedule"] = "pc", "uniform"
    frame[LABEL] = sampler_labels(frame)
    return frame


# -- column groups --------------------------------------------------------------------------------
def config_columns(frame: pd.DataFrame) -> list[str]:
    """The config columns present in ``frame`` (seed included)."""
    extra = sorted(c for c in frame.columns if c.endswith("_options") and c not in CONFIG_COLUMNS)
    return [c for c in CONFIG_COLUMNS if c in frame] + extra


def group_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that identify a group of seeds: the config minus seed and metric list."""
    return [c for c in config_columns(frame) if c not in NOT_IN_GROUP_KEY]


def metric_columns(frame: pd.DataFrame, *, include_info: bool = True) -> list[str]:
    """Numeric metric columns, in the order the metrics were requested.

    A column belongs to metric ``m`` when it is ``m`` or starts with ``m_``; ``<m>_n`` counts
    and non-numeric columns (such as a feature extractor's name) are left out.
    """
    cols: list[str] = []
    for metrics in frame.get("metrics", pd.Series(dtype=object)).dropna().unique():
        for name in filter(None, str(metrics).split(",")):
            for c in frame.columns:
                owned = c == name or c.startswith(name + "_")
                if (
                    owned
                    and c not in cols
                    and c not in SETTING_COLUMNS
                    and not c.endswith("_n")
                    and is_numeric(frame[c])
                ):
                    cols.append(c)
    if not include_info:
        cols = [c for c in cols if not c.endswith(INFO_SUFFIXES)]
    return cols


def is_numeric(column: pd.Series) -> bool:
    """True if every non-null value is a real number (booleans and strings are not)."""
    values = column.dropna()
    return all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)


def varying(frame: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """The columns among ``columns`` with more than one distinct value (missing counts as one)."""
    return [c for c in columns if c in frame and frame[c].nunique(dropna=False) > 1]


# -- directions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Directions:
    """Whether lower or higher is better for each column, with the registry's metric classes.

    Lookup order for a column ``c``: a ``column_directions`` mapping on the metric class that
    owns ``c`` (optional, e.g. ``{"coverage_min": "higher"}``); ``info`` for the suffixes
    ``_ref``, ``_std`` and ``_n``; the metric class named exactly ``c`` (its
    ``higher_is_better``); the :data:`KNOWN_DIRECTIONS` table; the class whose name is a prefix
    of ``c``; and finally ``lower``.
    """

    classes: tuple[Any, ...] = ()

    @classmethod
    def from_registry(cls, registry: Any | None) -> Directions:
        if registry is None:
            return cls()
        return cls(tuple(registry.entries["metrics"][n].obj for n in registry.names("metrics")))

    def owner(self, column: str) -> Any | None:
        """The metric class that returns ``column`` (longest matching name), if loaded."""
        owners = [m for m in self.classes if column == m.name or column.startswith(m.name + "_")]
        return max(owners, key=lambda m: len(m.name), default=None)

    def __call__(self, column: str) -> Direction:
        owner = self.owner(column)
        declared = getattr(owner, "column_directions", None) or {}
        if column in declared:
            return declared[column]
        if column.endswith(INFO_SUFFIXES):
            return "info"
        if owner is not None and owner.name == column:
            return "higher" if getattr(owner, "higher_is_better", False) else "lower"
        if column in KNOWN_DIRECTIONS:
            return KNOWN_DIRECTIONS[column]
        if owner is not None:
            return "higher" if getattr(owner, "higher_is_better", False) else "lower"
        return "lower"

    def arrow(self, column: str) -> str:
        """``↓`` (lower is better), ``↑`` (higher) or nothing (informational)."""
        return {"lower": "↓", "higher": "↑", "info": ""}[self(column)]


def direction(column: str, registry: Any | None = None) -> Direction:
    """The direction of one column (see :class:`Directions`)."""
    return Directions.from_registry(registry)(column)


# -- floors ---------------------------------------------------------------------------------------
def floor_columns(frame: pd.DataFrame, metric: str) -> tuple[str, str] | None:
    """The (mean, standard deviation) columns of ``metric``'s floor, if the rows carry them.

    A floor is what exact samples (or real data) score at the cell's n: ``<metric>_ref`` with
    ``<metric>_ref_std`` for the exact-score metrics (numeric: a ``<metric>_ref`` that names a
    reference set, such as ``fid_ref``, is not one), else ``<metric>_floor`` with
    ``<metric>_floor_std`` (the data's own FID, for example).
    """
    for mean in (f"{metric}_ref", f"{metric}_floor"):
        std = f"{mean}_std"
        if (
            mean in frame
            and std in frame
            and frame[mean].notna().any()
            and is_numeric(frame[mean])
            and is_numeric(frame[std])
        ):
            return mean, std
    return None


# -- sampler labels -------------------------------------------------------------------------------
def sampler_labels(frame: pd.DataFrame) -> pd.Series:
    """Display names of the rows' samplers: ``predictor[(pf)]+corrector`` for PC cells (with
    ``@snr`` and ``×k`` corrector steps added when a run sweeps them), the sampler's name for
    the others; ``[schedule]`` and ``{options}`` are added when a run sweeps them, so every label
    names one sampler."""
    show = {c: frame[c].nunique() > 1 if c in frame else False for c in ("snr", "corrector_steps")}
    per_sampler = {c: _varies_per_sampler(frame, c) for c in ("schedule", "sampler_options")}

    def label(row: Any) -> str:
        varies = {c: row.get("sampler") in names for c, names in per_sampler.items()}
        return sampler_label(row, **show, **varies)

    return frame.apply(label, axis=1).astype(str)


def _varies_per_sampler(frame: pd.DataFrame, column: str) -> set[str]:
    """The samplers that appear with more than one value of ``column`` in ``frame``."""
    if column not in frame or "sampler" not in frame:
        return set()
    counts = frame.groupby("sampler", dropna=True)[column].nunique()
    return set(counts[counts > 1].index)


def sampler_label(
    row: Any,
    snr: bool = False,
    corrector_steps: bool = False,
    schedule: bool = False,
    sampler_options: bool = False,
) -> str:
    """The label of one row (see :func:`sampler_labels`)."""
    if _present(row.get("predictor")):
        pf = "(pf)" if _truthy(row.get("probability_flow")) else ""
        label = f"{row.get('predictor')}{pf}+{row.get('corrector')}"
        if row.get("corrector") not in (None, "none"):
            if snr and _present(row.get("snr")):
                label += f"@{row['snr']:g}"
            if corrector_steps and _present(row.get("corrector_steps")):
                label += f"×{int(row['corrector_steps'])}"
    else:
        label = str(row.get("sampler"))
        if sampler_options and _present(row.get("sampler_options")) and row["sampler_options"]:
            label += "{" + str(row["sampler_options"]) + "}"
    if schedule and _present(row.get("schedule")):
        label += f"[{row['schedule']}]"
    return label


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "pf")
    return bool(value) if _present(value) else False


# -- keys -----------------------------------------------------------------------------------------
def key_value(value: Any) -> str:
    """A canonical text for a config value, so CSV (``100.0``, ``nan``) and JSON (``100``,
    ``null``) rows produce the same key."""
    if not _present(value) or value == "":
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Real):
        return repr(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


def key_frame(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """The given columns as canonical text (see :func:`key_value`)."""
    return pd.DataFrame({c: frame[c].map(key_value) for c in columns}, index=frame.index)
