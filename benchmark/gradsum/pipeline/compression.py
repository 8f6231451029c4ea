"""The compression study: does a compressed model's profile drift before its accuracy drops?

Each `compress:` model of a run (`gradsum.models.compression`: magnitude or channel pruning, int8
quantisation) is set against its parent on the same images. Its profile, from the run's per-image table,
is compared with the parent's: Spearman ρ of the class profiles with an image-bootstrap CI, and the class
whose paired per-image figure moved most, with its CI. Its task metric (the task's headline: R², accuracy)
is measured with the parent's on the same test images, the change with a paired image-bootstrap CI. Per
parent × compression × method, the lowest level at which the profile is shown to drift is set beside the
lowest at which the metric is shown to drop: a profile that moves first is what makes a profile gate worth
running in CI. "Shown" means the interval, not the point estimate, lies beyond the configured thresholds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradsum.aggregation.label_quality import CONFIDENCE, class_changes, profile_agreement
from gradsum.contract import METRIC_FIRST, NEITHER, PROFILE_FIRST, TOGETHER
from gradsum.evaluation.verdicts import FAIL, INCONCLUSIVE, PASS
from gradsum.gate import GateInputs, Policy, gate, policy_from_dict
from gradsum.gate.inputs import TRUTHSET
from gradsum.models.loaded import LoadedModel
from gradsum.models.tasks import LOWER_IS_BETTER, TRAINING_TASKS
from gradsum.models.training import SplitData, predict, preload
from gradsum.pipeline.config import CompressConfig, CompressionStudyConfig, RunConfig
from gradsum.pipeline.inputs import base_entry, training_root
from gradsum.pipeline.label_quality import figure_rng
from gradsum.truthsets import open_truthset
from gradsum.truthsets.labels import CITYSCAPES, NUM_CITYSCAPES_IDS

log = logging.getLogger(__name__)

#: The gate's checks of a variant against its parent (`gradsum.gate`), as `gate_failed` names them.
SPEARMAN, CLASS_SHIFT, TASK_METRIC = "spearman", "class_shift", "task_metric"


@dataclass(frozen=True)
class Variant:
    """One compressed model of the run with its parent and how it was made."""

    name: str
    parent: str
    settings: CompressConfig

    @property
    def level(self) -> float:
        """The compression level, NaN for a method without one (int8_dynamic)."""
        return float("nan") if self.settings.level is None else float(self.settings.level)


def variants(config: RunConfig) -> list[Variant]:
    """The run's compressed models in config order."""
    return [
        Variant(entry.name, entry.compress.base, entry.compress)
        for entry in config.models
        if entry.compress is not None
    ]


def score_matrix(
    per_image: pd.DataFrame, model: str, method: str, column: str, images: Sequence[str]
) -> np.ndarray:
    """(images, Cityscapes ids) of one per-image figure of `model` × `method`, NaN where a class is absent,
    rows in the order of `images`."""
    rows = per_image[(per_image["model"] == model) & (per_image["method"] == method)]
    grid = rows.pivot_table(index="image", columns="class_id", values=column, aggfunc="first")
    grid = grid.reindex(index=list(images), columns=range(NUM_CITYSCAPES_IDS))
    return grid.to_numpy(float)


def paired_images(per_image: pd.DataFrame, a: str, b: str, method: str) -> list[str]:
    """The images both models were attributed on with `method`, sorted (the pairing of every figure)."""
    held = [
        set(per_image.loc[(per_image["model"] == m) & (per_image["method"] == method), "image"].astype(str))
        for m in (a, b)
    ]
    return sorted(held[0] & held[1])


def shared_methods(per_image: pd.DataFrame, variant: Variant) -> list[str]:
    """The methods run on both the variant and its parent, in the variant's order (a method run on one
    side only has nothing to be compared with)."""
    held = {
        m: per_image.loc[per_image["model"] == m, "method"].astype(str).unique()
        for m in (variant.parent, variant.name)
    }
    return [method for method in held[variant.name] if method in set(held[variant.parent])]


