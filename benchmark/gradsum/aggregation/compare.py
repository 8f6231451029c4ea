"""Comparing two profiles: paired Wilcoxon tests per class with Holm correction, Spearman of the profiles.

The Spearman correlation is taken over the classes both profiles share, between the per-class mean
scores of the paired images; its confidence interval uses Fisher's z with the Fieller–Hartley–Pearson
variance 1.06 / (n - 3), where n is the number of classes (so it is undefined below four classes).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS, check_columns
from gradsum.errors import GradSUMError

#: Columns of `comparisons.csv`, in order.
COMPARISON_COLUMNS = (
    "a",
    "b",
    "class",
    "class_id",
    "n_pairs",
    "mean_a",
    "mean_b",
    "mean_diff",
    "statistic",
    "p_value",
    "p_holm",
    "differs",
    "spearman_rho",
    "spearman_ci_low",
    "spearman_ci_high",
)
#: Family-wise error rate of the Holm-corrected per-class tests.
ALPHA = 0.05


def combo_label(model: str, method: str) -> str:
    """The `model/method` label that names one side of a comparison."""
    return f"{model}/{method}"


def compare(
    per_image: pd.DataFrame,
    a: tuple[str, str],
    b: tuple[str, str],
    *,
    alpha: float = ALPHA,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per-class paired comparison of the scores of (model, method) `a` and `b` over shared images."""
    check_columns(per_image, PER_IMAGE_COLUMNS, "per_image")
    left, right = _select(per_image, a, "a"), _select(per_image, b, "b")
    paired = left[["image", "class_id", "class", "score"]].merge(
        right[["image", "class_id", "score"]], on=["image", "class_id"], suffixes=("_a", "_b")
    )
    rows = []
    for class_id, group in paired.groupby("class_id", sort=True):
        x, y = group["score_a"].to_numpy(float), group["score_b"].to_numpy(float)
        statistic, p_value = paired_test(x, y)
        rows.append(
            {
                "a": combo_label(*a),
                "b": combo_label(*b),
                "class": group["class"].iloc[0],
                "class_id": int(class_id),
                "n_pairs": len(group),
                "mean_a": float(x.mean()),
                "mean_b": float(y.mean()),
                "mean_diff": float((x - y).mean()),
                "statistic": statistic,
                "p_value": p_value,
            }
        )
    frame = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    frame["p_holm"] = holm(frame["p_value"].to_numpy(float))
    frame["differs"] = (frame["p_holm"] < alpha).astype(bool)
    rho, low, high = spearman_ci(frame["mean_a"].to_numpy(float), frame["mean_b"].to_numpy(float), confidence)
    frame["spearman_rho"], frame["spearman_ci_low"], frame["spearman_ci_high"] = rho, low, high
    return frame


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
        known = ", ".join(sorted({combo_label(m, k) for m, k in per_image[["model", "method"]].to_numpy()}))
        raise GradSUMError(
            f"{argument}: no per_image rows for {combo_label(model, method)!r}; known: {known}"
        )
    return rows


def paired_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Wilcoxon signed-rank statistic and p-value of paired samples; all-equal pairs give p = 1."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0:
        return float("nan"), float("nan")
    if np.all(x == y):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # Pratt keeps zero differences in the ranking: images where both agree count against a difference.
        result = stats.wilcoxon(x, y, zero_method="pratt")
    return float(result.statistic), float(result.pvalue)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries stay NaN and do not count as tests."""
    adjusted = np.full(p_values.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p_values))
    order = finite[np.argsort(p_values[finite], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p_values[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


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
