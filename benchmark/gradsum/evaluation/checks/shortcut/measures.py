"""How strongly each steering model uses the planted tint, measured without any attribution.

- the pull: every evaluated image re-rendered with the opposite tint (`SyntheticTruthSet.flip_tint`, only
  sky pixels change), the output change signed towards the new tint's side;
- the errors on the tint splits (`test_agreeing`, `test_decorrelated`: the test scenes with the tint
  agreeing / disagreeing with the steering sign everywhere) and the R² the model would reach on its own
  training distribution (same scenes, tint drawn as in training).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gradsum.aggregation.profiles import check_columns, mean_ci
from gradsum.evaluation.base import EvaluationContext
from gradsum.evaluation.checks.shortcut.options import ShortcutOptions, error_splits, tint_flipper, tint_split
from gradsum.evaluation.checks.shortcut.series import SeriesMember
from gradsum.evaluation.checks.shortcut.tables import (
    CONFIDENCE,
    MODEL_COLUMNS,
    PREDICTION_COLUMNS,
    TASK,
    TINT_EFFECT_COLUMNS,
    ci_columns,
    figure_rng,
    percentile_interval,
)
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import TruthSet
from gradsum.truthsets.base import sample_id


def steering_models(context: EvaluationContext) -> list[LoadedModel]:
    """The context's models of the task the tint is planted against."""
    return [m for m in context.models if m.task == TASK]


def _predict(context: EvaluationContext, model: LoadedModel, images: Sequence[np.ndarray]) -> np.ndarray:
    return model.predict(context.model_input(model, images)).cpu().numpy().astype(np.float64)


def tint_effects(context: EvaluationContext) -> pd.DataFrame:
    """Per steering model × evaluated image: the output on the image and on its tint flip.

    Each image is re-rendered once and read by every model. `pull` = (f(flip) − f(x))·(to − from)/2 is
    positive when the output moves towards the new tint's side (warm = right = positive steering).
    """
    flipper = tint_flipper(context.truthset)
    models = steering_models(context)
    rows: list[dict[str, object]] = []
    for ids, samples, indices in context.sample_batches():
        flipped = [flipper.flip_tint(index) for index in indices]
        tints = [(int(s.meta["flip_tint"]["from"]), int(s.meta["flip_tint"]["to"])) for s in flipped]
        for model in models:
            before = _predict(context, model, [s.image for s in samples])
            after = _predict(context, model, [s.image for s in flipped])
            for image, (old_tint, new_tint), old, new in zip(ids, tints, before, after, strict=True):
                rows.append(
                    {
                        "model": model.name,
                        "image": image,
                        "tint_from": old_tint,
                        "tint_to": new_tint,
                        "output": old,
                        "flipped_output": new,
                        "pull": (new - old) * (new_tint - old_tint) / 2,
                        "abs_effect": abs(new - old),
                    }
                )
    return pd.DataFrame(rows, columns=list(TINT_EFFECT_COLUMNS))


def shortcut_predictions(context: EvaluationContext, options: ShortcutOptions) -> pd.DataFrame:
    """Every steering model's outputs on the first N scenes of the tint splits and of their source split.

    N is `options.error_images` (default: all), capped by the splits' sizes. Each split is read once, in
    batches of the context's batch size, and every model reads each batch; the frame is kept in
    `context.cache` for the checks that follow.
    """
    splits = {name: tint_split(context.truthset, name) for name in error_splits(options)}
    count = min(len(split) for split in splits.values())
    if options.error_images is not None:
        count = min(count, options.error_images)
    key = f"shortcut_predictions:{':'.join(splits)}:{count}"
    if key not in context.cache:
        frames = [_split_predictions(context, name, split, count) for name, split in splits.items()]
        context.cache[key] = pd.concat(frames, ignore_index=True)
    cached: pd.DataFrame = context.cache[key]
    return cached


