"""Which classes the causal referee calls material: erasure effect beyond its placebo by a fixed margin.

Erasing any class moves a deterministic model's output a little, so "the effect's CI excludes 0" holds
for every class and separates nothing; what is left after the small effects is mostly how many pixels
the erasure changed (area). The referee therefore compares each erasure with its placebo, the same
class re-rendered with only its texture redrawn (`erasure.placebo_sample`), and calls a class material
for a model when the paired image-bootstrap CI of mean(|Δ erase| − |Δ placebo|), over the images that
contain the class, lies above the task's margin δ. δ is declared here, before any result is seen
(`MATERIALITY`), and a run may override it per task (`options.causal.materiality`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gradsum.aggregation.profiles import check_columns, mean_ci
from gradsum.errors import SpecError

#: Task → the smallest mean output change that counts as a use of a class, in the model's output units.
#: Steering: about the default models' test MAE (a smaller change is within the model's own error).
#: Obstacle: a change of 0.5 in the logit (at the decision boundary, p = 0.50 to p = 0.62).
MATERIALITY: dict[str, float] = {"steering": 0.02, "obstacle": 0.5}
#: Columns of `causal_materiality.csv`: one row per model × erased class.
MATERIALITY_COLUMNS = (
    "model",
    "task",
    "class",
    "effect",
    "placebo",
    "excess",
    "excess_ci_low",
    "excess_ci_high",
    "margin",
    "material",
    "n_images",
)
#: The causal-effect columns the referee reads (a subset of `causal.CAUSAL_EFFECT_COLUMNS`).
REFEREE_COLUMNS = ("model", "task", "image", "class", "abs_delta", "placebo_abs_delta")


def materiality_margins(overrides: Mapping[str, Any] | None = None) -> dict[str, float]:
    """`MATERIALITY` with the run's per-task overrides; unknown tasks and negative or non-finite margins
    are errors."""
    chosen = dict(MATERIALITY)
    if overrides is None:
        return chosen
    if not isinstance(overrides, Mapping):
        raise SpecError(f"options.causal.materiality: need a mapping task → margin, got {overrides!r}")
    unknown = sorted(set(overrides) - set(MATERIALITY))
    if unknown:
        raise SpecError(
            f"options.causal.materiality: unknown task(s) {', '.join(map(str, unknown))}; "
            f"valid: {', '.join(sorted(MATERIALITY))}"
        )
    for task, value in overrides.items():
        margin = float(value)
        if not math.isfinite(margin) or margin < 0:
            raise SpecError(f"options.causal.materiality.{task}: need a finite margin >= 0, got {value!r}")
        chosen[task] = margin
    return chosen


def margin_of(task: str, margins: Mapping[str, float]) -> float:
    """The materiality margin of `task` (an error naming the tasks that have one)."""
    if task not in margins:
        raise SpecError(f"task {task!r} has no materiality margin; valid: {', '.join(sorted(margins))}")
    return float(margins[task])


def materiality_table(
    effects: pd.DataFrame,
    margins: Mapping[str, float],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per model × class of `effects` (`causal_effects` rows): is the class material?

    `excess` is the mean over the images holding the class of |Δ erase| − |Δ placebo| per image (the
    pair shares the image, so the bootstrap resamples images, a paired interval). Without a placebo
    (a real truth set, filled out-of-domain) there is nothing to subtract: the excess is the erasure
    effect itself, `placebo` is NaN, and the rows carry the check's out-of-domain flag.
    """
    check_columns(effects, REFEREE_COLUMNS, "causal effects")
    rows = []
    for (model, cls), group in effects.groupby(["model", "class"], sort=True):
        task = str(group["task"].iloc[0])
        margin = margin_of(task, margins)
        effect = group["abs_delta"].to_numpy(float)
        placebo = group["placebo_abs_delta"].to_numpy(float)
        excess = effect - np.nan_to_num(placebo, nan=0.0)
        rng = np.random.default_rng([seed, zlib.crc32(f"{model}\0{cls}\0materiality".encode())])
        mean, low, high = mean_ci(excess, rng, n_resamples, confidence)
        rows.append(
            {
                "model": model,
                "task": task,
                "class": cls,
                "effect": float(np.nanmean(effect)) if np.isfinite(effect).any() else math.nan,
                "placebo": float(np.nanmean(placebo)) if np.isfinite(placebo).any() else math.nan,
                "excess": mean,
                "excess_ci_low": low,
                "excess_ci_high": high,
                "margin": margin,
                # a NaN interval (no finite effect) compares False: never material by default
                "material": bool(low > margin),
                "n_images": int(group["image"].nunique()),
            }
        )
    return pd.DataFrame(rows, columns=list(MATERIALITY_COLUMNS))


def material_classes(table: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """Model → its material classes (sorted by name) from a `materiality_table`; every model of the
    table is a key, with () when none of its classes is material."""
    check_columns(table, ("model", "class", "material"), "causal materiality")
    return {
        str(model): tuple(sorted(str(c) for c in group.loc[group["material"].astype(bool), "class"]))
        for model, group in table.groupby("model", sort=True)
    }
