"""A cell's model function: the native output, or a conditional model's guided output with the
batch's labels (:mod:`bench.core.guidance`, :mod:`bench.core.labels`), and its pass counter."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.core.guidance import Guidance, GuidedFn, interval_text, parse_interval
from bench.core.labels import Conditioning, LabelPolicy
from bench.core.metric import MetricContext
from bench.core.sde import SDE
from bench.core.views import ModelFn, ModelView
from bench.errors import Unsupported
from bench.run.grid import Cell

NO_INTERVAL = "none"
"""A conditional cell's ``guidance_interval`` when every noise level is guided (a value, not a
missing one, so reports tell such cells from those with an interval)."""


def guidance_of(cell: Cell) -> Guidance | None:
    """The guidance of a conditional cell (``None`` for an unconditional model's cell)."""
    if cell.guidance is None:
        return None
    text = cell.guidance_interval
    interval = parse_interval(text) if text and text != NO_INTERVAL else None
    return Guidance(cell.guidance, interval)


def check_guidance(cell: Cell, model: Any) -> None:
    """Raise :class:`Unsupported` for a scale other than 1 on a model without a null label."""
    guidance = guidance_of(cell)
    if guidance is not None and guidance.scale != 1.0 and not model.null_label:
        reason = model.null_label_reason or "it has no unconditional output (no null label)"
        raise Unsupported(
            f"guidance scale {guidance.scale:g} needs model {model.spec!r}'s "
            f"unconditional output, but {reason}"
        )


def conditioning_of(cell: Cell, context: MetricContext, model: Any) -> MetricContext:
    """The metric context of a cell: its seed, and its labels and guidance for a conditional
    model."""
    guidance = guidance_of(cell)
    if guidance is None:
        return dataclasses.replace(context, seed=cell.seed)
    policy = LabelPolicy.parse(str(cell.labels))
    conditioning = Conditioning(cell.seed, policy, model.classes, guidance)
    return dataclasses.replace(context, seed=cell.seed, conditioning=conditioning)


class CellModel:
    """What a cell's view evaluates, batch by batch.

    For an unconditional model: its native function (autocast applied), one pass per
    evaluation. For a conditional one: the guided function, whose labels are set per batch from
    the cell's policy, and which counts its passes.
    """

    def __init__(self, cell: Cell, env: Any, sde: SDE) -> None:
        self.cell, self.model, self.device = cell, env.model, env.device
        guidance = guidance_of(cell)
        self.guided: GuidedFn | None = None
        if guidance is None:
            self.fn: ModelFn = env.model_fn(sde)
        else:
            check_guidance(cell, self.model)
            joint = env.guidance_batch == "joint"
            self.guided = GuidedFn(env.conditional_fn(sde), guidance, sde, joint)
            self.fn = self.guided
            self.policy = LabelPolicy.parse(str(cell.labels))

    def view(self, sde: SDE) -> ModelView:
        """A fresh view of this function under ``sde`` (its own NFE counter)."""
        return ModelView(self.fn, self.model.native, sde, self.model.scheduler_config)

    def start_batch(self, start: int, size: int) -> None:
        """Give the batch of samples start..start+size its labels (conditional models)."""
        if self.guided is not None:
            labels = self.policy.labels(self.cell.seed, start, size, self.model.classes)
            self.guided.labels = labels.to(self.device)

    def passes(self, view: ModelView) -> int:
        """Network passes so far (per sample): the view's calls for an unconditional model."""
        return view.calls if self.guided is None else self.guided.passes


GUIDANCE_OPTIONS = ("guidance", "labels", "guidance_interval")
"""``bench run`` options that only a class-conditional model uses."""


def grid_fields(kw: dict[str, Any], model: Any) -> dict[str, Any]:
    """The GridSpec fields of ``--guidance``, ``--labels`` and ``--guidance-interval``: none for
    an unconditional model (the dimension collapses, as ``--snr`` does without a corrector)."""
    if not model.classes:
        return {}
    policy = LabelPolicy.parse(str(kw.get("labels") or "balanced"))
    policy.check(model.classes, model.spec)
    interval = kw.get("guidance_interval")
    return {
        "guidance": tuple(float(s) for s in (kw.get("guidance") or (1.0,))),
        "labels": str(policy),
        "guidance_interval": interval_text(parse_interval(interval)) if interval else NO_INTERVAL,
    }


def unconditional_note(model: Any, given: set[str]) -> str | None:
    """A note when guidance options were given for an unconditional model (they do nothing)."""
    named = [o for o in GUIDANCE_OPTIONS if o in given]
    if model.classes or not named:
        return None
    flags = ", ".join("--" + o.replace("_", "-") for o in named)
    return f"note: model {model.spec!r} is unconditional: {flags} do(es) not apply"
