"""Aggregation: GradSUM scores per image and class, dataset profiles with CIs, and profile comparisons.

Profiles over different images (two truth sets) are compared with unpaired tests.
Scores are computed on the device for a whole batch at once; profiles and comparisons are pandas
tables with the columns that `gradsum.contract` declares for the results folder's per_image, profiles
and comparisons tables.
"""

from __future__ import annotations

from gradsum.aggregation.compare import (
    ALPHA,
    COMPARISON_COLUMNS,
    SAMPLE_COLUMNS,
    compare,
    compare_all,
    comparison_pairs,
    holm,
    paired_test,
    same_images,
    spearman_ci,
    unpaired_test,
)
from gradsum.aggregation.profiles import (
    PER_IMAGE_COLUMNS,
    PROFILE_COLUMNS,
    mean_ci,
    per_image_frame,
    profiles,
)
from gradsum.aggregation.results import read_runs
from gradsum.aggregation.scores import (
    RESOLUTIONS,
    ClassScores,
    ClassWeights,
    LabelBatch,
    class_fractions,
    class_scores,
    prepare_labels,
)

__all__ = [
    "ALPHA",
    "COMPARISON_COLUMNS",
    "PER_IMAGE_COLUMNS",
    "PROFILE_COLUMNS",
    "RESOLUTIONS",
    "SAMPLE_COLUMNS",
    "ClassScores",
    "ClassWeights",
    "LabelBatch",
    "class_fractions",
    "class_scores",
    "compare",
    "compare_all",
    "comparison_pairs",
    "holm",
    "mean_ci",
    "paired_test",
    "per_image_frame",
    "prepare_labels",
    "profiles",
    "read_runs",
    "same_images",
    "spearman_ci",
    "unpaired_test",
]
