"""The gate's vectorised bootstrap against loops over resamples and against the label study's agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gate_results import per_image
from gradsum.aggregation.label_quality import profile_agreement
from gradsum.gate.statistics import (
    Resamples,
    class_shift,
    draw_weights,
    paired,
    ranks,
    rowwise_spearman,
    spearman,
    weighted_means,
)

RESAMPLES = 300


def _noisy(seed: int, spread: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
    base = per_image(methods=("gradcam",))
    cand = base.copy()
    noise = np.random.default_rng(seed).normal(0.0, spread, len(cand))
    cand["score"] = cand["score"] + noise
    cand["mass_share"] = cand["mass_share"] + noise / 2
    return base, cand


def test_weights_count_the_same_draws_as_integers() -> None:
    weights = draw_weights(7, 5, np.random.default_rng(3))
    draws = np.random.default_rng(3).integers(0, 7, (5, 7))
    for row, drawn in zip(weights, draws, strict=True):
        assert row.tolist() == np.bincount(drawn, minlength=7).tolist()


def test_weighted_means_are_the_means_of_the_drawn_images() -> None:
    values = np.array([[1.0, np.nan], [2.0, 5.0], [4.0, np.nan]])
    weights = np.array([[2.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    means = weighted_means(weights, values)
    # row 0 draws images 0, 0, 1; row 1 images 0 and 2 (no class-1 value); row 2 image 2 three times
    assert means[0].tolist() == pytest.approx([4.0 / 3.0, 5.0])
    assert means[1, 0] == pytest.approx(2.5) and np.isnan(means[1, 1])
    assert means[2, 0] == 4.0 and np.isnan(means[2, 1])


def test_rowwise_spearman_equals_scipy_with_ties_and_missing_classes() -> None:
    a = np.array(
        [[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0], [np.nan, 3.0, 1.0, 2.0], [1.0, np.nan, np.nan, 2.0]]
    )
    b = np.array([[4.0, 3.0, 2.0, 1.0], [2.0, 1.0, 3.0, 3.0], [5.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, np.nan]])
    rho = rowwise_spearman(a, b)
    for row in range(3):
        keep = np.isfinite(a[row]) & np.isfinite(b[row])
        assert rho[row] == pytest.approx(stats.spearmanr(a[row, keep], b[row, keep]).statistic)
    assert rho[0] == pytest.approx(-1.0)
    # one class in common: no rank correlation
    assert np.isnan(rho[3])


def test_ranks_put_the_highest_first_and_share_ties() -> None:
    got = ranks(np.array([[0.1, 0.5, 0.3, np.nan], [0.2, 0.2, 0.1, 0.4]]))
    assert got[0, :3].tolist() == [3.0, 1.0, 2.0] and np.isnan(got[0, 3])
    assert got[1].tolist() == [2.0, 2.0, 4.0, 1.0]


@pytest.mark.parametrize("drop_cars", [0, 7])
def test_class_shift_interval_is_the_percentile_of_a_loop_over_resamples(drop_cars: int) -> None:
    base, cand = _noisy(1)
    # a candidate that lacks car on some images the baseline holds it on: the sides' classes differ
    cand = cand.drop(cand.index[cand["class"] == "car"][:drop_cars])
    pair = paired(base, cand, Resamples(RESAMPLES, 0))
    table = pd.DataFrame(class_shift(pair, "score", 0.1)).set_index("class")
    draws = np.random.default_rng(0).integers(0, len(pair.images), (RESAMPLES, len(pair.images)))
    for column, name in enumerate(pair.class_names):
        change = pair.candidate["score"][:, column] - pair.baseline["score"][:, column]
        means = [np.nanmean(change[d]) for d in draws if np.isfinite(change[d]).any()]
        low, high = np.quantile(means, [0.05, 0.95])
        assert table.loc[name, "shift"] == pytest.approx(np.nanmean(change))
        assert (table.loc[name, "low"], table.loc[name, "high"]) == pytest.approx((low, high))
        assert table.loc[name, "images"] == np.isfinite(change).sum()
    # car is absent from every fourth image
    assert table.loc["car", "images"] == 30 - drop_cars and table.loc["road", "images"] == 40


def test_spearman_equals_the_label_study_agreement_on_the_same_draws() -> None:
    # noise enough to swap neighbouring classes in some resamples
    base, cand = _noisy(2, spread=0.4)
    pair = paired(base, cand, Resamples(RESAMPLES, 5))
    got = spearman(pair, "score", 0.05)
    want = profile_agreement(
        pair.baseline["score"], pair.candidate["score"], np.random.default_rng(5), RESAMPLES
    )
    assert (got.value, got.low, got.high) == pytest.approx((want.rho, want.low, want.high))
    assert got.low < got.high


def test_paired_arrays_align_images_and_classes_of_both_sides() -> None:
    base = per_image(methods=("gradcam",))
    cand = base.sample(frac=1.0, random_state=0)  # the same rows in another order
    pair = paired(base, cand, Resamples(10, 0))
    assert pair.class_names == ["road", "building", "vegetation", "sky", "car"]  # by Cityscapes id
    for statistic in ("score", "mass_share", "lift"):
        np.testing.assert_array_equal(pair.baseline[statistic], pair.candidate[statistic])
    assert np.isnan(pair.baseline["score"][0, pair.column("car")])
    assert pair.baseline["score"][3, pair.column("sky")] == pytest.approx(0.1 + 0.01)
