"""The paired statistics of a gate: one model × method of two runs as (images × classes) arrays, resampled by
image.

Every figure of one model × method is computed on the same image resamples (drawn once, as
`aggregation.label_quality.profile_agreement` draws them), so a class shift, the profile Spearman and a
top-k share are all answers about the same frames. A resample is a matrix of image weights (how often each
image was drawn), and each resampled class mean is a weighted sum: one matrix product per statistic for
every resample and class at once, instead of a loop over resamples and classes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.profiles import PROFILE_STATISTICS

#: Columns that identify one row of a per_image table within one model × method.
IMAGE, CLASS_ID, CLASS = "image", "class_id", "class"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval."""

    value: float
    low: float
    high: float


def draw_weights(images: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, images) counts of how often each image is drawn in each resample of `images` images
    with replacement: the draws of `rng.integers(0, images, (resamples, images))`, counted per row."""
    draws = rng.integers(0, images, (resamples, images))
    offsets = draws + images * np.arange(resamples)[:, None]
    return np.bincount(offsets.ravel(), minlength=resamples * images).reshape(resamples, images).astype(float)


def weighted_means(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(resamples, classes) means of `values` (images × classes, NaN where a class is absent) under each
    row of image `weights`; NaN where no drawn image holds the class."""
    present = np.isfinite(values)
    sums = weights @ np.where(present, values, 0.0)
    counts = weights @ present.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)


def class_means(values: np.ndarray) -> np.ndarray:
    """Each class's mean over the images that hold it (NaN where none does)."""
    return weighted_means(np.ones((1, values.shape[0])), values)[0]


def percentile_bounds(resampled: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided 1 − `alpha` percentile bounds of each column, over its finite resamples."""
    finite = np.isfinite(resampled).any(axis=0)
    low = np.full(resampled.shape[1], np.nan)
    high = np.full(resampled.shape[1], np.nan)
    if finite.any():
        low[finite], high[finite] = np.nanquantile(resampled[:, finite], [alpha / 2, 1 - alpha / 2], axis=0)
    return low, high


def rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of `a` with the same row of `b`, over the columns finite in both (NaN
    where fewer than two are, or a side is constant), as `scipy.stats.spearmanr` ranks them (ties averaged).

    Rows are grouped by which columns are finite, so each group is ranked in one call.
    """
    keep = np.isfinite(a) & np.isfinite(b)
    rho = np.full(a.shape[0], np.nan)
    patterns, group = np.unique(keep, axis=0, return_inverse=True)
    for index, columns in enumerate(patterns):
        rows = np.flatnonzero(group.ravel() == index)
        if columns.sum() < 2:
            continue
        ranks_a = stats.rankdata(a[np.ix_(rows, columns)], axis=1)
        ranks_b = stats.rankdata(b[np.ix_(rows, columns)], axis=1)
        rho[rows] = _row_pearson(ranks_a, ranks_b)
    return rho


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dx, dy = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    scale = np.sqrt((dx**2).sum(axis=1) * (dy**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (dx * dy).sum(axis=1) / np.where(scale > 0, scale, 1.0), np.nan)


def ranks(profiles: np.ndarray) -> np.ndarray:
    """Each class's rank in each row of (rows, classes) profiles, 1 for the highest; a tie shares the better
    rank; NaN for a class the row does not hold."""
    greater = (profiles[:, None, :] > profiles[:, :, None]).sum(axis=2)
    return np.where(np.isfinite(profiles), greater + 1.0, np.nan)


@dataclass
class Paired:
    """One model × method of both runs: per statistic, (images × classes) arrays of the baseline and the
    candidate over the same images and classes, and the image resamples every figure shares."""

    images: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]
    baseline: dict[str, np.ndarray]
    candidate: dict[str, np.ndarray]
    weights: np.ndarray
    _profiles: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)

    def column(self, name: str) -> int:
        """The column of class `name`."""
        return self.class_names.index(name)

    def resampled_profiles(self, side: str, statistic: str) -> np.ndarray:
        """(resamples, classes) class means of `side` ("baseline" or "candidate"), computed once."""
        key = (side, statistic)
        if key not in self._profiles:
            self._profiles[key] = weighted_means(self.weights, self.values(side, statistic))
        return self._profiles[key]

    def values(self, side: str, statistic: str) -> np.ndarray:
        """The (images × classes) array of `statistic` on `side`."""
        return (self.baseline if side == BASELINE else self.candidate)[statistic]


