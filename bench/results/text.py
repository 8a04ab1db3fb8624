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


def heading(text: str, level: int, markdown: bool) -> str:
    """A Markdown heading, or the text underlined (``=``, ``-``, ``·`` by level)."""
    if markdown:
        return f"{'#' * level} {text}"
    return text + "\n" + ("=" if level == 1 else "-" if level == 2 else "·") * len(text)