def largest_shift(changes: pd.DataFrame) -> dict[str, Any]:
    """The class whose mean paired change is largest in size, with its CI and image count (NaN: none)."""
    if changes.empty or not np.isfinite(changes["change"].to_numpy(float)).any():
        return {"shift_class": "", "shift_images": 0} | dict.fromkeys(
            ("shift", "shift_ci_low", "shift_ci_high"), math.nan
        )
    row = changes.loc[changes["change"].abs().idxmax()]
    return {
        "shift_class": CITYSCAPES.by_id[int(row["class_id"])].name,
        "shift": float(row["change"]),
        "shift_ci_low": float(row["change_ci_low"]),
        "shift_ci_high": float(row["change_ci_high"]),
        "shift_images": int(row["images"]),
    }


def shift_beyond(changes: pd.DataFrame, tolerance: float) -> bool:
    """True when some class's change CI lies wholly outside ±`tolerance`."""
    if changes.empty:
        return False
    low, high = changes["change_ci_low"].to_numpy(float), changes["change_ci_high"].to_numpy(float)
    return bool(((low > tolerance) | (high < -tolerance)).any())


def overall(verdicts: Mapping[str, str]) -> tuple[str, str]:
    """(verdict, failed checks) of several outcomes: fail when one fails, pass when all pass, else
    inconclusive."""
    failed = [name for name, verdict in verdicts.items() if verdict == FAIL]
    if failed:
        return FAIL, ", ".join(failed)
    return (PASS if all(v == PASS for v in verdicts.values()) else INCONCLUSIVE), ""


def study_policy(config: RunConfig, settings: CompressionStudyConfig) -> Policy:
    """The gate policy the study judges each variant by: its own thresholds, decided on intervals at the
    study's confidence from the run's resamples and seed."""
    data = {
        "alpha": 1.0 - CONFIDENCE,
        "resamples": config.bootstrap_resamples,
        "seed": config.seed,
        "checks": [
            {"check": SPEARMAN, "floor": settings.spearman_floor},
            {"check": CLASS_SHIFT, "statistic": settings.statistic, "tolerance": settings.shift_tolerance},
            {"check": TASK_METRIC, "tolerance": settings.metric_tolerance},
        ],
    }
    return policy_from_dict(data, f"{config.name}.compression")


def gate_verdicts(
    per_image: pd.DataFrame,
    cards: Mapping[str, dict[str, Any]],
    variant: Variant,
    policy: Policy,
    folder: Path,
) -> dict[str, tuple[str, str]]:
    """Method → (verdict, failed checks) of `variant` gated against its parent (`gradsum.gate.gate`); a check
    of the model alone (the task metric) counts for every method."""
    pair = per_image[per_image["model"].isin([variant.parent, variant.name])]
    # one run holds both sides: the same truth set and frames by construction, so one description serves both
    inputs = GateInputs(
        folder, {TRUTHSET: {}}, pair, cards={m: cards[m] for m in (variant.parent, variant.name)}
    )
    report = gate(inputs, inputs, policy, models={variant.parent: variant.name})
    methods = {o.method for o in report.outcomes if o.method}
    return {
        method: overall({o.name: o.verdict for o in report.outcomes if o.method in (method, "")})
        for method in methods
    }


