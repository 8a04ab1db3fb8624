"""The settings of a diffusers VP model: ``diffusers:PATH[,label=…][,quantize=…][,std=…]`` and
``-o diffusers.KEY=VALUE``, merged and checked against what the folder's schedule allows."""

from __future__ import annotations

import os
from typing import Any

from bench_plugins.score_models import diffusers_folder as folder

from bench.errors import BenchError

STD_CHOICES = ("discrete", "continuous")
LABEL_CHOICES = ("sigma", "index", "time")
BOOL_CHOICES = ("true", "false")
SETTINGS = {"std": STD_CHOICES, "label": LABEL_CHOICES, "quantize": BOOL_CHOICES}
"""The model's settings: ``,KEY=VALUE`` after the location, or ``-o diffusers.KEY=VALUE``."""
NATIVE_OF_PREDICTION = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
"""A VP folder's ``prediction_type`` → the model's native output (``std=continuous``)."""


def parse_arg(arg: str | None) -> tuple[str, dict[str, str]]:
    """``PATH_OR_ID[,key=value...]`` → (location, settings); a whole-ARG path wins."""
    if not arg:
        raise BenchError(
            "the diffusers model needs a folder or a cached model id: "
            "--model diffusers:PATH_OR_ID (e.g. diffusers:./ddpm-cifar10-32)"
        )
    if os.path.exists(os.path.expanduser(arg)) or "," not in arg:
        return arg, {}
    location, *items = arg.split(",")
    settings = {}
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or value not in SETTINGS.get(key, ()):
            use = ", ".join(f"{k}={'|'.join(v)}" for k, v in SETTINGS.items())
            raise BenchError(
                f"diffusers model setting {item!r} is not understood: use {use} (VP models only)"
            )
        settings[key] = value
    return location, settings


def merge_settings(settings: dict[str, str], options: Any) -> dict[str, str]:
    """The ARG's settings and the ``-o diffusers.KEY`` options together; a clash is an error."""
    merged = dict(settings)
    for key in SETTINGS:
        value = getattr(options, key, None) if options is not None else None
        if value is None:
            continue
        value = str(value).lower() if isinstance(value, bool) else value
        if merged.get(key, value) != value:
            raise BenchError(
                f"diffusers setting {key} is given twice: {key}={merged[key]} in --model and "
                f"-o diffusers.{key}={value}"
            )
        merged[key] = value
    return merged


def vp_settings(
    settings: dict[str, str], schedule: folder.Schedule, location: str
) -> tuple[str, str, bool]:
    """(std, label, quantize) of a model from its settings; a setting that does not apply to it
    is an error (VE and flow models take none; continuous-label models only ``std=continuous``)."""
    given = ", ".join(f"{k}={v}" for k, v in settings.items())
    if not isinstance(schedule, folder.VPSchedule):
        if settings:
            raise BenchError(
                f"{given} applies to VP (DDPM) models only; {location!r} is a "
                f"{'VE' if schedule.sde == 've' else 'flow'} model"
            )
        return "continuous", "sigma", False
    if schedule.continuous_labels:
        wrong = {k: v for k, v in settings.items() if (k, v) != ("std", "continuous")}
        if wrong:
            raise BenchError(
                f"{', '.join(f'{k}={v}' for k, v in wrong.items())} does not apply to "
                f"{location!r}: its {schedule.scheduler} has timestep_type='continuous' with "
                "v-prediction, so its labels are 0.25·log σ(t) with the VP SDE's continuous "
                "σ(t) = std(t)/a(t)"
            )
        return "continuous", "sigma", False
    label = settings.get("label", "sigma")
    if label != "sigma" and "quantize" in settings:
        raise BenchError(
            f"{given}: quantize applies to label=sigma (the timestep of the state's noise level)"
        )
    if label == "sigma":
        if settings.get("std", "continuous") != "continuous":
            raise BenchError(
                f"{given}: std=discrete applies to label=index|time; label=sigma converts ε̂ "
                "with the state's own std(t), the noise level its timestep is chosen for"
            )
        return "continuous", label, settings.get("quantize") == "true"
    return settings.get("std", "discrete"), label, False


def native_output(schedule: folder.Schedule, std: str) -> str:
    """What the network outputs as the views name it: ``velocity`` (flow), ε̂/v̂/x̂₀ of a VP model
    converted with the state's own std (``std=continuous``), else ``score`` (VE, whose UNet
    divides by σ itself; VP with the table's discrete std, converted by the model's
    ``_vp_score``)."""
    if isinstance(schedule, folder.FlowSchedule):
        return "velocity"
    if isinstance(schedule, folder.VPSchedule) and std == "continuous":
        return NATIVE_OF_PREDICTION[schedule.prediction_type]
    return "score"
