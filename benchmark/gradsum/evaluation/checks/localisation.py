"""Localisation on cause masks: does a map put its relevance where the truth set says the cause is?

Each figure is per image, against that image's cause mask (`TruthSet.cause_mask(index, task)`), with
the map resized bilinearly to the mask's size where they differ:

- relevance mass accuracy (Arras et al. 2022, CLEVR-XAI): Σ map⁺·mask / Σ map⁺ on the non-negative part
  of the map (Quantus sums the signed map; a map's negative evidence is not mass);
- relevance rank accuracy: the share of the |mask| highest-valued pixels that lie inside the mask; pixels
  tied at the cut count by their expected share under a random tie order (so a constant map scores the
  mask's area share, where a sort would favour whichever pixels come first);
- pointing game (Zhang et al. 2018): 1 when a pixel of the map's maximum lies inside the mask (ties: any
  of them, as Quantus counts it).

An empty mask gives NaN, as does an all-zero map for mass accuracy. Images without a mask (an obstacle
negative) are skipped. There is no fixed threshold: the null explainers are the bar, and the uniform
map's mass accuracy is the mask's share of the image.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import pandas as pd
import torch

from gradsum.aggregation.profiles import mean_ci
from gradsum.attribution.base import upsample
from gradsum.evaluation.base import (
    CheckResult,
    Criterion,
    EvaluationContext,
    NoOptions,
    TrustCheck,
    check_table,
    register_check,
)
from gradsum.evaluation.mask_metrics import LOCALISATION_METRICS
from gradsum.models.loaded import LoadedModel

log = logging.getLogger(__name__)

#: Columns of `localisation.csv` (one row per model × method × metric), in order.
LOCALISATION_COLUMNS = ("model", "method", "metric", "mean", "ci_low", "ci_high", "n_images")


SUMMARY_COLUMNS = (
    "model",
    "method",
    *(f"{m}{s}" for m in LOCALISATION_METRICS.names() for s in ("", "_ci_low", "_ci_high")),
)

#: (model, method label, metric) → per-image scores of every batch
Scores = dict[tuple[str, str, str], list[float]]
#: model → the ids of the images scored, in the order of its `Scores` lists
ScoredImages = dict[str, list[str]]


def _score_model(
    context: EvaluationContext, model: LoadedModel, scores: Scores, scored: ScoredImages
) -> None:
    """Add every planned method's per-image scores on the images of `model` that have a cause mask."""
    for ids, images, labels, chunk in context.batches():
        masks = [context.truthset.cause_mask(i, model.task) for i in chunk]
        kept = [b for b, mask in enumerate(masks) if mask is not None]
        present = {b: np.asarray(masks[b], dtype=bool) for b in kept}
        if not kept:
            continue
        scored.setdefault(model.name, []).extend(ids[b] for b in kept)
        batch = context.model_input(model, [images[b] for b in kept])
        label_tensor = torch.from_numpy(np.stack([labels[b] for b in kept])).to(context.device)
        for method in context.plan.get(model.name, ()):
            maps = (
                context.maps(
                    model, method, batch, label_tensor, [ids[b] for b in kept], [chunk[b] for b in kept]
                )
                .detach()
                .float()
                .cpu()
            )
            per_image: dict[str, list[float]] = {metric: [0.0] * len(kept) for metric in LOCALISATION_METRICS}
            # one call per mask size (a truth set of mixed frame sizes has several), in image order
            for shape in {present[b].shape for b in kept}:
                rows = [row for row, b in enumerate(kept) if present[b].shape == shape]
                stacked = torch.from_numpy(np.stack([present[kept[row]] for row in rows]))
                resized = upsample(maps[rows], (int(shape[0]), int(shape[1])))
                for metric, function in LOCALISATION_METRICS.items():
                    for row, value in zip(rows, function(resized, stacked), strict=True):
                        per_image[metric][row] = float(value)
            for metric, values in per_image.items():
                scores[(model.name, method.name, metric)].extend(values)


def _per_image(context: EvaluationContext, scores: Scores, scored: ScoredImages) -> pd.DataFrame:
    """model, method, image and each metric per image: what the verdict resamples."""
    frames = []
    for model in context.models:
        for method in context.plan.get(model.name, ()):
            if (model.name, method.name, LOCALISATION_METRICS.names()[0]) not in scores:
                continue
            columns = {m: scores[(model.name, method.name, m)] for m in LOCALISATION_METRICS.names()}
            frames.append(
                pd.DataFrame(
                    {"model": model.name, "method": method.name, "image": scored[model.name], **columns}
                )
            )
    if not frames:
        return pd.DataFrame(columns=["model", "method", "image", *LOCALISATION_METRICS.names()])
    return pd.concat(frames, ignore_index=True)


def _tables(context: EvaluationContext, scores: Scores) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-metric table and the summary (one row per model × method) from per-image scores."""
    rng = np.random.default_rng(context.seed)
    rows, summary = [], []
    for model in context.models:
        for method in context.plan.get(model.name, ()):
            if (model.name, method.name, LOCALISATION_METRICS.names()[0]) not in scores:
                continue
            figures: dict[str, object] = {"model": model.name, "method": method.name}
            for metric in LOCALISATION_METRICS.names():
                values = np.asarray(scores[(model.name, method.name, metric)], dtype=np.float64)
                mean, low, high = mean_ci(values, rng, context.n_resamples)
                count = int(np.isfinite(values).sum())
                rows.append((model.name, method.name, metric, mean, low, high, count))
                figures.update({metric: mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
            summary.append(figures)
    return (
        pd.DataFrame(rows, columns=list(LOCALISATION_COLUMNS)),
        pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)),
    )


#: The verdict's figure: relevance mass accuracy on the cause masks, against the gating nulls (the uniform
#: map scores the masks' area share; the positional prior, the mean mask of the training split, is the
#: confound a position-only map reaches).
LOCALISATION_CRITERION = Criterion(
    "localisation",
    "mass_accuracy",
    higher_is_better=True,
    text="relevance mass accuracy on the cause masks, paired against the chance and confound nulls",
)


LOCALISATION_TABLE = check_table("localisation", LOCALISATION_COLUMNS, text=("metric",), ints=("n_images",))


@register_check("localisation")
class LocalisationCheck(TrustCheck):
    """Mass accuracy, rank accuracy and pointing game of every planned method on the cause masks."""

    description = "relevance mass / rank accuracy and pointing game on the truth set's cause masks"
    tables = (LOCALISATION_TABLE,)

    def evaluate(self, context: EvaluationContext, options: NoOptions) -> CheckResult:
        """Per model × method × metric: mean and bootstrap interval over the images that have a mask."""
        declared = context.truthset.causes
        scores: Scores = defaultdict(list)
        scored: ScoredImages = {}
        for model in context.models:
            if model.task not in declared:
                log.warning(
                    "localisation: the truth set declares no causes for %s; model %s skipped",
                    model.task,
                    model.name,
                )
                continue
            _score_model(context, model, scores, scored)
        table, summary = _tables(context, scores)
        if summary.empty:
            log.warning("localisation: no evaluated image has a cause mask; no figures, no verdicts")
            return CheckResult(tables={LOCALISATION_TABLE.name: table}, summary=summary)
        return CheckResult(
            tables={LOCALISATION_TABLE.name: table},
            summary=summary,
            criteria=[LOCALISATION_CRITERION],
            per_image=_per_image(context, scores, scored),
        )
