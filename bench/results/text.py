"""Numbers and tables as text: significant digits, ``mean ± ci``, terminal and Markdown tables."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def fmt(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; ``-`` for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) else str(value)


def estimate(mean: float, ci: float, digits: int = 4) -> str:
    """``mean ± ci`` (the interval with two significant digits), or the mean alone."""
    if mean is None or math.isnan(mean):
        return "-"
    if ci is None or math.isnan(ci):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {ci:.2g}"


def rounded(mean: float, ci: float) -> str:
    """``mean ± ci`` with the interval to two significant digits and the mean to the same
    decimal place (``0.07526 ± 0.01`` → ``0.075 ± 0.010``): digits below the noise are not
    printed. The mean alone when the interval is unknown; :func:`estimate` when the interval is 0
    or too small for fixed-point text."""
    if mean is None or math.isnan(mean):
        return "-"
    if ci is None or math.isnan(ci) or ci <= 0 or abs(ci) < 1e-5:
        return estimate(mean, ci)
    ci = float(f"{ci:.2g}")
    decimals = max(0, 1 - math.floor(math.log10(ci)))
    if abs(mean) >= 1 and math.floor(math.log10(abs(mean))) + 1 + decimals > 6:
        return estimate(mean, ci)  # a mean known to more than 6 digits: no fixed point
    if decimals == 0:
        step = 10 ** (math.floor(math.log10(ci)) - 1)
        return f"{round(mean / step) * step:.0f} ± {ci:.0f}"
    return f"{mean:.{decimals}f} ± {ci:.{decimals}f}"


def signed(mean: float, ci: float) -> str:
    """A difference with its sign, ``+0.012 ± 0.004``."""
    text = estimate(mean, ci)
    return text if text.startswith("-") else f"+{text}"


def text_table(table: pd.DataFrame) -> str:
    """A plain aligned table for the terminal."""
    if table.empty:
        return "(empty)"
    return table.to_string(index=False, na_rep="-")


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, others right-aligned)."""
    if table.empty:
        return "_(empty)_"

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in table.columns) + " |"
    align = "|" + "|".join(":---" if i == 0 else "---:" for i in range(table.shape[1])) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, align, *body])


def aligned(table: pd.DataFrame, left: int = 0, gap: int = 2) -> list[str]:
    """The lines of an aligned text table: the first ``left`` columns left-aligned (names),
    the others right-aligned (numbers), ``gap`` spaces apart, no trailing spaces."""
    cells = [[str(c) for c in table.columns]]
    cells += [["-" if v is None else str(v) for v in row] for row in table.itertuples(False)]
    widths = [max(len(r[i]) for r in cells) for i in range(table.shape[1])]
    return [
        (" " * gap)
        .join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
        .rstrip()
        for r in cells
    ]


def wrap(line: str, width: int, indent: str = "  ") -> list[str]:
    """A note of one logical line broken at spaces to ``width`` columns, continuation lines
    indented (a word longer than the width stays whole)."""
    import textwrap

    if len(line) <= width:
        return [line]
    return textwrap.wrap(
        line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def heading(text: str, level: int, markdown: bool) -> str:
    """A Markdown heading, or the text underlined (``=``, ``-``, ``·`` by level)."""
    if markdown:
        return f"{'#' * level} {text}"
    return text + "\n" + ("=" if level == 1 else "-" if level == 2 else "·") * len(text)