#: The two sides of a paired comparison.
BASELINE, CANDIDATE = "baseline", "candidate"


def paired(
    baseline: pd.DataFrame, candidate: pd.DataFrame, resamples: int, rng: np.random.Generator
) -> Paired:
    """The paired arrays of one model × method: `baseline` and `candidate` are its per_image rows on each
    side; images are the baseline's, classes those either side holds."""
    images = np.asarray(sorted(set(baseline[IMAGE].astype(str))), dtype=object)
    names = pd.concat([baseline[[CLASS_ID, CLASS]], candidate[[CLASS_ID, CLASS]]]).drop_duplicates(CLASS_ID)
    names = names.sort_values(CLASS_ID)
    class_ids = names[CLASS_ID].to_numpy(np.int64)
    return Paired(
        images=images,
        class_ids=class_ids,
        class_names=[str(n) for n in names[CLASS]],
        baseline=_arrays(baseline, images, class_ids),
        candidate=_arrays(candidate, images, class_ids),
        weights=draw_weights(len(images), resamples, rng),
    )


def _arrays(rows: pd.DataFrame, images: np.ndarray, class_ids: np.ndarray) -> dict[str, np.ndarray]:
    row = pd.Index(images).get_indexer(rows[IMAGE].astype(str))
    column = np.searchsorted(class_ids, rows[CLASS_ID].to_numpy(np.int64))
    # a candidate row on an image the baseline lacks has nowhere to go (the truth-set check refuses that)
    kept = row >= 0
    arrays = {}
    for statistic in PROFILE_STATISTICS:
        array = np.full((len(images), len(class_ids)), np.nan)
        array[row[kept], column[kept]] = rows[statistic].to_numpy(float)[kept]
        arrays[statistic] = array
    return arrays


def pair_rng(seed: int, model: str, method: str) -> np.random.Generator:
    """The generator of one model × method's resamples: seeded by the policy's seed and the pair's names, so
    a pair's figures do not depend on which other pairs a gate compares."""
    return np.random.default_rng([seed, zlib.crc32(f"{model}\0{method}".encode())])


def class_shift(pair: Paired, statistic: str, alpha: float) -> pd.DataFrame:
    """Per class: the mean per-image change candidate − baseline of `statistic` over the images both hold
    the class on, with its percentile interval over the shared image resamples."""
    change = pair.values(CANDIDATE, statistic) - pair.values(BASELINE, statistic)
    resampled = weighted_means(pair.weights, change)
    low, high = percentile_bounds(resampled, alpha)
    frame = pd.DataFrame(
        {
            CLASS: pair.class_names,
            CLASS_ID: pair.class_ids,
            "images": np.isfinite(change).sum(axis=0),
            "shift": class_means(change),
            "low": low,
            "high": high,
        }
    )
    return frame[frame["images"] > 0].reset_index(drop=True)


def spearman(pair: Paired, statistic: str, alpha: float) -> Interval:
    """Spearman's rho of the baseline's and the candidate's class profiles, with its percentile interval
    over the shared image resamples (a resample whose profiles cannot be ranked is left out)."""
    base, cand = (class_means(pair.values(side, statistic))[None] for side in (BASELINE, CANDIDATE))
    rho = float(rowwise_spearman(base, cand)[0])
    draws = rowwise_spearman(
        pair.resampled_profiles(BASELINE, statistic), pair.resampled_profiles(CANDIDATE, statistic)
    )
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return Interval(rho, float("nan"), float("nan"))
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return Interval(rho, float(low), float(high))
