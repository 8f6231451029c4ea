"""The report's Shortcuts section and figures, from the `shortcut` trust check's tables.

`tables` reads the check's tables from a results folder, `section` formats them as text and HTML tables,
`figures` draws them. The numbers and decisions shown (intervals, the fine-tuning thresholds, each
method's verdict) come from `gradsum.evaluation.checks.shortcut`.
"""

from __future__ import annotations

from gradsum.report.shortcut.figures import (
    detection_figure,
    detection_points,
    finetune_figure,
    series_colors,
    series_figure,
    series_points,
)
from gradsum.report.shortcut.section import (
    detection_sentence,
    detection_table,
    finetune_long,
    finetune_sentence,
    finetune_table,
    interval_text,
    models_table,
    onset_columns,
    shortcut_findings,
    shortcut_section,
)
from gradsum.report.shortcut.tables import (
    ShortcutTables,
    cue_class,
    erasure_effects,
    foreground_classes,
    shortcut_tables,
)

__all__ = [
    "ShortcutTables",
    "cue_class",
    "detection_figure",
    "detection_points",
    "detection_sentence",
    "detection_table",
    "erasure_effects",
    "finetune_figure",
    "finetune_long",
    "finetune_sentence",
    "finetune_table",
    "foreground_classes",
    "interval_text",
    "models_table",
    "onset_columns",
    "series_colors",
    "series_figure",
    "series_points",
    "shortcut_findings",
    "shortcut_section",
    "shortcut_tables",
]
