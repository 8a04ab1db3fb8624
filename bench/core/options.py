"""Per-component options: a nested ``Options`` dataclass, set from ``-o NAME.KEY=VALUE`` strings."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from bench.errors import BenchError


@dataclasses.dataclass
class NoOptions:
    """A component without options."""


@dataclasses.dataclass
class FreeOptions:
    """Options with any keys, for components that wrap a library's own settings (e.g. a diffusers
    scheduler's config): ``-o NAME.KEY=VALUE`` stores VALUE (a JSON literal, else the text) under
    KEY in ``values``; the component checks the keys when it is built."""

    values: dict[str, Any] = dataclasses.field(default_factory=dict)


def accepts(options_cls: type, key: str) -> bool:
    """Whether ``options_cls`` has an option ``key`` (free-form options accept every key)."""
    return issubclass(options_cls, FreeOptions) or key in option_fields(options_cls)


def literal(text: str) -> Any:
    """A JSON literal (number, bool, null, list, object), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def default_options(component: type, options: Any) -> Any:
    """``options`` if given, else the component's default ``Options()``."""
    return options if options is not None else getattr(component, "Options", NoOptions)()


def options_of(component: type) -> dict[str, Any]:
    """Default option values of a component class (for listings)."""
    opts = getattr(component, "Options", NoOptions)
    return {f.name: f.default for f in dataclasses.fields(opts)}


def option_fields(options_cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(options_cls)}


def coerce(options_cls: type, key: str, text: str, owner: str) -> Any:
    """Convert ``text`` to the declared type of field ``key``; a clear error otherwise."""
    fields = option_fields(options_cls)
    if key not in fields:
        valid = ", ".join(fields) or "(none)"
        raise BenchError(f"{owner} has no option {key!r}; valid options: {valid}")
    hints = typing.get_type_hints(options_cls)
    kind = hints[key]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if text.lower() in ("none", "null") and type(None) in typing.get_args(kind):
        return None
    target = args[0] if args else kind
    try:
        if target is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if target in (int, float, str):
            return target(text)
        return json.loads(text)
    except ValueError:
        raise BenchError(
            f"{owner} option {key}={text!r} is not a valid {target.__name__}"
        ) from None


def build(options_cls: type, values: dict[str, Any], owner: str) -> Any:
    """An ``Options`` instance from already-typed values, validated by ``__post_init__`` if any."""
    try:
        return options_cls(**values)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{owner}: {exc}") from None


def apply_sde_defaults(
    values: dict[tuple[str, str], dict[str, Any]],
    sde_defaults: dict[str, dict[str, Any]],
    sdes: tuple[str, ...],
) -> None:
    """Fill in a model's SDE option defaults (``ScoreModel.sde_defaults``) below the user's own.

    ``values`` maps ``("sdes", name)`` to the user's ``-o`` values (``OptionSet.values``); it is
    updated in place. A value the user set always wins; SDEs not in ``sdes`` are left alone.
    """
    for sde in sdes:
        for key, value in sde_defaults.get(sde, {}).items():
            values.setdefault(("sdes", sde), {}).setdefault(key, value)
