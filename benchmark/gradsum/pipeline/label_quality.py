"""The label-quality study: how good must labels be for a profile and its verdict to hold?

On the evaluated images of a run (the synthetic set's exact labels known), the labels are degraded in
controlled ways (`gradsum.truthsets.degrade`: coarse polygons, eroded or dilated classes) and replaced by
the predictions of segmenters trained for increasing budgets (`gradsum.labelling`). Each level's labels
are scored against the exact ones (mIoU), every model × method's profile is recomputed from the same maps
and compared with its exact-label profile (`gradsum.aggregation.label_quality`), and the run's trust
checks are rerun under the level's labels to see which verdicts change. A profile over Cityscapes'
categories is set beside the class profile, with what the category hides: the spread of its classes'
scores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gradsum.aggregation import LabelBatch
from gradsum.aggregation.label_quality import agreement_threshold, class_changes, profile, profile_agreement
from gradsum.contract import CARD
from gradsum.evaluation import EvaluationContext, run_checks
from gradsum.evaluation.planned import METHOD, PlannedMethod
from gradsum.evaluation.trust import TrustReport
from gradsum.labelling.metrics import VOID_IDS, confusion_matrix, scores
from gradsum.labelling.segmenter import Segmenter, predict
from gradsum.labelling.segmenters import load_segmenter
from gradsum.labelling.training import train_segmenter
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import LabelStudyConfig, PseudoLabelConfig, RunConfig
from gradsum.truthsets import TruthSet
from gradsum.truthsets.base import sample_id
from gradsum.truthsets.degrade import CATEGORY_IDS, category_labels, degradation
from gradsum.truthsets.labels import CITYSCAPES, NUM_CITYSCAPES_IDS
from gradsum.truthsets.relabelled import RelabelledTruthSet

log = logging.getLogger(__name__)

#: The level every other is compared with.
EXACT = "exact"
#: The kind of a level whose labels a segmenter predicted.
PSEUDO = "pseudo"
#: A `*_verdict` column of the trust table is one criterion's verdict; `verdict` is the overall one.
VERDICT_SUFFIX = "_verdict"
OVERALL = "verdict"

Relabel = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Level:
    """One way of labelling the evaluated images: its table name, kind, description and labels."""

    name: str
    kind: str
    description: str
    #: the level's labels of each evaluated image, by truth-set index
    labels: Mapping[int, np.ndarray]
    details: Mapping[str, Any] = field(default_factory=dict)
    #: the segmenter's mIoU on its own held-out split (pseudo-labels only)
    held_out_miou: float = float("nan")

    def relabel(self, exact: np.ndarray, index: int) -> np.ndarray:
        """The level's labels of image `index` (what `RelabelledTruthSet` asks for)."""
        return self.labels[index]


@dataclass(frozen=True)
class Combo:
    """One model × method of the run, with its maps of the evaluated images (on the CPU)."""

    model: LoadedModel
    method: PlannedMethod
    maps: torch.Tensor


def segmenter_folder(settings: PseudoLabelConfig, steps: int) -> Path:
    """Where the study keeps the segmenter trained for `steps` steps."""
    return Path(settings.folder) / f"{settings.architecture}_{steps}steps"


def ensure_segmenter(settings: PseudoLabelConfig, steps: int, truthset_root: Path, device: str) -> Segmenter:
    """The segmenter of one training budget, trained on the run's truth set when its folder is missing."""
    folder = segmenter_folder(settings, steps)
    if not (folder / CARD).exists():
        log.info("training segmenter %s (%d steps) on %s", folder, steps, truthset_root)
        train_segmenter(
            truthset_root,
            folder,
            architecture=settings.architecture,
            steps=steps,
            batch_size=settings.batch_size,
            seed=settings.seed,
            device=device,
        )
    return load_segmenter(folder)


def degradation_levels(settings: LabelStudyConfig, exact: Mapping[int, np.ndarray]) -> list[Level]:
    """A level per configured degradation, applied to every evaluated image's exact labels."""
    levels = []
    for entry in settings.degradations:
        degrade = degradation(entry.name, **entry.params)
        labels = {index: degrade(labels) for index, labels in exact.items()}
        levels.append(Level(degrade.level, entry.name, degrade.describe(), labels, dict(entry.params)))
    return levels


