"""The paired statistics of a gate: one model × method of two runs as (images × classes) arrays, resampled by
image.

Every figure of one model × method is computed on the same image resamples (drawn once, as
`aggregation.label_quality.profile_agreement` draws them), so a class shift, the profile Spearman and a
top-k share are all answers about the same frames. A resample is a matrix of image weights (how often each
image was drawn), and each resampled class mean is a weighted sum: one matrix product per statistic for
every resample and class at once, instead of a loop over resamples and classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    return _divide(weights @ np.where(present, values, 0.0), weights @ present.astype(float))


def class_means(values: np.ndarray) -> np.ndarray:
    """Each class's mean over the images that hold it (NaN where none does)."""
    return weighted_means(np.ones((1, values.shape[0])), values)[0]


def percentile_bounds(resampled: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided 1 − `alpha` percentile bounds of each column, over its finite resamples."""
    quantiles = [alpha / 2, 1 - alpha / 2]
    finite = np.isfinite(resampled)
    if finite.all():
        low, high = np.quantile(resampled, quantiles, axis=0)
        return low, high
    # a class no drawn image holds leaves a gap in a few resamples: those columns one at a time
    # (np.nanquantile would take every column one at a time)
    low, high = np.full(resampled.shape[1], np.nan), np.full(resampled.shape[1], np.nan)
    for column in range(resampled.shape[1]):
        kept = resampled[finite[:, column], column]
        if kept.size:
            low[column], high[column] = np.quantile(kept, quantiles)
    return low, high


def rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of `a` with the same row of `b`, over the columns finite in both (NaN
    where fewer than two are, or a side is constant), as `scipy.stats.spearmanr` ranks them (ties averaged).

    Rows are grouped by which columns are finite, so each group is ranked in one call.
    """
    keep = np.isfinite(a) & np.isfinite(b)
    rho = np.full(a.shape[0], np.nan)
    # most rows hold every class some row holds: rank those at once, group the few others by pattern
    columns = keep.any(axis=0)
    full = keep[:, columns].all(axis=1)
    _rank_rows(a, b, np.flatnonzero(full), columns, rho)
    patterns, group = np.unique(keep[~full], axis=0, return_inverse=True)
    partial = np.flatnonzero(~full)
    for index, pattern in enumerate(patterns):
        _rank_rows(a, b, partial[group.ravel() == index], pattern, rho)
    return rho


def _rank_rows(a: np.ndarray, b: np.ndarray, rows: np.ndarray, columns: np.ndarray, rho: np.ndarray) -> None:
    """Set `rho` of `rows` to the Spearman of `a` and `b` over `columns` (left NaN below two columns)."""
    if rows.size == 0 or columns.sum() < 2:
        return
    ranks_a = stats.rankdata(a[np.ix_(rows, columns)], axis=1)
    ranks_b = stats.rankdata(b[np.ix_(rows, columns)], axis=1)
    rho[rows] = _row_pearson(ranks_a, ranks_b)


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


class Resamples:
    """The image resamples of a gate: drawn once per set of images from the policy's seed, so every model
    × method on the same images is judged on the same draws (as the trust verdicts are), and a pair's
    figures do not depend on which other pairs a gate compares."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed = count, seed
        self._drawn: dict[bytes, np.ndarray] = {}

    def weights(self, images: np.ndarray) -> np.ndarray:
        """(count, images) draw counts over `images` (their positions in the gate's image list):
        `draw_weights` from a generator seeded by the seed."""
        key = np.asarray(images, dtype=np.int64).tobytes()
        if key not in self._drawn:
            self._drawn[key] = draw_weights(len(images), self.count, np.random.default_rng(self.seed))
        return self._drawn[key]


#: The two sides of a paired comparison.
BASELINE, CANDIDATE = "baseline", "candidate"
SIDES = (BASELINE, CANDIDATE)


@dataclass
class Paired:
    """One model × method of both runs: per statistic, (images × classes) arrays of the baseline and the
    candidate over the same images and classes, the image resamples every figure shares, and each side's
    weighted sums and counts over those resamples.

    A statistic's sums on both sides, and the counts of each distinct set of present cells, are one matrix
    product made when a check first asks for the statistic: the product reads the (resamples × images)
    weights once for every figure of that statistic.
    """

    images: np.ndarray
    class_ids: np.ndarray
    class_names: list[str]
    baseline: dict[str, np.ndarray]
    candidate: dict[str, np.ndarray]
    weights: np.ndarray
    _sums: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)
    _counts: dict[bytes, np.ndarray] = field(default_factory=dict, repr=False)

    def column(self, name: str) -> int:
        """The column of class `name`."""
        return self.class_names.index(name)

    def values(self, side: str, statistic: str) -> np.ndarray:
        """The (images × classes) array of `statistic` on `side` ("baseline" or "candidate")."""
        return (self.baseline if side == BASELINE else self.candidate)[statistic]

    def resampled_profiles(self, side: str, statistic: str) -> np.ndarray:
        """(resamples, classes) class means of `side`."""
        present = np.isfinite(self.values(side, statistic))
        return _divide(self._summed(side, statistic), self._counted(present))

    def resampled_shifts(self, statistic: str) -> np.ndarray:
        """(resamples, classes) mean change candidate − baseline over the drawn images holding the class."""
        base, cand = (np.isfinite(self.values(side, statistic)) for side in SIDES)
        if np.array_equal(base, cand):
            # both sides hold the same cells: the change's sums are the difference of the sides' sums
            sums = self._summed(CANDIDATE, statistic) - self._summed(BASELINE, statistic)
            return _divide(sums, self._counted(base))
        change = self.values(CANDIDATE, statistic) - self.values(BASELINE, statistic)
        return weighted_means(self.weights, change)

    def _summed(self, side: str, statistic: str) -> np.ndarray:
        if (side, statistic) not in self._sums:
            self._multiply(statistic)
        return self._sums[side, statistic]

    def _counted(self, present: np.ndarray) -> np.ndarray:
        key = present.tobytes()
        if key not in self._counts:
            self._counts[key] = self.weights @ present.astype(float)
        return self._counts[key]

    def _multiply(self, statistic: str) -> None:
        """Both sides' sums of `statistic`, and the counts of its present cells not counted yet, in one
        product."""
        present = {side: np.isfinite(self.values(side, statistic)) for side in SIDES}
        blocks = [np.where(present[side], self.values(side, statistic), 0.0) for side in SIDES]
        uncounted = {mask.tobytes(): mask for mask in present.values() if mask.tobytes() not in self._counts}
        products = np.split(
            self.weights @ np.hstack([*blocks, *uncounted.values()]), len(blocks) + len(uncounted), axis=1
        )
        self._sums.update(zip([(side, statistic) for side in SIDES], products, strict=False))
        self._counts.update(zip(uncounted, products[len(blocks) :], strict=True))


def _divide(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)


@dataclass(frozen=True)
class Rows:
    """One model × method's per_image rows as arrays: each row's image (its position in the gate's image
    list), its class id and its figures."""

    images: np.ndarray
    class_ids: np.ndarray
    values: dict[str, np.ndarray]


class Tables:
    """Both runs' per_image tables as arrays grouped by model × method, read once for every pair.

    The images are the baseline's (the candidate's are the same set: `inputs.check_same_truthset`).
    """

    def __init__(self, baseline: pd.DataFrame, candidate: pd.DataFrame) -> None:
        self.image_ids = np.sort(np.asarray(baseline[IMAGE].unique(), dtype=str)).astype(object)
        self.baseline_classes = _class_names(baseline)
        self.names = {**_class_names(candidate), **self.baseline_classes}
        self.baseline, self.candidate = self._grouped(baseline), self._grouped(candidate)

    def methods(self, model: str, side: str = BASELINE) -> list[str]:
        """The methods `side` holds for `model`, sorted."""
        groups = self.baseline if side == BASELINE else self.candidate
        return sorted(method for held, method in groups if held == model)

    def _grouped(self, table: pd.DataFrame) -> dict[tuple[str, str], Rows]:
        codes, ids = pd.factorize(table[IMAGE])
        # each distinct id's position in the image list (-1: not one of the baseline's images)
        positions = pd.Index(self.image_ids).get_indexer(np.asarray(ids, dtype=object))
        images = np.where(codes >= 0, positions[codes], -1)
        class_ids = table[CLASS_ID].to_numpy(np.int64)
        values = {statistic: table[statistic].to_numpy(float) for statistic in PROFILE_STATISTICS}
        return {
            (str(model), str(method)): Rows(images[at], class_ids[at], {s: v[at] for s, v in values.items()})
            for (model, method), at in table.groupby(["model", "method"], sort=False).indices.items()
        }

    def paired(self, model: str, candidate_model: str, method: str, resamples: Resamples) -> Paired:
        """The paired arrays of baseline `model` and `candidate_model` under `method`: the images the
        baseline's rows hold, the classes either side holds."""
        base, cand = self.baseline[model, method], self.candidate[candidate_model, method]
        images = np.unique(base.images[base.images >= 0])
        class_ids = np.union1d(base.class_ids, cand.class_ids)
        return Paired(
            images=self.image_ids[images],
            class_ids=class_ids,
            class_names=[self.names[int(c)] for c in class_ids],
            baseline=_arrays(base, images, class_ids),
            candidate=_arrays(cand, images, class_ids),
            weights=resamples.weights(images),
        )


def _class_names(table: pd.DataFrame) -> dict[int, str]:
    """Each class id of a per_image table with its name."""
    first = table.drop_duplicates(CLASS_ID)
    return {int(i): str(n) for i, n in zip(first[CLASS_ID], first[CLASS], strict=True)}


def _arrays(rows: Rows, images: np.ndarray, class_ids: np.ndarray) -> dict[str, np.ndarray]:
    row = np.searchsorted(images, rows.images)
    # a row on an image the baseline's rows lack has nowhere to go
    kept = (rows.images >= 0) & (row < len(images))
    kept[kept] = images[row[kept]] == rows.images[kept]
    column = np.searchsorted(class_ids, rows.class_ids)
    arrays = {}
    for statistic, values in rows.values.items():
        array = np.full((len(images), len(class_ids)), np.nan)
        array[row[kept], column[kept]] = values[kept]
        arrays[statistic] = array
    return arrays


def paired(baseline: pd.DataFrame, candidate: pd.DataFrame, resamples: Resamples) -> Paired:
    """The paired arrays of one model × method from its per_image rows on each side."""
    (key,), (other,) = (frame.groupby(["model", "method"]).indices for frame in (baseline, candidate))
    tables = Tables(baseline, candidate)
    return tables.paired(str(key[0]), str(other[0]), str(key[1]), resamples)


def class_shift(pair: Paired, statistic: str, alpha: float) -> list[dict[str, Any]]:
    """Per class both sides hold on some image: the mean per-image change candidate − baseline of
    `statistic` over the images both hold it on (`shift`, over `images` images), with its percentile
    interval (`low`, `high`) over the shared image resamples."""
    change = pair.values(CANDIDATE, statistic) - pair.values(BASELINE, statistic)
    low, high = percentile_bounds(pair.resampled_shifts(statistic), alpha)
    images, shift = np.isfinite(change).sum(axis=0), class_means(change)
    return [
        {
            CLASS: pair.class_names[c],
            CLASS_ID: int(pair.class_ids[c]),
            "images": int(images[c]),
            "shift": float(shift[c]),
            "low": float(low[c]),
            "high": float(high[c]),
        }
        for c in np.flatnonzero(images > 0)
    ]


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
