"""Agreement of a method's GradSUM class profile with the causal (erasure) profile of the same model.

Secondary, kept for one release (the `agreement` table and the causal check's `density_spearman`
column): it correlates a density (the mean map value of a class) with a total (the output change when
the whole class is erased), over every class however immaterial, so it decides no verdict. The causal
check's verdicts come from `gradsum.evaluation.concordance` (per image, class masses, material classes).

Per model × method: Spearman and Kendall (tau-b) rank correlations over the classes both profiles have,
between the mean GradSUM score per class and the mean |output change| when the class is erased, each
mean taken over the evaluated images that contain the class. Confidence intervals resample the images
with replacement (both profiles recomputed on each resample; percentile interval, seeded). Beside them,
the share of the map's mass on the causal classes against their share of the image area, and the lift.

A flat profile (the uniform map) has no ranking: its correlations are NaN, never a pass by chance.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS, check_columns, mean_ci
from gradsum.truthsets.base import CauseDeclaration

log = logging.getLogger(__name__)

#: Columns of `agreement.csv`: one row per model × method.
AGREEMENT_COLUMNS = (
    "model",
    "method",
    "task",
    "n_images",
    "n_classes",
    "spearman",
    "spearman_ci_low",
    "spearman_ci_high",
    "kendall",
    "kendall_ci_low",
    "kendall_ci_high",
    "causal_classes",
    "cause_source",
    "cause_mass_share",
    "cause_mass_share_ci_low",
    "cause_mass_share_ci_high",
    "cause_area_share",
    "cause_area_share_ci_low",
    "cause_area_share_ci_high",
    "cause_lift",
    "domain",
)
#: The causal-effect columns the agreement reads (a subset of `causal.CAUSAL_EFFECT_COLUMNS`).
EFFECT_COLUMNS = ("model", "task", "image", "class", "abs_delta", "domain")
#: `cause_source`: the truth set declares the task's causal classes, or the causal profile's top class.
DECLARED, MEASURED = "declared", "measured"
#: Joins several causal classes (or domains) in one cell; no Cityscapes name contains it.
JOIN = "+"
#: Profile values equal to this relative precision are ties: float rounding in the map sums must not
#: rank classes a flat map (the uniform map) values equally.
TIE_DIGITS = 12


def agreement_table(
    gradsum_rows: pd.DataFrame,
    effects: pd.DataFrame,
    causes: Mapping[str, CauseDeclaration] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per model × method of `gradsum_rows` (per_image columns) whose model has causal effects.

    `causes` maps a task to its declared causal classes; a task without a declaration takes the top
    class of the model's causal profile (`cause_source` says which).
    """
    check_columns(gradsum_rows, PER_IMAGE_COLUMNS, "gradsum rows")
    check_columns(effects, EFFECT_COLUMNS, "causal effects")
    rows = []
    for (model, method), group in gradsum_rows.groupby(["model", "method"], sort=True):
        model_effects = effects[effects["model"] == model]
        if model_effects.empty:
            log.warning("model %s has no causal effects; no agreement for method %s", model, method)
            continue
        rows.append(
            _agreement_row(
                str(model), str(method), group, model_effects, causes, n_resamples, seed, confidence
            )
        )
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))


