"""The label-quality study's figures against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gradsum.aggregation.label_quality import (
    agreement_threshold,
    class_changes,
    profile,
    profile_agreement,
)

NAN = np.nan


def test_profile_is_each_class_mean_over_the_images_that_hold_it() -> None:
    scores = np.array([[1.0, NAN, 4.0], [3.0, NAN, NAN]])
    np.testing.assert_array_equal(profile(scores), [2.0, NAN, 4.0])


def test_identical_labels_agree_exactly() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((20, 6))
    agreement = profile_agreement(scores, scores.copy(), np.random.default_rng(1), n_resamples=50)
    assert (agreement.rho, agreement.low, agreement.high) == (1.0, 1.0, 1.0)
    assert (agreement.classes, agreement.lost) == (6, 0)


def test_agreement_is_spearman_of_the_two_profiles_with_an_image_bootstrap() -> None:
    rng = np.random.default_rng(0)
    exact = rng.random((30, 5)) + np.arange(5)
    degraded = exact[:, [1, 0, 2, 4, 3]]  # two pairs of classes swap their scores
    agreement = profile_agreement(exact, degraded, np.random.default_rng(2), n_resamples=200)
    assert agreement.rho == pytest.approx(stats.spearmanr([0, 1, 2, 3, 4], [1, 0, 2, 4, 3]).statistic)
    # every resample keeps the class order (the offsets dwarf the noise), so the interval is the point
    assert agreement.low == pytest.approx(agreement.rho) and agreement.high == pytest.approx(agreement.rho)


def test_a_class_lost_everywhere_is_counted_and_left_out_of_the_ranking() -> None:
    exact = np.array([[1.0, 2.0, 3.0, 4.0]] * 4)
    degraded = exact.copy()
    degraded[:, 1] = NAN
    agreement = profile_agreement(exact, degraded, np.random.default_rng(0), n_resamples=20)
    assert (agreement.classes, agreement.lost, agreement.rho) == (4, 1, 1.0)


def test_class_changes_pair_images_that_hold_the_class_under_both_labels() -> None:
    exact = np.array([[1.0, 2.0], [3.0, NAN], [5.0, 4.0]])
    degraded = np.array([[1.5, 2.0], [3.5, 1.0], [NAN, 4.0]])
    rows = class_changes(exact, degraded, [7, 26], np.random.default_rng(0), n_resamples=100)
    road, car = rows.to_dict("records")
    assert road["class_id"] == 7 and road["images"] == 2 and road["change"] == pytest.approx(0.5)
    assert (road["change_ci_low"], road["change_ci_high"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert road["exact"] == pytest.approx(3.0) and road["degraded"] == pytest.approx(2.5)
    assert road["relative_change"] == pytest.approx(-0.5 / 3.0)
    assert car["images"] == 2 and car["change"] == 0.0 and car["degraded"] == pytest.approx(7 / 3)


def test_threshold_is_the_highest_miou_whose_agreement_falls_below_the_floor() -> None:
    mious = np.array([0.95, 0.9, 0.8, 0.6, NAN])
    lows = np.array([0.97, 0.85, 0.93, 0.5, 0.1])
    assert agreement_threshold(mious, lows, 0.9) == 0.9
    assert np.isnan(agreement_threshold(mious[:1], lows[:1], 0.9))
    # a level that could not be ranked decides nothing
    assert np.isnan(agreement_threshold(np.array([0.7]), np.array([NAN]), 0.9))