def pseudo_levels(
    settings: PseudoLabelConfig,
    truthset_root: Path,
    images: Mapping[int, np.ndarray],
    device: str,
) -> list[Level]:
    """A level per training budget: the segmenter's predictions (below `threshold`: void)."""
    levels = []
    indices = list(images)
    for steps in settings.budgets:
        segmenter = ensure_segmenter(settings, steps, truthset_root, device)
        predictions = predict(segmenter, [images[i] for i in indices], mode=settings.mode, device=device)
        labels = {
            index: np.where(p.confidence >= settings.threshold, p.labels, 0).astype(np.uint8)
            for index, p in zip(indices, predictions, strict=True)
        }
        held_out = segmenter.held_out_miou
        description = f"{segmenter.architecture} trained {steps} steps (held-out mIoU {held_out:.3f})"
        details = {"steps": steps, "segmenter": str(segmenter_folder(settings, steps))}
        levels.append(Level(f"{PSEUDO}_{steps}", PSEUDO, description, labels, details, float(held_out)))
    return levels


def _combos(
    context: EvaluationContext, images: Sequence[np.ndarray], exact: np.ndarray, ids: list[str]
) -> list[Combo]:
    """Every model × method under test with its maps of the evaluated images (the run's cached maps)."""
    combos = []
    labels = torch.from_numpy(exact.astype(np.int64)).to(context.device)
    indices = list(context.indices)
    for model in context.models:
        batch = context.model_input(model, images)
        for method in context.plan.get(model.name, ()):
            if method.role != METHOD:
                continue
            maps = torch.cat(
                [
                    context.maps(
                        model,
                        method,
                        batch[start : start + context.batch_size],
                        labels[start : start + context.batch_size],
                        ids[start : start + context.batch_size],
                        indices[start : start + context.batch_size],
                    )
                    .detach()
                    .cpu()
                    for start in range(0, len(ids), context.batch_size)
                ]
            )
            combos.append(Combo(model, method, maps))
    return combos


