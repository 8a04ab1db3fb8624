"""click parameter types for comma lists (no heavy imports)."""

from __future__ import annotations

import math
from typing import Any

import click


class CommaList(click.ParamType):
    """``a,b,c`` → a tuple of stripped strings (names are checked against the registry later)."""

    name = "LIST"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        items = tuple(v.strip() for v in str(value).split(",") if v.strip())
        if not items:
            self.fail("expected a comma-separated list of names", param, ctx)
        return tuple(dict.fromkeys(items))


class NumberList(click.ParamType):
    """``1,10,100`` → a tuple of numbers, each checked against a lower bound."""

    def __init__(self, kind: type, minimum: float, inclusive: bool = True) -> None:
        self.kind = kind
        self.minimum = minimum
        self.inclusive = inclusive
        self.name = f"{kind.__name__.upper()}S"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[Any, ...]:
        if isinstance(value, tuple):
            return value
        out = []
        for text in str(value).split(","):
            try:
                number = self.kind(text.strip())
            except ValueError:
                self.fail(f"{text.strip()!r} is not a valid {self.kind.__name__}", param, ctx)
            if not math.isfinite(number):
                self.fail(f"{text.strip()!r} is not a finite number", param, ctx)
            ok = number >= self.minimum if self.inclusive else number > self.minimum
            if not ok:
                op = ">=" if self.inclusive else ">"
                self.fail(
                    f"{number} is out of range: each value must be {op} {self.minimum}", param, ctx
                )
            out.append(number)
        return tuple(dict.fromkeys(out))


class IntervalParam(click.ParamType):
    """``LO,HI`` → two numbers with 0 ≤ LO < HI (HI may be ``inf``), kept as text."""

    name = "LO,HI"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        parts = str(value).split(",")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not LO,HI (two numbers, e.g. 0.28,5.42)", param, ctx)
        if not (0 <= lo < hi) or math.isnan(hi):
            self.fail(f"{value!r}: need 0 <= LO < HI", param, ctx)
        return f"{lo!r},{hi!r}"


class ThreadsParam(click.ParamType):
    name = "auto|N"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value)
        if text == "auto" or (text.isdigit() and int(text) >= 1):
            return text
        self.fail(f"{text!r} is not 'auto' or a positive integer", param, ctx)


DTYPE_NAMES = ("float32", "float64", "bf16", "fp16")
"""``--dtype`` values (their torch dtypes: :data:`bench.run.cells.DTYPES`)."""

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def dtype_option(help: str) -> Any:
    """``--dtype`` of ``bench run`` and ``bench profile``."""
    return click.option(
        "--dtype", type=click.Choice(DTYPE_NAMES), default="float32", show_default=True, help=help
    )


def compile_option(help: str) -> Any:
    """``--compile [MODE]`` (a bare flag means ``default``) of ``bench run`` and ``bench profile``."""
    return click.option(
        "--compile",
        "compile_mode",
        default=None,
        is_flag=False,
        flag_value="default",
        type=click.Choice(COMPILE_MODES),
        help=help,
    )


GUIDANCE_BATCHINGS = ("auto", "joint", "split")
"""``--guidance-batch`` values (:data:`bench.core.guidance.BATCHINGS`, which imports torch)."""


def guidance_batch_option() -> Any:
    """``--guidance-batch`` of ``bench run`` and ``bench profile``."""
    return click.option(
        "--guidance-batch",
        type=click.Choice(GUIDANCE_BATCHINGS),
        default="auto",
        show_default=True,
        help="A guided evaluation's two passes as one forward of 2B (joint, as diffusers) or two "
        "of B (split); auto: split for a network on the CPU, else joint. Recorded.",
    )