def _agreement_row(
    model: str,
    method: str,
    gradsum: pd.DataFrame,
    effects: pd.DataFrame,
    causes: Mapping[str, CauseDeclaration] | None,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> dict[str, object]:
    images = sorted(set(gradsum["image"]) & set(effects["image"]))
    scores = _image_class_matrix(gradsum, "score", images)
    changes = _image_class_matrix(effects, "abs_delta", images)
    shared = sorted(set(scores.columns) & set(changes.columns))
    score_values, change_values = scores[shared].to_numpy(float), changes[shared].to_numpy(float)
    spearman, kendall = (
        float(r) for r in rank_correlations(_class_means(score_values), _class_means(change_values))
    )
    boot = _bootstrap(score_values, change_values, _rng(seed, model, method, "ranks"), n_resamples)
    task = str(effects["task"].iloc[0])
    classes, source = _causal_classes(task, changes, causes)
    mass, area = _cause_shares(gradsum[gradsum["image"].isin(images)], classes)
    mass_stats = mean_ci(mass, _rng(seed, model, method, "mass"), n_resamples, confidence)
    area_stats = mean_ci(area, _rng(seed, model, method, "area"), n_resamples, confidence)
    return {
        "model": model,
        "method": method,
        "task": task,
        "n_images": len(images),
        "n_classes": len(shared),
        "spearman": spearman,
        **_interval("spearman", spearman, boot[:, 0], confidence),
        "kendall": kendall,
        **_interval("kendall", kendall, boot[:, 1], confidence),
        "causal_classes": JOIN.join(classes),
        "cause_source": source,
        "cause_mass_share": mass_stats[0],
        "cause_mass_share_ci_low": mass_stats[1],
        "cause_mass_share_ci_high": mass_stats[2],
        "cause_area_share": area_stats[0],
        "cause_area_share_ci_low": area_stats[1],
        "cause_area_share_ci_high": area_stats[2],
        "cause_lift": mass_stats[0] / area_stats[0] if area_stats[0] > 0 else float("nan"),
        "domain": JOIN.join(sorted(set(effects["domain"]))),
    }


def _rng(seed: int, *key: str) -> np.random.Generator:
    """A generator of its own per figure, so adding a model or method changes no other interval."""
    return np.random.default_rng([seed, zlib.crc32("\0".join(key).encode())])


def _image_class_matrix(frame: pd.DataFrame, column: str, images: Sequence[str]) -> pd.DataFrame:
    """images × classes of `column`, NaN where the class is absent from the image."""
    table = frame.pivot_table(index="image", columns="class", values=column, aggfunc="mean", dropna=False)
    return table.reindex(index=list(images))


def _class_means(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every image is NaN
        return np.asarray(np.nanmean(values, axis=0), dtype=float)


def tie_rounded(values: np.ndarray) -> np.ndarray:
    """Each row rounded to `TIE_DIGITS` relative to its largest magnitude, so float noise ties."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without a finite value
        scale = np.nanmax(np.abs(values), axis=-1, keepdims=True)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return np.asarray(np.round(values / scale, TIE_DIGITS))


def rank_correlations(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman's rho and Kendall's tau-b of each row pair of (..., C) profiles over their finite pairs.

    NaN where either side is flat or fewer than two classes are finite. Equal to scipy's `spearmanr`
    (Pearson of average ranks) and `kendalltau` (tau-b) row by row; computed for all rows at once
    because a bootstrap calls them a thousand times per model × method (scipy: 2 ms a call).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], np.nan), np.full(x.shape[:-1], np.nan)
    x, y = tie_rounded(x), tie_rounded(y)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(keep, x, np.nan), np.where(keep, y, np.nan)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        ranks = [stats.rankdata(v, axis=-1, nan_policy="omit") for v in (x, y)]
        centred = [r - np.nanmean(r, axis=-1, keepdims=True) for r in ranks]
        spearman = _cosine(*(np.nan_to_num(c) for c in centred))
        # tau-b = Σ sign(Δx)·sign(Δy) / √(Σ sign(Δx)² · Σ sign(Δy)²) over class pairs; a NaN pair adds 0
        first, second = np.triu_indices(x.shape[-1], k=1)
        signs = [np.nan_to_num(np.sign(v[..., first] - v[..., second])) for v in (x, y)]
        kendall = _cosine(*signs)
    return spearman, kendall


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise a·b / (|a| |b|); NaN where either is zero (a flat profile)."""
    norms = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    # rounding can carry |r| a hair past 1
    return np.where(norms > 0, np.clip((a * b).sum(axis=-1) / norms, -1.0, 1.0), np.nan)


def _bootstrap(
    scores: np.ndarray, changes: np.ndarray, rng: np.random.Generator, n_resamples: int
) -> np.ndarray:
    """(n_resamples, 2) Spearman and Kendall of the class means on images drawn with replacement."""
    n_images = scores.shape[0]
    if n_images == 0:
        return np.full((0, 2), np.nan)
    # Each resample as image counts: a class mean is (counts · values) / (counts · present).
    counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_resamples).astype(float)
    spearman, kendall = rank_correlations(_weighted_means(counts, scores), _weighted_means(counts, changes))
    return np.stack([spearman, kendall], axis=1)


def _weighted_means(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    present = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(present, values, 0.0)) / (counts @ present.astype(float))


def _interval(name: str, point: float, resampled: np.ndarray, confidence: float) -> dict[str, float]:
    finite = resampled[np.isfinite(resampled)]
    if not np.isfinite(point) or finite.size == 0:
        low = high = float("nan")
    else:
        tail = 50 * (1 - confidence)
        low, high = (float(v) for v in np.percentile(finite, [tail, 100 - tail]))
    return {f"{name}_ci_low": low, f"{name}_ci_high": high}


def _causal_classes(
    task: str, changes: pd.DataFrame, causes: Mapping[str, CauseDeclaration] | None
) -> tuple[tuple[str, ...], str]:
    declared = causes.get(task) if causes else None
    if declared is not None and declared.causal:
        return tuple(declared.causal), DECLARED
    profile = _class_means(changes.to_numpy(float))
    if not np.isfinite(profile).any():
        return (), MEASURED
    return (str(changes.columns[int(np.nanargmax(profile))]),), MEASURED


def _cause_shares(gradsum: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per image holding a causal class: the causal classes' summed mass share and area share."""
    rows = gradsum[gradsum["class"].isin(list(classes))]
    per_image = rows.groupby("image", sort=True)[["mass_share", "area_share"]].sum(min_count=1)
    return per_image["mass_share"].to_numpy(float), per_image["area_share"].to_numpy(float)
