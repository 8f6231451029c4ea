"""Fine-tuned models (`gradsum finetune`) beside their base: how much of the decorrelated-R² gap to the
series' fair model the fine-tuning recovered, how the maps moved, and whether it succeeded over its seeds
(the mean recovered share and in-distribution change with Student t intervals: seeds are few)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.profiles import check_columns
from gradsum.evaluation.checks.shortcut.series import SeriesMember, fair_models
from gradsum.evaluation.checks.shortcut.tables import (
    CONFIDENCE,
    FINETUNE_COLUMNS,
    FINETUNE_FIGURES,
    FINETUNE_METHOD_COLUMNS,
    FINETUNE_METHOD_FIGURES,
    METHOD_COLUMNS,
    METHODS_TABLE,
    MODEL_COLUMNS,
    MODELS_TABLE,
)

#: Fine-tuning succeeds when it recovers at least this share of the decorrelated-R² gap ...
RECOVERY_TARGET = 0.5
#: ... and the in-distribution R² falls by no more than this.
R2_TOLERANCE = 0.02


def _gap_recovered(before: float, after: float, clean: float) -> float:
    """(after − before) / (clean − before): the share of the gap to the fair model closed; NaN without one."""
    if not (math.isfinite(clean) and math.isfinite(before) and clean > before):
        return math.nan
    return (after - before) / (clean - before)


def finetune_table(models: pd.DataFrame, described: Mapping[str, SeriesMember]) -> pd.DataFrame:
    """`shortcut_finetune`: per fine-tuned steering model whose base is in the run, its figures beside
    the base's and the share of the decorrelated R² gap to the series' fair model it recovered."""
    check_columns(models, MODEL_COLUMNS, MODELS_TABLE)
    table = models.set_index("model")
    fairs = fair_models(described)
    rows = []
    for info in described.values():
        if not info.finetuned or info.base not in table.index or info.name not in table.index:
            continue
        before, after = table.loc[info.base], table.loc[info.name]
        row: dict[str, object] = {"model": info.name, "base": info.base, "seed": info.seed, "rho": info.rho}
        for figure in FINETUNE_FIGURES:
            row[f"{figure}_before"], row[f"{figure}_after"] = before[figure], after[figure]
        fair = fairs[info.series]
        clean = float(table.loc[fair, "r2_decorrelated"]) if fair in table.index else math.nan
        row["gap_recovered"] = _gap_recovered(
            float(before["r2_decorrelated"]), float(after["r2_decorrelated"]), clean
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(FINETUNE_COLUMNS))


def finetune_method_table(methods: pd.DataFrame, described: Mapping[str, SeriesMember]) -> pd.DataFrame:
    """`shortcut_finetune_methods`: per fine-tuned model × method both it and its base ran, the cue and
    foreground mass shares before and after."""
    check_columns(methods, METHOD_COLUMNS, METHODS_TABLE)
    table = methods.set_index(["model", "method"])
    rows = []
    for info in described.values():
        if not info.finetuned or not info.base:
            continue
        for method in methods.loc[methods["model"] == info.name, "method"]:
            if (info.base, method) not in table.index:
                continue
            before, after = table.loc[(info.base, method)], table.loc[(info.name, method)]
            row: dict[str, object] = {"model": info.name, "base": info.base, "method": method}
            for figure in FINETUNE_METHOD_FIGURES:
                row[f"{figure}_before"], row[f"{figure}_after"] = before[figure], after[figure]
            rows.append(row)
    return pd.DataFrame(rows, columns=list(FINETUNE_METHOD_COLUMNS))


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its two-sided t interval (NaN ends for fewer than two values)."""

    mean: float
    low: float
    high: float
    n: int


def t_interval(values: Sequence[float] | pd.Series, confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t(confidence, n − 1) · sd / √n over the finite values (Student t: seeds are few)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, len(x))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, len(x))


@dataclass(frozen=True)
class SeedChange:
    """One quantity over the seeds of one base: before, after and after − before, each a t interval."""

    seeds: int
    before: Interval
    after: Interval
    change: Interval


def seed_change(before: pd.Series, after: pd.Series) -> SeedChange:
    """The seeds' paired values of one quantity (one row per fine-tuned model) as t intervals."""
    return SeedChange(len(before), t_interval(before), t_interval(after), t_interval(after - before))


@dataclass(frozen=True)
class FinetuneOutcome:
    """What fine-tuning one base did over its seeds: gap recovered, decorrelated R², in-distribution change."""

    base: str
    seeds: int
    recovered: Interval
    decorrelated_before: Interval
    decorrelated_after: Interval
    in_distribution_change: Interval

    @property
    def recovers_half(self) -> bool:
        """Whether the mean recovered share of the gap reaches `RECOVERY_TARGET`."""
        return self.recovered.mean >= RECOVERY_TARGET

    @property
    def keeps_in_distribution(self) -> bool:
        """Whether the mean in-distribution R² falls by no more than `R2_TOLERANCE`."""
        return self.in_distribution_change.mean >= -R2_TOLERANCE

    @property
    def has_gap(self) -> bool:
        """Whether the base had a decorrelated-R² gap to a clean model to recover (not so for the clean one)."""
        return math.isfinite(self.recovered.mean)

    @property
    def success(self) -> bool:
        """Fine-tuning succeeded: it recovered half the gap and kept the in-distribution R²."""
        return self.recovers_half and self.keeps_in_distribution


def finetune_outcomes(finetune: pd.DataFrame) -> list[FinetuneOutcome]:
    """One outcome per fine-tuned base of a `shortcut_finetune` table, by name."""
    outcomes = []
    for base, rows in finetune.groupby(finetune["base"].astype(str), sort=True):
        outcomes.append(
            FinetuneOutcome(
                base=str(base),
                seeds=len(rows),
                recovered=t_interval(rows["gap_recovered"]),
                decorrelated_before=t_interval(rows["r2_decorrelated_before"]),
                decorrelated_after=t_interval(rows["r2_decorrelated_after"]),
                in_distribution_change=t_interval(
                    rows["r2_in_distribution_after"] - rows["r2_in_distribution_before"]
                ),
            )
        )
    return outcomes
