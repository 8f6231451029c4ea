"""Verdicts: each check's figures taken against thresholds and the null explainers, on intervals.

A method passes a criterion on a model only where its confidence interval lies beyond the criterion's
threshold (if it has one) and beyond the interval of every null explainer run on the same model and
images. A missing figure (NaN: a flat profile, no cause mask) never passes. Null explainers are judged
the same way against the other null explainers, so a test can check that they fail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from gradsum.evaluation.base import CheckResult, Criterion
from gradsum.evaluation.erasure import OUT_OF_DOMAIN

PASS, FAIL, NOT_RUN = "pass", "fail", "not run"
#: Columns of `trust.csv` before the check-specific figures.
TRUST_KEY_COLUMNS = ("model", "method", "null", "verdict", "failed", "summary")


@dataclass(frozen=True)
class Bar:
    """What a figure had to beat: the threshold and the best null explainer, with their values."""

    value: float
    source: str


def _interval(row: Mapping[str, object], column: str) -> tuple[float, float, float]:
    def number(key: str) -> float:
        value = row.get(key)
        return float(value) if isinstance(value, int | float) else math.nan

    return number(column), number(f"{column}_ci_low"), number(f"{column}_ci_high")


def _bars(criterion: Criterion, nulls: Sequence[Mapping[str, object]], method: str) -> list[Bar]:
    """The values the method's interval must clear: the threshold and each other null's far CI end."""
    bars = [] if criterion.threshold is None else [Bar(criterion.threshold, "threshold")]
    for null in nulls:
        if null["method"] == method:
            continue
        _, low, high = _interval(null, criterion.column)
        edge = high if criterion.higher_is_better else low
        if math.isfinite(edge):
            bars.append(Bar(edge, str(null["method"])))
    return bars


def judge(criterion: Criterion, row: Mapping[str, object], nulls: Sequence[Mapping[str, object]]) -> str:
    """`pass` or `fail` for one model × method row on one criterion."""
    _, low, high = _interval(row, criterion.column)
    edge = low if criterion.higher_is_better else high
    if not math.isfinite(edge):
        return FAIL
    for bar in _bars(criterion, nulls, str(row["method"])):
        beaten = edge > bar.value if criterion.higher_is_better else edge < bar.value
        if not beaten:
            return FAIL
    return PASS


def trust_table(results: Mapping[str, CheckResult], null_methods: Sequence[str]) -> pd.DataFrame:
    """One row per model × method: every check's figures, a verdict per criterion and a one-line verdict.

    `null_methods` are the method labels of the null explainers.
    """
    summaries = [r.summary for r in results.values() if not r.summary.empty]
    if not summaries:
        return pd.DataFrame(columns=list(TRUST_KEY_COLUMNS))
    merged = summaries[0]
    for summary in summaries[1:]:
        merged = merged.merge(summary, on=["model", "method"], how="outer")
    merged = merged.sort_values(["model", "method"], ignore_index=True)
    criteria = [c for r in results.values() for c in r.criteria]
    records = merged.to_dict("records")
    rows = []
    for record in records:
        nulls = [r for r in records if r["model"] == record["model"] and r["method"] in null_methods]
        outcome = {c.check: judge(c, record, nulls) for c in criteria}
        failed = [check for check, verdict in outcome.items() if verdict == FAIL]
        rows.append(
            {
                "model": record["model"],
                "method": record["method"],
                "null": record["method"] in null_methods,
                "verdict": PASS if criteria and not failed else FAIL,
                "failed": ", ".join(failed),
                "summary": _summary(criteria, record, outcome),
                **{f"{check}_verdict": verdict for check, verdict in outcome.items()},
                **{k: v for k, v in record.items() if k not in ("model", "method")},
            }
        )
    return pd.DataFrame(rows)


def _summary(criteria: Sequence[Criterion], row: Mapping[str, object], outcome: Mapping[str, str]) -> str:
    """A one-line verdict: each criterion's figure with its interval and its outcome."""
    parts = []
    if row.get("domain") == OUT_OF_DOMAIN:
        parts.append("causal erasure out-of-domain (filled, not re-rendered)")
    for criterion in criteria:
        value, low, high = _interval(row, criterion.column)
        figure = "—" if not math.isfinite(value) else f"{value:.2f} [{low:.2f}, {high:.2f}]"
        parts.append(f"{criterion.check} {criterion.column} {figure} {outcome[criterion.check]}")
    return "; ".join(parts)
