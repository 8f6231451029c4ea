"""Comparing two profiles: a test per class with Holm correction, and the Spearman of the profiles.

Two profiles over the same images are compared image by image (Wilcoxon signed-rank on the pairs).
Two profiles over different images (the same model profiled on two truth sets: transferability)
cannot be paired; each class's scores are compared as two independent samples (Mann–Whitney U).
Which applies is read from the image ids of the two sides (`same_images`).

The Spearman correlation is taken over the classes both profiles share, between the per-class mean
scores (of the paired images, or of each side's own images); its confidence interval uses Fisher's z
with the Fieller–Hartley–Pearson variance 1.06 / (n - 3), where n is the number of classes (so it is
undefined below four classes).
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS, check_columns
from gradsum.contract import COMPARISONS
from gradsum.errors import GradSUMError
from gradsum.names import pair_label

log = logging.getLogger(__name__)

#: Columns of the comparisons table, in order (declared by the results contract) ...
COMPARISON_COLUMNS = COMPARISONS.required_names
#: ... then the test that ran and each side's sample size (`n_pairs` counts the image pairs of a paired
#: test, 0 for an unpaired one), which tables written before they existed lack.
SAMPLE_COLUMNS = COMPARISONS.optional
#: Family-wise error rate of the Holm-corrected per-class tests.
ALPHA = 0.05


@dataclass(frozen=True)
class ClassTest:
    """A two-sample test of one class's per-image scores: its name and whether its samples are paired."""

    name: str
    paired: bool
    run: Callable[[np.ndarray, np.ndarray], tuple[float, float]]