def agreement_row(
    per_image: pd.DataFrame,
    variant: Variant,
    method: str,
    settings: CompressionStudyConfig,
    rng: np.random.Generator,
    n_resamples: int,
) -> dict[str, Any]:
    """One variant × method against its parent: profile Spearman [CI] over the GradSUM score, the largest
    paired class change of `settings.statistic` [CI], and whether the profile is shown to drift."""
    images = paired_images(per_image, variant.parent, variant.name, method)
    scores = [score_matrix(per_image, m, method, "score", images) for m in (variant.parent, variant.name)]
    agreement = profile_agreement(scores[0], scores[1], rng, n_resamples)
    figures = [
        score_matrix(per_image, m, method, settings.statistic, images) for m in (variant.parent, variant.name)
    ]
    changes = class_changes(figures[0], figures[1], range(NUM_CITYSCAPES_IDS), rng, n_resamples)
    below = math.isfinite(agreement.high) and agreement.high < settings.spearman_floor
    return (
        {"model": variant.name, "parent": variant.parent, "compression": variant.settings.method}
        | {"level": variant.level, "method": method}
        | {"spearman": agreement.rho, "spearman_ci_low": agreement.low, "spearman_ci_high": agreement.high}
        | {"classes": agreement.classes, "lost": agreement.lost, "statistic": settings.statistic}
        | largest_shift(changes)
        | {"floor": settings.spearman_floor, "tolerance": settings.shift_tolerance}
        | {"drifted": below or shift_beyond(changes, settings.shift_tolerance)}
    )


def headline(values: np.ndarray, targets: np.ndarray, task: str) -> float:
    """The task's headline metric of predictions `values` (NaN where undefined: constant targets)."""
    spec = TRAINING_TASKS.get(task, "task")
    value = spec.metrics(values, targets)[spec.headline]
    return math.nan if value is None else float(value)


def metric_change(
    parent: np.ndarray,
    variant: np.ndarray,
    targets: np.ndarray,
    task: str,
    rng: np.random.Generator,
    n_resamples: int,
) -> tuple[float, float, float, float, float]:
    """(parent's, variant's, change, CI low, CI high) of the task's headline metric: the change is
    variant − parent, its percentile CI from resampling the images (the same resample for both models)."""
    base, moved = headline(parent, targets, task), headline(variant, targets, task)
    draws = np.asarray(
        [
            headline(variant[i], targets[i], task) - headline(parent[i], targets[i], task)
            for i in rng.integers(0, len(targets), (n_resamples, len(targets)))
        ]
    )
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return base, moved, moved - base, math.nan, math.nan
    tail = (1.0 - CONFIDENCE) / 2
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return base, moved, moved - base, float(low), float(high)


class Predictions:
    """Each model's outputs on its parent's metric split, each split decoded once per (root, task, size)."""

    def __init__(self, split: str, device: str) -> None:
        self.split = split
        self.device = device
        self._data: dict[tuple[Path, str, tuple[int, int]], SplitData] = {}
        self._outputs: dict[str, np.ndarray] = {}

    def data(self, root: Path, model: LoadedModel) -> SplitData:
        key = (root, model.task, model.img_size)
        if key not in self._data:
            self._data[key] = preload(open_truthset(root, self.split), model.task, model.img_size)
        return self._data[key]

    def outputs(self, root: Path, model: LoadedModel) -> np.ndarray:
        if model.name not in self._outputs:
            self._outputs[model.name] = predict(model.module, self.data(root, model), self.device).numpy()
        return self._outputs[model.name]


def dropped(metric: str, low: float, high: float, tolerance: float) -> bool:
    """Whether a change CI [low, high] (variant − parent) shows the metric worse by more than `tolerance`:
    lower for a higher-is-better metric, higher for one of LOWER_IS_BETTER (mae, rmse)."""
    worse = low if metric in LOWER_IS_BETTER else -high
    return math.isfinite(worse) and worse > tolerance


def level_row(
    variant: Variant,
    models: Mapping[str, LoadedModel],
    root: Path,
    predictions: Predictions,
    settings: CompressionStudyConfig,
    rng: np.random.Generator,
    n_resamples: int,
) -> dict[str, Any]:
    """One variant: its card's compression record and its task metric against the parent's."""
    parent, model = models[variant.parent], models[variant.name]
    targets = predictions.data(root, parent).targets.numpy()
    base, value, change, low, high = metric_change(
        predictions.outputs(root, parent),
        predictions.outputs(root, model),
        targets,
        parent.task,
        rng,
        n_resamples,
    )
    record = model.card.get("compression", {})
    metric = TRAINING_TASKS.get(parent.task, "task").headline
    return {
        "model": variant.name,
        "parent": variant.parent,
        "compression": variant.settings.method,
        "level": variant.level,
        "sparsity": float(record.get("sparsity", math.nan)),
        "parameters": int(record.get("parameters", 0)),
        "bytes": int(record.get("bytes", 0)),
        "images": len(targets),
        "metric": metric,
        "parent_value": base,
        "value": value,
        "change": change,
        "change_ci_low": low,
        "change_ci_high": high,
        "tolerance": settings.metric_tolerance,
        "dropped": dropped(metric, low, high, settings.metric_tolerance),
    }


