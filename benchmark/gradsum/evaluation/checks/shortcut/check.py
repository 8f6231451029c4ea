"""The `shortcut` trust check: it measures each steering model's pull of the tint and each method's cue
mass, and writes every table of the study (see the package's docstring)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from gradsum.errors import TruthSetError
from gradsum.evaluation.base import CheckResult, EvaluationContext, TrustCheck, register_check
from gradsum.evaluation.checks.shortcut.detection import (
    detection_table,
    image_shares,
    method_table,
    onset_table,
    summary_table,
)
from gradsum.evaluation.checks.shortcut.finetuning import finetune_method_table, finetune_table
from gradsum.evaluation.checks.shortcut.measures import (
    model_table,
    shortcut_predictions,
    steering_models,
    tint_effects,
)
from gradsum.evaluation.checks.shortcut.options import ShortcutOptions, error_splits, tint_flipper, tint_split
from gradsum.evaluation.checks.shortcut.series import series_members
from gradsum.evaluation.checks.shortcut.tables import (
    DETECTION_CRITERION,
    DETECTION_TABLE,
    FINETUNE_METHODS_TABLE,
    FINETUNE_TABLE,
    IMAGE_SHARE_COLUMNS,
    METHODS_TABLE,
    MODELS_TABLE,
    ONSET_TABLE,
    SUMMARY_COLUMNS,
    TABLE_COLUMNS,
    TABLES,
)
from gradsum.evaluation.referee import gradsum_rows
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import TruthSet

log = logging.getLogger(__name__)


def _null_labels(context: EvaluationContext, models: Sequence[LoadedModel]) -> dict[str, bool]:
    return {p.name: p.null for m in models for p in context.plan.get(m.name, ())}


def _method_shares(
    context: EvaluationContext, options: ShortcutOptions, models: Sequence[LoadedModel]
) -> pd.DataFrame:
    """Per-image cue and foreground shares of every planned method on the steering models."""
    if not any(context.plan.get(m.name) for m in context.models):
        return pd.DataFrame(columns=list(IMAGE_SHARE_COLUMNS))
    rows = gradsum_rows(context)
    return image_shares(rows[rows["model"].isin([m.name for m in models])], options)


@register_check("shortcut")
class ShortcutCheck(TrustCheck):
    """The tint's measured pull on every steering model, and whether each method's cue mass follows it."""

    Options = ShortcutOptions
    tables = TABLES
    description = (
        "flip the sky tint (the planted shortcut) and measure each model's pull and tint-split errors; "
        "rank-correlate each method's sky mass with the pull across models"
    )

    def unavailable(self, truthset: TruthSet) -> str | None:
        """Why the check cannot run on `truthset` with its default options (None: it can)."""
        try:
            tint_flipper(truthset)
            for split in error_splits(ShortcutOptions()):
                tint_split(truthset, split)
        except TruthSetError as error:
            return str(error)
        return None

    def evaluate(self, context: EvaluationContext, options: ShortcutOptions) -> CheckResult:
        """Tables shortcut_models, _methods, _detection, _onset, _finetune, _finetune_methods; summary."""
        options.check_classes(context.truthset.class_table)
        # refused before any work: a set that cannot repaint the tint, or lacks the tint splits
        tint_flipper(context.truthset)
        for split in error_splits(options):
            tint_split(context.truthset, split)
        models = steering_models(context)
        if not models:
            log.warning("shortcut: no steering model in the run; no figures, no verdicts")
            return CheckResult(
                tables={name: pd.DataFrame(columns=list(columns)) for name, columns in TABLE_COLUMNS.items()},
                summary=pd.DataFrame(columns=list(SUMMARY_COLUMNS)),
            )
        predictions = shortcut_predictions(context, options)
        effects = tint_effects(context)
        described = series_members(context.models)
        nulls = _null_labels(context, models)
        shares = _method_shares(context, options, models)
        model_figures = model_table(
            effects, predictions, described, options, context.n_resamples, context.seed
        )
        methods = method_table(shares, described, nulls, context.n_resamples, context.seed)
        detection = detection_table(shares, effects, described, nulls, context.n_resamples, context.seed)
        summary = summary_table(methods, detection)
        return CheckResult(
            tables={
                MODELS_TABLE: model_figures,
                METHODS_TABLE: methods,
                DETECTION_TABLE: detection,
                ONSET_TABLE: onset_table(methods),
                FINETUNE_TABLE: finetune_table(model_figures, described),
                FINETUNE_METHODS_TABLE: finetune_method_table(methods, described),
            },
            summary=summary,
            criteria=[DETECTION_CRITERION] if not summary.empty else [],
        )