def label_quality(labels: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """How well a level's labels match the exact ones: mIoU and pixel accuracy over the exactly labelled
    pixels (a pixel the level leaves void counts as wrong), and the share of pixels the level leaves void."""
    matched = scores(confusion_matrix(exact, labels))
    void = float(np.isin(labels, list(VOID_IDS)).mean())
    return {"miou": matched.miou, "pixel_accuracy": matched.pixel_accuracy, "void_share": void}


def figure_rng(seed: int, *names: str) -> np.random.Generator:
    """The bootstrap generator of one level × model × method: seeded by their names, so a figure's interval
    does not depend on which other levels, models or methods the study ran before it."""
    return np.random.default_rng([seed, zlib.crc32("/".join(names).encode())])


def score_matrix(maps: torch.Tensor, labels: np.ndarray, resolution: str) -> np.ndarray:
    """(images, Cityscapes ids) GradSUM scores of `maps` against `labels`, NaN where a class is absent."""
    batch = LabelBatch(torch.from_numpy(labels.astype(np.int64)), resolution)
    return batch.scores(maps.float()).score.numpy()


def verdict_changes(reference: pd.DataFrame, other: pd.DataFrame, level: str) -> pd.DataFrame:
    """One row per model × method × verdict column of the trust table: the verdict under the exact labels
    and under `level`'s, and whether it changed."""
    columns = [c for c in reference.columns if c == OVERALL or c.endswith(VERDICT_SUFFIX)]
    keys = ["model", "method"]
    merged = reference[[*keys, "role", *columns]].merge(
        other[[*keys, *columns]], on=keys, suffixes=("", "_level"), how="left"
    )
    rows = []
    for record in merged.to_dict("records"):
        for column in columns:
            exact, moved = record[column], record[f"{column}_level"]
            rows.append(
                {
                    "level": level,
                    "model": record["model"],
                    "method": record["method"],
                    "role": record["role"],
                    "criterion": "overall" if column == OVERALL else column.removesuffix(VERDICT_SUFFIX),
                    "exact": str(exact),
                    "degraded": str(moved),
                    "changed": str(exact) != str(moved),
                }
            )
    return pd.DataFrame(rows)


def _level_context(
    context: EvaluationContext, truthset: TruthSet, combos: Sequence[Combo], ids: list[str]
) -> EvaluationContext:
    """The run's evaluation context under other labels: the models' own maps are kept (labels do not
    change them); every map read from labels (the priors, the controls) and every cached figure is redone."""
    fresh = dataclasses.replace(context, truthset=truthset, cache={}, _maps={}, _cached_bytes=0)
    for combo in combos:
        fresh.remember(combo.model.name, combo.method.name, ids, combo.maps)
    return fresh


def category_rows(
    combo: Combo, exact: np.ndarray, scores: np.ndarray, resolution: str
) -> list[dict[str, Any]]:
    """Per Cityscapes category: its score (the map over the category's pixels), and the spread of its
    classes' exact-label profile scores that the category score hides."""
    categories = score_matrix(combo.maps, category_labels(exact), resolution)
    class_profile = profile(scores)
    rows = []
    for category, slot in CATEGORY_IDS.items():
        column = categories[:, slot]
        if not np.isfinite(column).any():
            continue
        members = [c.id for c in CITYSCAPES.classes if c.category == category and 0 <= c.id < scores.shape[1]]
        present = [class_profile[i] for i in members if np.isfinite(class_profile[i])]
        rows.append(
            {
                "model": combo.model.name,
                "method": combo.method.name,
                "category": category,
                "score": float(np.nanmean(column)),
                "classes": len(present),
                "class_min": float(min(present)) if present else float("nan"),
                "class_max": float(max(present)) if present else float("nan"),
            }
        )
    return rows


def label_study(
    config: RunConfig,
    context: EvaluationContext,
    trust: TrustReport | None,
    truthset_root: Path,
    device: str,
) -> dict[str, pd.DataFrame]:
    """Run the label-quality study on the evaluated images of `context`; its tables by name."""
    settings = config.labels
    if settings is None:
        raise ValueError("label_study needs a config with a `labels` block")
    indices = list(context.indices)
    samples = [context.truthset[i] for i in indices]
    ids = [sample_id(s.meta, i) for s, i in zip(samples, indices, strict=True)]
    exact = {i: s.labels for i, s in zip(indices, samples, strict=True)}
    images = {i: s.image for i, s in zip(indices, samples, strict=True)}
    exact_stack = np.stack([exact[i] for i in indices])
    levels = degradation_levels(settings, exact)
    if settings.pseudo is not None:
        levels += pseudo_levels(settings.pseudo, truthset_root, images, device)
    combos = _combos(context, [images[i] for i in indices], exact_stack, ids)
    exact_scores = {id(c): score_matrix(c.maps, exact_stack, context.resolution) for c in combos}
    level_rows, agreement_rows, class_rows, verdict_frames = [], [], [], []
    for level in levels:
        stack = np.stack([level.labels[i] for i in indices])
        quality = label_quality(stack, exact_stack)
        level_rows.append(
            {"level": level.name, "kind": level.kind, "description": level.description}
            | {"details": json.dumps(dict(level.details), sort_keys=True)}
            | quality
            | {"held_out_miou": level.held_out_miou}
        )
        log.info("label level %s: mIoU %.3f", level.name, quality["miou"])
        for combo in combos:
            moved = score_matrix(combo.maps, stack, context.resolution)
            rng = figure_rng(config.seed, level.name, combo.model.name, combo.method.name)
            agreement = profile_agreement(exact_scores[id(combo)], moved, rng, context.n_resamples)
            key = {"level": level.name, "model": combo.model.name, "method": combo.method.name}
            agreement_rows.append(
                key
                | {"miou": quality["miou"], "spearman": agreement.rho, "spearman_ci_low": agreement.low}
                | {"spearman_ci_high": agreement.high, "classes": agreement.classes, "lost": agreement.lost}
            )
            changes = class_changes(
                exact_scores[id(combo)], moved, range(NUM_CITYSCAPES_IDS), rng, context.n_resamples
            )
            names = [CITYSCAPES.by_id[int(c)].name for c in changes.get("class_id", [])]
            class_rows.append(changes.assign(**key, **{"class": names}))
        if settings.verdicts and trust is not None:
            relabelled = RelabelledTruthSet(context.truthset, level.relabel, level.description)
            report = run_checks(_level_context(context, relabelled, combos, ids), list(trust.results))
            verdict_frames.append(verdict_changes(trust.trust, report.trust, level.name))
    agreement_table = pd.DataFrame(agreement_rows)
    thresholds = [
        {
            "model": model,
            "method": method,
            "agreement": settings.agreement,
            "miou_threshold": agreement_threshold(
                rows["miou"].to_numpy(float), rows["spearman_ci_low"].to_numpy(float), settings.agreement
            ),
            "lowest_miou_agreeing": float(
                rows.loc[rows["spearman_ci_low"] >= settings.agreement, "miou"].min()
            ),
        }
        for (model, method), rows in agreement_table.groupby(["model", "method"], sort=False)
    ]
    categories = [
        row for c in combos for row in category_rows(c, exact_stack, exact_scores[id(c)], context.resolution)
    ]
    return {
        "label_levels": pd.DataFrame(level_rows),
        "label_agreement": agreement_table,
        "label_thresholds": pd.DataFrame(thresholds),
        "label_classes": pd.concat(class_rows, ignore_index=True) if class_rows else pd.DataFrame(),
        "label_verdicts": pd.concat(verdict_frames, ignore_index=True) if verdict_frames else pd.DataFrame(),
        "label_categories": pd.DataFrame(categories),
    }