def _split_predictions(context: EvaluationContext, name: str, split: TruthSet, count: int) -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    models = steering_models(context)
    for start in range(0, count, context.batch_size):
        chunk = list(range(start, min(start + context.batch_size, count)))
        samples = [split[i] for i in chunk]
        images = [s.image for s in samples]
        for model in models:
            outputs = _predict(context, model, images)
            for index, sample, output in zip(chunk, samples, outputs, strict=True):
                rows.append(
                    {
                        "model": model.name,
                        "split": name,
                        "index": index,
                        "image": sample_id(sample.meta, index),
                        "target": float(sample.targets[TASK]),
                        "output": output,
                    }
                )
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))


def _r2(targets: np.ndarray, squared_errors: np.ndarray) -> float:
    """1 − MSE / Var(targets) (population variance); NaN without variance."""
    variance = float(targets.var()) if targets.size else 0.0
    return 1.0 - float(squared_errors.mean()) / variance if variance > 0 else math.nan


def split_errors(
    predictions: pd.DataFrame,
    model: SeriesMember,
    options: ShortcutOptions,
    n_resamples: int,
    seed: int,
) -> dict[str, float]:
    """R² and MAE of one model on the error splits, and its R² on its own training distribution.

    r2_in_distribution = 1 − (p·MSE_agreeing + (1−p)·MSE_decorrelated) / Var(steering), p the model's
    agreement probability: the same scenes with the tint drawn as in training. The intervals resample
    the scenes (the same draws for the decorrelated and the in-distribution R²).
    """
    against, agreeing, source = error_splits(options)
    own = predictions[predictions["model"] == model.name]

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = own[own["split"] == name].sort_values("index")
        return rows["target"].to_numpy(float), rows["output"].to_numpy(float)

    figures: dict[str, float] = {}
    squared: dict[str, np.ndarray] = {}
    for name, column in ((source, "test"), (agreeing, "agreeing"), (against, "decorrelated")):
        targets, outputs = split(name)
        squared[column] = (outputs - targets) ** 2
        figures[f"r2_{column}"] = _r2(targets, squared[column])
        figures[f"mae_{column}"] = float(np.abs(outputs - targets).mean()) if targets.size else math.nan
    targets = split(against)[0]
    p = model.agreement
    mixed = p * squared["agreeing"] + (1 - p) * squared["decorrelated"]
    figures["r2_in_distribution"] = _r2(targets, mixed)
    draws = figure_rng(seed, model.name, "errors").integers(
        0, max(targets.size, 1), size=(n_resamples, targets.size)
    )
    variance = targets[draws].var(axis=1) if targets.size else np.zeros(n_resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        valid = variance > 0
        resampled_against = np.where(
            valid, 1 - squared["decorrelated"][draws].mean(axis=1) / variance, np.nan
        )
        resampled_mixed = np.where(valid, 1 - mixed[draws].mean(axis=1) / variance, np.nan)
    for column, resampled in (
        ("r2_decorrelated", resampled_against),
        ("r2_in_distribution", resampled_mixed),
    ):
        figures[f"{column}_ci_low"], figures[f"{column}_ci_high"] = percentile_interval(
            figures[column], resampled
        )
    figures["gap"] = figures["r2_agreeing"] - figures["r2_decorrelated"]
    return figures


def model_table(
    effects: pd.DataFrame,
    predictions: pd.DataFrame,
    described: Mapping[str, SeriesMember],
    options: ShortcutOptions,
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """`shortcut_models`: per steering model, the tint's pull and the errors on the tint splits."""
    check_columns(effects, TINT_EFFECT_COLUMNS, "tint effects")
    check_columns(predictions, PREDICTION_COLUMNS, "shortcut predictions")
    rows = []
    for model in described.values():
        own = effects[effects["model"] == model.name]
        row: dict[str, object] = {
            "model": model.name,
            "series": model.series,
            "rho": model.rho,
            "finetuned": model.finetuned,
            "base": model.base,
            "n_images": int(own["image"].nunique()),
        }
        for figure in ("pull", "abs_effect"):
            interval = mean_ci(
                own[figure].to_numpy(float), figure_rng(seed, model.name, figure), n_resamples, CONFIDENCE
            )
            row.update(dict(zip(ci_columns(figure), interval, strict=True)))
        row.update(split_errors(predictions, model, options, n_resamples, seed))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(MODEL_COLUMNS))