def first_level(rows: pd.DataFrame, flag: str) -> tuple[str, float, int]:
    """(model, level, rank) of the first row, in level order, whose `flag` holds ("", NaN, len: none)."""
    shown = rows.reset_index(drop=True)
    hits = shown.index[shown[flag].astype(bool)]
    if hits.empty:
        return "", math.nan, len(shown)
    first = shown.loc[hits[0]]
    return str(first["model"]), float(first["level"]), int(hits[0])


def onset_rows(agreement: pd.DataFrame, levels: pd.DataFrame) -> list[dict[str, Any]]:
    """Per parent × compression × method: the lowest level at which the profile is shown to drift, the
    lowest at which the metric is shown to drop, and which came first."""
    drops = dict(zip(levels["model"], levels["dropped"], strict=True))
    rows = []
    for (parent, compression, method), group in agreement.groupby(
        ["parent", "compression", "method"], sort=False
    ):
        ordered = group.sort_values("level", kind="stable").assign(dropped=lambda t: t["model"].map(drops))
        drift_model, drift_level, drift_rank = first_level(ordered, "drifted")
        drop_model, drop_level, drop_rank = first_level(ordered, "dropped")
        if drift_rank == drop_rank:
            order = NEITHER if drift_model == "" else TOGETHER
        else:
            order = PROFILE_FIRST if drift_rank < drop_rank else METRIC_FIRST
        rows.append(
            {"parent": parent, "compression": compression, "method": method, "levels": len(ordered)}
            | {"drift_model": drift_model, "drift_level": drift_level}
            | {"drop_model": drop_model, "drop_level": drop_level, "order": order}
        )
    return rows


def compression_study(
    config: RunConfig,
    per_image: pd.DataFrame,
    models: Sequence[LoadedModel],
    truthset_root: Path,
    device: str,
) -> dict[str, pd.DataFrame]:
    """Run the compression study on the run's per-image table and models; its tables by name."""
    settings = config.compression
    if settings is None:
        raise ValueError("compression_study needs a config with a `compression` block")
    by_name = {m.name: m for m in models}
    cards = {m.name: m.card for m in models}
    policy = study_policy(config, settings)
    # the gate names this folder in its messages: the run's results folder
    folder = Path(config.results_dir) / config.name
    n_resamples = config.bootstrap_resamples
    predictions = Predictions(settings.metric_split, device)
    level_rows, agreement_rows = [], []
    for variant in variants(config):
        root = training_root(base_entry(variant.settings, config), config, truthset_root)
        rng = figure_rng(config.seed, "metric", variant.name)
        level_rows.append(level_row(variant, by_name, root, predictions, settings, rng, n_resamples))
        methods = shared_methods(per_image, variant)
        verdicts = gate_verdicts(per_image, cards, variant, policy, folder)
        for method in methods:
            rng = figure_rng(config.seed, variant.name, method)
            row = agreement_row(per_image, variant, method, settings, rng, n_resamples)
            row["gate"], row["gate_failed"] = verdicts.get(method, (INCONCLUSIVE, ""))
            agreement_rows.append(row)
        log.info("compression %s: %s", variant.name, level_rows[-1]["change"])
    levels, agreement = pd.DataFrame(level_rows), pd.DataFrame(agreement_rows)
    return {
        "compression_levels": levels,
        "compression_agreement": agreement,
        "compression_onset": pd.DataFrame(onset_rows(agreement, levels)),
    }
