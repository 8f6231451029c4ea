"""The shortcut check: a test with a known answer for every attribution method (BAM-style).

The synthetic truth set plants a shortcut: in the train split the sky tint (warm = +1, cool = -1) agrees
with the steering sign with probability rho. Models trained at several rho from one spec form a series
(`series`). How strongly each model uses the tint is measured without any attribution (`measures`): the
pull of a tint flip, and the errors on the tint splits. Each method then has to find it (`detection`):
its mass share on the cue class (sky) should rise with the measured pull across models, and a model's
sky mass should exceed that of its series' fair (rho 0) model. Fine-tuned models (`gradsum finetune`)
are set beside their base (`finetuning`). Every number and decision of the study is computed here; the
report only formats them. `tables` holds the tables' names and columns, `check` the registered check.
"""

from __future__ import annotations

from gradsum.evaluation.checks.shortcut.check import ShortcutCheck
from gradsum.evaluation.checks.shortcut.detection import (
    PERMUTATIONS,
    VERDICT_COLUMN,
    detection_outcomes,
    detection_table,
    image_shares,
    method_table,
    onset_table,
    permutation_p_value,
    summary_table,
)
from gradsum.evaluation.checks.shortcut.finetuning import (
    R2_TOLERANCE,
    RECOVERY_TARGET,
    FinetuneOutcome,
    Interval,
    SeedChange,
    finetune_method_table,
    finetune_outcomes,
    finetune_table,
    seed_change,
    t_interval,
)
from gradsum.evaluation.checks.shortcut.measures import (
    model_table,
    shortcut_predictions,
    split_errors,
    steering_models,
    tint_effects,
)
from gradsum.evaluation.checks.shortcut.options import (
    DECORRELATED_HINT,
    ShortcutOptions,
    TintFlipping,
    error_splits,
    tint_flipper,
    tint_split,
)
from gradsum.evaluation.checks.shortcut.series import SeriesMember, fair_models, series_members
from gradsum.evaluation.checks.shortcut.tables import (
    CONFIDENCE,
    DETECTION_COLUMNS,
    DETECTION_CRITERION,
    DETECTION_TABLE,
    FINETUNE_COLUMNS,
    FINETUNE_FIGURES,
    FINETUNE_METHOD_COLUMNS,
    FINETUNE_METHOD_FIGURES,
    FINETUNE_METHODS_TABLE,
    FINETUNE_TABLE,
    IMAGE_SHARE_COLUMNS,
    METHOD_COLUMNS,
    METHODS_TABLE,
    MODEL_COLUMNS,
    MODELS_TABLE,
    ONSET_COLUMNS,
    ONSET_TABLE,
    PREDICTION_COLUMNS,
    SUMMARY_COLUMNS,
    TABLE_COLUMNS,
    TASK,
    TINT_EFFECT_COLUMNS,
)

__all__ = [
    "CONFIDENCE",
    "DECORRELATED_HINT",
    "DETECTION_COLUMNS",
    "DETECTION_CRITERION",
    "DETECTION_TABLE",
    "FINETUNE_COLUMNS",
    "FINETUNE_FIGURES",
    "FINETUNE_METHODS_TABLE",
    "FINETUNE_METHOD_COLUMNS",
    "FINETUNE_METHOD_FIGURES",
    "FINETUNE_TABLE",
    "IMAGE_SHARE_COLUMNS",
    "METHODS_TABLE",
    "METHOD_COLUMNS",
    "MODELS_TABLE",
    "MODEL_COLUMNS",
    "ONSET_COLUMNS",
    "ONSET_TABLE",
    "PERMUTATIONS",
    "PREDICTION_COLUMNS",
    "R2_TOLERANCE",
    "RECOVERY_TARGET",
    "SUMMARY_COLUMNS",
    "TABLE_COLUMNS",
    "TASK",
    "TINT_EFFECT_COLUMNS",
    "VERDICT_COLUMN",
    "FinetuneOutcome",
    "Interval",
    "SeedChange",
    "SeriesMember",
    "ShortcutCheck",
    "ShortcutOptions",
    "TintFlipping",
    "detection_outcomes",
    "detection_table",
    "error_splits",
    "fair_models",
    "finetune_method_table",
    "finetune_outcomes",
    "finetune_table",
    "image_shares",
    "method_table",
    "model_table",
    "onset_table",
    "permutation_p_value",
    "seed_change",
    "series_members",
    "shortcut_predictions",
    "split_errors",
    "steering_models",
    "summary_table",
    "t_interval",
    "tint_effects",
    "tint_flipper",
    "tint_split",
]
