"""Typed readers of method options: a wrong type or range is an `AttributionError` naming the option.

Options arrive from run configs (YAML) as well as from Python, so `int("abc")` would otherwise reach the
CLI as a bare ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gradsum.errors import AttributionError


def int_option(options: Mapping[str, Any], name: str, minimum: int | None = None) -> int:
    """The option `name` as an int (≥ `minimum` when given); bools and floats are refused."""
    value = options[name]
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        bound = f" ≥ {minimum}" if minimum is not None else ""
        raise AttributionError(f"options: {name} must be an integer{bound}, got {value!r}")
    return value


def float_option(
    options: Mapping[str, Any], name: str, minimum: float | None = None, below: float | None = None
) -> float:
    """The option `name` as a float in [`minimum`, `below`) where those bounds are given."""
    value = options[name]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise AttributionError(f"options: {name} must be a number, got {value!r}")
    number = float(value)
    if (minimum is not None and number < minimum) or (below is not None and number >= below):
        low = "-inf" if minimum is None else f"{minimum:g}"
        high = "inf" if below is None else f"{below:g}"
        raise AttributionError(f"options: {name} must be in [{low}, {high}), got {number}")
    return number


def bool_option(options: Mapping[str, Any], name: str) -> bool:
    """The option `name` as a bool; 0, 1 and strings such as "false" are refused, not guessed."""
    value = options[name]
    if not isinstance(value, bool):
        raise AttributionError(f"options: {name} must be true or false, got {value!r}")
    return value
