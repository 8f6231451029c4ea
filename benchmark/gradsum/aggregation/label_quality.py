"""How far a profile moves when its labels change: the figures of the label-quality study.

Both profiles are computed from the same maps on the same images, once with the exact labels and once
with degraded (or predicted) ones, so every figure here is paired by image: the per-class score change is
the mean of per-image differences, and the profile agreement's interval comes from resampling images,
both profiles recomputed from each resample. An interval over images, not over classes, answers the
question a user asks: would another draw of frames, labelled this way, still give my profile?
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.profiles import mean_ci

#: The confidence of every interval of the study.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Agreement:
    """Spearman's rho between the exact-label and the degraded-label profile, with its image-bootstrap CI."""

    rho: float
    low: float
    high: float
    #: classes present under the exact labels (the ones the profile ranks)
    classes: int
    #: of those, the classes the degraded labels no longer hold on any image
    lost: int


def profile(scores: np.ndarray) -> np.ndarray:
    """The class profile of (images, classes) scores: each class's mean over the images that hold it."""
    present = np.isfinite(scores)
    counts = present.sum(axis=0)
    sums = np.where(present, scores, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(stats.spearmanr(x[keep], y[keep]).statistic)


def profile_agreement(
    exact: np.ndarray, degraded: np.ndarray, rng: np.random.Generator, n_resamples: int = 1000
) -> Agreement:
    """Spearman's rho of the two class profiles of (images, classes) score arrays, with a percentile CI
    from resampling images (the same resample for both profiles).

    A class the degraded labels lose everywhere drops out of the ranking (it is counted in `lost`); a
    resample whose profiles cannot be ranked (fewer than two classes left) is skipped.
    """
    if exact.shape != degraded.shape:
        raise ValueError(f"score arrays differ in shape: {exact.shape} and {degraded.shape}")
    base, moved = profile(exact), profile(degraded)
    classes = int(np.isfinite(base).sum())
    lost = int((np.isfinite(base) & ~np.isfinite(moved)).sum())
    rho = _rho(base, moved)
    images = exact.shape[0]
    draws = [
        _rho(profile(exact[i]), profile(degraded[i])) for i in rng.integers(0, images, (n_resamples, images))
    ]
    finite = np.asarray([d for d in draws if np.isfinite(d)])
    if finite.size == 0:
        return Agreement(rho, float("nan"), float("nan"), classes, lost)
    tail = (1.0 - CONFIDENCE) / 2
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return Agreement(rho, float(low), float(high), classes, lost)


def class_changes(
    exact: np.ndarray,
    degraded: np.ndarray,
    class_ids: Sequence[int],
    rng: np.random.Generator,
    n_resamples: int = 1000,
) -> pd.DataFrame:
    """Per class: the mean per-image score change (degraded − exact) over the images that hold the class
    under both labels, with its bootstrap CI (`mean_ci`), and the relative change of the class's profile."""
    rows = []
    base, moved = profile(exact), profile(degraded)
    for column, class_id in enumerate(class_ids):
        if not np.isfinite(base[column]):
            continue
        both = np.isfinite(exact[:, column]) & np.isfinite(degraded[:, column])
        mean, low, high = mean_ci(degraded[both, column] - exact[both, column], rng, n_resamples)
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = (moved[column] - base[column]) / abs(base[column])
        rows.append(
            {
                "class_id": int(class_id),
                "images": int(both.sum()),
                "exact": float(base[column]),
                "degraded": float(moved[column]),
                "change": mean,
                "change_ci_low": low,
                "change_ci_high": high,
                "relative_change": float(relative),
            }
        )
    return pd.DataFrame(rows)


def agreement_threshold(mious: np.ndarray, lows: np.ndarray, floor: float) -> float:
    """The label mIoU below which a profile stops agreeing: the highest mIoU of a level whose agreement
    CI falls below `floor` (NaN when every level agrees; a level that could not be ranked decides nothing).

    Labels of a higher mIoU than this agreed at every level tested; that is the answer to "how good must my
    labels be?" for one model × method, at the levels the study tried.
    """
    failing = np.isfinite(mious) & np.isfinite(lows) & (lows < floor)
    return float(np.max(mious[failing])) if failing.any() else float("nan")