def compare(
    per_image: pd.DataFrame,
    a: tuple[str, str],
    b: tuple[str, str],
    *,
    alpha: float = ALPHA,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per-class comparison of the scores of (model, method) `a` and `b`: paired over the same images,
    unpaired (Mann–Whitney U) when the two sides scored different images."""
    check_columns(per_image, PER_IMAGE_COLUMNS, "per_image")
    left, right = _select(per_image, a, "a"), _select(per_image, b, "b")
    test = PAIRED if same_images(left, right, pair_label(*a), pair_label(*b)) else UNPAIRED
    rows = [
        {"a": pair_label(*a), "b": pair_label(*b), **row, "test": test.name}
        for row in (_paired_rows(left, right) if test.paired else _unpaired_rows(left, right))
    ]
    frame = pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS, *SAMPLE_COLUMNS])
    frame["p_holm"] = holm(frame["p_value"].to_numpy(float))
    frame["differs"] = (frame["p_holm"] < alpha).astype(bool)
    rho, low, high = spearman_ci(frame["mean_a"].to_numpy(float), frame["mean_b"].to_numpy(float), confidence)
    frame["spearman_rho"], frame["spearman_ci_low"], frame["spearman_ci_high"] = rho, low, high
    return frame


def same_images(left: pd.DataFrame, right: pd.DataFrame, a: str = "a", b: str = "b") -> bool:
    """True when both sides scored the same set of image ids, False when the sets differ.

    A partial overlap (one run on a subset of the other's split, or two truth sets that happen to
    share some ids) is logged and treated as different images: the unpaired test stays valid there
    (overlapping images only make it conservative), where pairing the shared images would silently
    drop the rest.
    """
    ids_a, ids_b = set(left["image"]), set(right["image"])
    if ids_a == ids_b:
        return True
    shared = len(ids_a & ids_b)
    if shared:
        log.warning(
            "%s and %s share %d of %d and %d image ids: compared as different images (unpaired test)",
            a,
            b,
            shared,
            len(ids_a),
            len(ids_b),
        )
    return False


def _paired_rows(left: pd.DataFrame, right: pd.DataFrame) -> list[dict[str, object]]:
    paired = left[["image", "class_id", "class", "score"]].merge(
        right[["image", "class_id", "score"]], on=["image", "class_id"], suffixes=("_a", "_b")
    )
    rows = []
    for class_id, group in paired.groupby("class_id", sort=True):
        x, y = group["score_a"].to_numpy(float), group["score_b"].to_numpy(float)
        statistic, p_value = PAIRED.run(x, y)
        rows.append(
            {
                "class": group["class"].iloc[0],
                "class_id": int(class_id),
                "n_pairs": len(group),
                "mean_a": float(x.mean()),
                "mean_b": float(y.mean()),
                "mean_diff": float((x - y).mean()),
                "statistic": statistic,
                "p_value": p_value,
                "n_a": len(group),
                "n_b": len(group),
            }
        )
    return rows


def _unpaired_rows(left: pd.DataFrame, right: pd.DataFrame) -> list[dict[str, object]]:
    # Only classes both truth sets contain are tested: a class one side never saw has no profile value.
    samples_b = {int(c): g["score"].to_numpy(float) for c, g in right.groupby("class_id", sort=True)}
    rows = []
    for class_id, group in left.groupby("class_id", sort=True):
        if int(class_id) not in samples_b:
            continue
        x, y = group["score"].to_numpy(float), samples_b[int(class_id)]
        statistic, p_value = UNPAIRED.run(x, y)
        rows.append(
            {
                "class": group["class"].iloc[0],
                "class_id": int(class_id),
                "n_pairs": 0,
                "mean_a": float(np.nanmean(x)),
                "mean_b": float(np.nanmean(y)),
                "mean_diff": float(np.nanmean(x) - np.nanmean(y)),
                "statistic": statistic,
                "p_value": p_value,
                "n_a": len(x),
                "n_b": len(y),
            }
        )
    return rows


def compare_all(per_image: pd.DataFrame, *, alpha: float = ALPHA) -> pd.DataFrame:
    """Comparisons of every pair of models under one method and every pair of methods under one model."""
    check_columns(per_image, PER_IMAGE_COLUMNS, "per_image")
    frames = [compare(per_image, a, b, alpha=alpha) for a, b in comparison_pairs(per_image)]
    if not frames:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def comparison_pairs(per_image: pd.DataFrame) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(model, method) pairs that differ in exactly one of model and method, in a stable order."""
    combos = sorted(
        {(str(m), str(k)) for m, k in per_image[["model", "method"]].drop_duplicates().to_numpy()}
    )
    return [(a, b) for a, b in itertools.combinations(combos, 2) if (a[0] == b[0]) != (a[1] == b[1])]


def _select(per_image: pd.DataFrame, combo: tuple[str, str], argument: str) -> pd.DataFrame:
    model, method = combo
    rows = per_image[(per_image["model"] == model) & (per_image["method"] == method)]
    if rows.empty:
        known = ", ".join(sorted({pair_label(m, k) for m, k in per_image[["model", "method"]].to_numpy()}))
        raise GradSUMError(f"{argument}: no per_image rows for {pair_label(model, method)!r}; known: {known}")
    return rows


#: per-image scores are float32 map sums: pairs within 16 float32 ulps (2⁻²⁰) of the larger value differ
#: by rounding alone (one map computed twice, in another order), so the paired test counts them as ties
ROUNDING = 2.0**-20


def paired_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Wilcoxon signed-rank statistic and p-value of paired samples; all-equal pairs give p = 1.

    Pairs equal to `ROUNDING` are ties (zero differences): a float32 rounding that happens to lean one
    way over a thousand images would otherwise be a "significant" difference between identical maps.
    """
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0:
        return float("nan"), float("nan")
    y = np.where(np.abs(x - y) <= ROUNDING * np.maximum(np.abs(x), np.abs(y)), x, y)
    if np.all(x == y):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # Pratt keeps zero differences in the ranking: images where both agree count against a difference.
        result = stats.wilcoxon(x, y, zero_method="pratt")
    return float(result.statistic), float(result.pvalue)


def unpaired_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann–Whitney U statistic (of `x`) and p-value of independent samples; all-equal gives p = 1."""
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        return float("nan"), float("nan")
    if np.ptp(np.concatenate([x, y])) == 0:
        # every value tied: U sits at its mean and the normal approximation divides by zero
        return x.size * y.size / 2, 1.0
    result = stats.mannwhitneyu(x, y, alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


PAIRED = ClassTest("wilcoxon", True, paired_test)
UNPAIRED = ClassTest("mann-whitney", False, unpaired_test)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries stay NaN and do not count as tests."""
    adjusted = np.full(p_values.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p_values))
    order = finite[np.argsort(p_values[finite], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p_values[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


#: What a profile Spearman interval says of two class rankings: the same order, the opposite one, or no
#: shown relation (the interval holds 0).
ALIKE, OPPOSITE, UNRELATED = "alike", "opposite", "unrelated"


def ranking_relation(ci_low: float, ci_high: float) -> str:
    """`ALIKE` when the interval lies above 0, `OPPOSITE` below it, else `UNRELATED` (NaN included)."""
    if ci_low > 0:
        return ALIKE
    if ci_high < 0:
        return OPPOSITE
    return UNRELATED


def spearman_ci(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Spearman's rho of two profiles with a Fisher-z confidence interval (NaN below four classes)."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = x.size
    if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan")
    rho = float(stats.spearmanr(x, y).statistic)
    if n < 4:
        return rho, float("nan"), float("nan")
    half = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(1.06 / (n - 3))
    with np.errstate(divide="ignore"):
        z = np.arctanh(rho)
    return rho, float(np.tanh(z - half)), float(np.tanh(z + half))
