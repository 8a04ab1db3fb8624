"""The configuration a ``diffusers:CLASS`` sampler builds its scheduler from, and where each key
came from: the model's folder, the suite (the SDE's noise schedule), the user or the class.

A diffusers user writes ``CLASS.from_config(folder's scheduler config)``: every key of the
folder's ``scheduler_config.json`` that ``CLASS.__init__`` accepts is taken (``clip_sample``,
``timestep_spacing``, ``variance_type``, the β's, …), the others are left out, and the class's
defaults fill the rest; ``-o diffusers.KEY=VALUE`` wins over both. A model with no scheduler
config (the exact oracles, the suite's trained networks) gets the suite's keys instead: the
SDE's β's (DDPM-type) or σ range (EDM-type), see :func:`suite_keys`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from bench.core.schedule import sigma_range
from bench.core.sde import SDE

NUM_TRAIN_TIMESTEPS = 1000
"""The DDPM chain's length given to DDPM-type schedulers (Ho et al. 2020), unless overridden."""

FOLDER, SUITE, USER, DEFAULT = "folder", "suite", "user", "class default"
"""Where a key of the scheduler's configuration came from (the row's ``scheduler_config``)."""


@dataclass
class SchedulerConfig:
    """The ``from_config`` dict of a scheduler and the source of each key in it.

    Attributes:
        values: the keys set (folder, suite and user); the class's defaults fill the rest.
        sources: :data:`FOLDER`, :data:`SUITE` or :data:`USER` for each key of ``values``.
        left_out: folder keys ``CLASS.__init__`` does not accept (not passed on).
    """

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)

    def set(self, items: dict[str, Any], source: str) -> None:
        for key, value in items.items():
            self.values[key] = value
            self.sources[key] = source

    def describe(self, effective: dict[str, Any]) -> str:
        """``folder: k=v, …; suite: …; user: …; class default: …`` over the class's keys, with
        the value each has in the built scheduler (``effective``: its ``config``), then the
        folder keys left out."""
        groups: dict[str, list[str]] = {FOLDER: [], SUITE: [], USER: [], DEFAULT: []}
        for key in sorted(effective):
            groups[self.sources.get(key, DEFAULT)].append(f"{key}={effective[key]}")
        parts = [f"{source}: {', '.join(items)}" for source, items in groups.items() if items]
        if self.left_out:
            parts.append(f"folder, not accepted: {', '.join(sorted(self.left_out))}")
        return "; ".join(parts)


def resolve(
    params: dict[str, inspect.Parameter],
    kind: str | None,
    user: dict[str, Any],
    sde: SDE | None,
    folder: dict[str, Any] | None,
) -> SchedulerConfig:
    """The configuration of a scheduler class with ``__init__`` parameters ``params``.

    Args:
        params: the class's config keys (:func:`init_parameters`).
        kind: ``vp`` (DDPM-type), ``edm`` or ``None``.
        user: the user's ``-o diffusers.KEY`` values for ``__init__`` keys.
        sde: the SDE the model serves (``None``: the VP defaults).
        folder: the model's own scheduler config (``ModelView.scheduler_config``) or ``None``.
    """
    out = SchedulerConfig()
    if folder is None:
        out.set(suite_keys(params, kind, user, sde), SUITE)
    else:
        public = {k: v for k, v in folder.items() if not k.startswith("_")}
        out.set({k: v for k, v in public.items() if k in params}, FOLDER)
        out.left_out = [k for k in public if k not in params]
        if kind == "edm":  # a DDPM folder has no σ range: the SDE's, where the folder has none
            edm = suite_keys(params, kind, user, sde)
            out.set({k: v for k, v in edm.items() if k not in out.values}, SUITE)
    out.set(user, USER)
    return out


def suite_keys(
    params: dict[str, inspect.Parameter], kind: str | None, user: dict[str, Any], sde: SDE | None
) -> dict[str, Any]:
    """The keys the suite sets from the SDE, where the model has no scheduler config.

    DDPM-type: ``num_train_timesteps`` M = 1000 (or the user's), ``beta_start``/``beta_end`` =
    β_min/M, β_max/M of a β-SDE (the VP defaults 0.1, 20 when ``sde`` is None or has no β),
    ``beta_schedule="linear"``, ``prediction_type="epsilon"``, ``clip_sample=False`` (the suite's
    toy data are not images in [−1, 1]). EDM-type: ``sigma_min``/``sigma_max`` = the SDE's
    σ̃(eps), σ̃(T) (:func:`sigma_range`). Only keys ``CLASS.__init__`` takes.
    """
    if {"beta_start", "beta_end"} <= set(params):
        M = int(user.get("num_train_timesteps", NUM_TRAIN_TIMESTEPS))
        suite = {
            "num_train_timesteps": M,
            "beta_start": getattr(sde, "beta_min", 0.1) / M,
            "beta_end": getattr(sde, "beta_max", 20.0) / M,
            "beta_schedule": "linear",
            "prediction_type": "epsilon",
            "clip_sample": False,
        }
        return {k: v for k, v in suite.items() if k in params}
    if {"sigma_min", "sigma_max"} <= set(params) and sde is not None:
        low, high = sigma_range(sde)
        return {"sigma_min": low, "sigma_max": high}
    return {}
