"""The shortcut check's tables: their names and columns, the verdict's criterion, and the shared figures
of every interval (confidence level, the per-figure generator, the percentile interval)."""

from __future__ import annotations

import math
import zlib

import numpy as np

from gradsum.evaluation.base import MODELS, Criterion, check_table

#: The only task whose models are measured: the tint is planted against the steering sign.
TASK = "steering"
#: Confidence level of every interval of the check (percentile bootstrap; Student t over seeds).
CONFIDENCE = 0.95

MODELS_TABLE = "shortcut_models"
METHODS_TABLE = "shortcut_methods"
DETECTION_TABLE = "shortcut_detection"
ONSET_TABLE = "shortcut_onset"
FINETUNE_TABLE = "shortcut_finetune"
FINETUNE_METHODS_TABLE = "shortcut_finetune_methods"


def ci_columns(*names: str) -> tuple[str, ...]:
    """Each figure's column followed by its `_ci_low` and `_ci_high` columns."""
    return tuple(column for name in names for column in (name, f"{name}_ci_low", f"{name}_ci_high"))


#: Per model × evaluated image: the outputs on the image and on its tint flip (kept in the cache).
TINT_EFFECT_COLUMNS = (
    "model",
    "image",
    "tint_from",
    "tint_to",
    "output",
    "flipped_output",
    "pull",
    "abs_effect",
)
#: Per model × split × scene of `shortcut_predictions`: the steering target and the model's output.
PREDICTION_COLUMNS = ("model", "split", "index", "image", "target", "output")
#: Columns of `shortcut_models.csv`: one row per steering model.
MODEL_COLUMNS = (
    "model",
    "series",
    "rho",
    "finetuned",
    "base",
    *ci_columns("pull", "abs_effect"),
    "n_images",
    "r2_test",
    "mae_test",
    "r2_agreeing",
    "mae_agreeing",
    "r2_decorrelated",
    "mae_decorrelated",
    "r2_decorrelated_ci_low",
    "r2_decorrelated_ci_high",
    *ci_columns("r2_in_distribution"),
    "gap",
)
#: Columns of `shortcut_methods.csv`: one row per steering model × planned method.
METHOD_COLUMNS = (
    "model",
    "method",
    "null",
    "series",
    "rho",
    "finetuned",
    *ci_columns("cue_score", "cue_mass_share", "foreground_mass_share", "mass_diff_vs_fair"),
    "detected",
)
#: Columns of `shortcut_detection.csv`: one row per method.
DETECTION_COLUMNS = (
    "method",
    "null",
    "n_models",
    *ci_columns("spearman"),
    "p_value",
    "spearman_vs_rho",
)
#: Columns of `shortcut_onset.csv`: one row per method × series.
ONSET_COLUMNS = ("method", "null", "series", "first_rho", "rhos_detected")
#: The figures `shortcut_finetune.csv` sets before (the base) and after (the fine-tuned model).
FINETUNE_FIGURES = ("r2_decorrelated", "r2_in_distribution", "r2_test", "pull")
#: Columns of `shortcut_finetune.csv`: one row per fine-tuned steering model whose base is in the run.
FINETUNE_COLUMNS = (
    "model",
    "base",
    "seed",
    "rho",
    *(f"{figure}_{when}" for figure in FINETUNE_FIGURES for when in ("before", "after")),
    "gap_recovered",
)
#: The map figures `shortcut_finetune_methods.csv` sets before and after.
FINETUNE_METHOD_FIGURES = ("cue_mass_share", "foreground_mass_share")
#: Columns of `shortcut_finetune_methods.csv`: one row per fine-tuned model × method both models ran.
FINETUNE_METHOD_COLUMNS = (
    "model",
    "base",
    "method",
    *(f"{figure}_{when}" for figure in FINETUNE_METHOD_FIGURES for when in ("before", "after")),
)
#: Every table the check writes, with its columns' dtypes.
TABLES = (
    check_table(
        MODELS_TABLE, MODEL_COLUMNS, text=("series", "base"), ints=("n_images",), bools=("finetuned",)
    ),
    check_table(METHODS_TABLE, METHOD_COLUMNS, text=("series",), bools=("null", "finetuned", "detected")),
    check_table(DETECTION_TABLE, DETECTION_COLUMNS, ints=("n_models",), bools=("null",)),
    check_table(ONSET_TABLE, ONSET_COLUMNS, text=("series", "rhos_detected"), bools=("null",)),
    check_table(FINETUNE_TABLE, FINETUNE_COLUMNS, text=("base",)),
    check_table(FINETUNE_METHODS_TABLE, FINETUNE_METHOD_COLUMNS, text=("base",)),
)
#: Table name → its columns: every table the check writes.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    MODELS_TABLE: MODEL_COLUMNS,
    METHODS_TABLE: METHOD_COLUMNS,
    DETECTION_TABLE: DETECTION_COLUMNS,
    ONSET_TABLE: ONSET_COLUMNS,
    FINETUNE_TABLE: FINETUNE_COLUMNS,
    FINETUNE_METHODS_TABLE: FINETUNE_METHOD_COLUMNS,
}
#: Per model × method × image: the map's shares on the cue and the foreground, the cue's GradSUM score.
IMAGE_SHARE_COLUMNS = ("model", "method", "image", "cue_mass_share", "foreground_mass_share", "cue_score")

#: The verdict-deciding figure: does the method's cue mass follow the measured pull across models?
#: The claim is about models (does the mass follow the pull from model to model?), so the verdict reads
#: the permutation p over pairings of the models; the image-bootstrap CI is a secondary figure.
DETECTION_CRITERION = Criterion(
    "shortcut",
    "shortcut_detection",
    higher_is_better=True,
    over=MODELS,
    text="Spearman correlation over the steering models between the method's mean mass share on the "
    "shortcut cue (sky) and the measured pull of the tint (output change when only the sky tint flips), "
    "decided by its one-sided permutation p over pairings of the models (image-bootstrap CI beside it)",
)
#: Columns of the check's summary (the trust table's shortcut columns), in order.
SUMMARY_COLUMNS = (
    "model",
    "method",
    *ci_columns(DETECTION_CRITERION.column),
    f"{DETECTION_CRITERION.column}_p",
)


def number(value: object) -> float:
    """`value` as a float; NaN for anything that is not a number (booleans included)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def figure_rng(seed: int, *key: str) -> np.random.Generator:
    """A generator of its own per figure, so adding a model or method changes no other interval."""
    return np.random.default_rng([seed, zlib.crc32("\0".join(key).encode())])


def percentile_interval(point: float, resampled: np.ndarray) -> tuple[float, float]:
    """Percentile interval of the finite resampled values; NaN where the point or all resamples are."""
    finite = resampled[np.isfinite(resampled)]
    if not math.isfinite(point) or finite.size == 0:
        return math.nan, math.nan
    tail = 50 * (1 - CONFIDENCE)
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
