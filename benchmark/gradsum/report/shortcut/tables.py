"""The shortcut check's tables as the report reads them from a results folder (`results.checks`), with
the run's cue and foreground classes and the causal check's erasure effect of those classes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gradsum.contract import as_bool, table_schema
from gradsum.errors import ResultsError
from gradsum.evaluation.checks.shortcut import (
    DETECTION_TABLE,
    FINETUNE_METHODS_TABLE,
    FINETUNE_TABLE,
    METHODS_TABLE,
    MODELS_TABLE,
    ONSET_TABLE,
    TABLE_COLUMNS,
    ShortcutOptions,
)
from gradsum.report.results import Results

#: The tables without which there is no section (fine-tuning is optional).
REQUIRED = (MODELS_TABLE, METHODS_TABLE, DETECTION_TABLE, ONSET_TABLE)
#: Yes/no columns (`contract.as_bool` reads them as bool until the check declares its tables).
FLAGS = ("null", "finetuned", "detected")
#: Columns of `ShortcutTables.erasure`.
ERASURE_COLUMNS = ["model", "class", "mean"]
#: The causal profile's effect the fine-tuning table shows before and after.
ERASURE_EFFECT = "abs_delta"


@dataclass(frozen=True)
class ShortcutTables:
    """The shortcut check's tables, flags as booleans; the fine-tuning ones empty when nothing was tuned."""

    models: pd.DataFrame
    methods: pd.DataFrame
    detection: pd.DataFrame
    onset: pd.DataFrame
    finetune: pd.DataFrame
    finetune_methods: pd.DataFrame
    #: the causal check's erasure effect (mean |output change|) of the cue and foreground classes per model:
    #: columns model, class, mean (empty when the causal check did not run)
    erasure: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=ERASURE_COLUMNS))

    @property
    def series(self) -> list[str]:
        """Series names, sorted: the order of colours and onset columns."""
        return sorted(self.models["series"].astype(str).unique())

    @property
    def real_methods(self) -> list[str]:
        """Methods that are not null explainers, by name."""
        return sorted(self.detection.loc[~self.detection["null"], "method"].astype(str))


def _checked(results: Results, name: str) -> pd.DataFrame:
    frame = results.checks.get(name, pd.DataFrame())
    if frame.empty:
        frame = pd.DataFrame(columns=list(TABLE_COLUMNS[name]))
    path = results.path / table_schema(name).file
    missing = [c for c in TABLE_COLUMNS[name] if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")
    return frame.assign(**{flag: as_bool(frame[flag], path) for flag in FLAGS if flag in frame.columns})


def shortcut_tables(results: Results) -> ShortcutTables | None:
    """The shortcut tables of a results folder; None when the check did not run or measured no model."""
    if any(name not in results.checks for name in REQUIRED) or results.checks[MODELS_TABLE].empty:
        return None
    return ShortcutTables(
        models=_checked(results, MODELS_TABLE),
        methods=_checked(results, METHODS_TABLE),
        detection=_checked(results, DETECTION_TABLE),
        onset=_checked(results, ONSET_TABLE),
        finetune=_checked(results, FINETUNE_TABLE),
        finetune_methods=_checked(results, FINETUNE_METHODS_TABLE),
        erasure=erasure_effects(results),
    )


def erasure_effects(results: Results) -> pd.DataFrame:
    """The causal profile (erasure |output change|) of the cue and foreground classes, per model."""
    profiles = results.checks.get("causal_profiles")
    if profiles is None or profiles.empty:
        return pd.DataFrame(columns=ERASURE_COLUMNS)
    classes = [cue_class(results), *foreground_classes(results)]
    chosen = profiles[(profiles["effect"] == ERASURE_EFFECT) & profiles["class"].isin(classes)]
    return chosen[ERASURE_COLUMNS].reset_index(drop=True)


def _options(results: Results) -> dict[str, Any]:
    """The run's `evaluation.options.shortcut` ({} when absent)."""
    options: Any = results.manifest.get("config")
    for key in ("evaluation", "options", "shortcut"):
        options = options.get(key) if isinstance(options, dict) else None
    return options if isinstance(options, dict) else {}


def cue_class(results: Results) -> str:
    """The class the check measured mass on: the run's `evaluation.options.shortcut.cue`, else the default."""
    return str(_options(results).get("cue", ShortcutOptions.cue))


def foreground_classes(results: Results) -> tuple[str, ...]:
    """The classes the check summed as foreground: the run's option, else the check's default."""
    return tuple(str(name) for name in _options(results).get("foreground", ShortcutOptions.foreground))
