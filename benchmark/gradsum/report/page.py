"""The page's building blocks, shared by every report section: escaped tables and paragraphs, figures
with their intervals as text, and verdicts as coloured spans. They format; they compute nothing."""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd

from gradsum.evaluation.verdicts import NOT_RUN, OUTCOMES


def scroll(html: str) -> str:
    """`html` in a box that scrolls sideways: wide tables (many model × method columns) scroll inside the
    page instead of widening it."""
    return f'<div class="scroll">{html}</div>'


def table(frame: pd.DataFrame) -> str:
    """An escaped HTML table of a DataFrame with compact numbers."""
    html = frame.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:.3g}", border=0, escape=True)
    return scroll(html)


def paragraph(text: str, css: str = "") -> str:
    """`text` escaped as a paragraph, with an optional CSS class."""
    attribute = f' class="{css}"' if css else ""
    return f"<p{attribute}>{escape(text)}</p>"


def interval_text(value: Any, low: Any, high: Any, spec: str = ".2f") -> str:
    """ "value [low, high]", each in the format `spec`; "—" without a value."""
    if not isinstance(value, int | float) or value != value:
        return "—"
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def with_ci(row: Any, column: str) -> str:
    """ "value [low, high]" of a row's `column` and its `_ci_low` / `_ci_high` attributes, two decimals;
    "—" without a value."""
    return interval_text(*(getattr(row, f"{column}{suffix}") for suffix in ("", "_ci_low", "_ci_high")))


def outcome_class(outcome: str) -> str:
    """The CSS class of a verdict outcome ("" for anything else, such as "not evaluated")."""
    return "not-run" if outcome == NOT_RUN else outcome if outcome in OUTCOMES else ""


def verdict_span(text: str, outcome: str, title: str = "") -> str:
    """`text` coloured as `outcome`, with `title` (the reason) as its tooltip."""
    css = outcome_class(outcome)
    attributes = (f' class="{css}"' if css else "") + (f' title="{escape(title)}"' if title else "")
    return f"<span{attributes}>{escape(text)}</span>"
