from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from aggregation_tables import CLASS_IDS, make_per_image

from gradsum.aggregation import (
    COMPARISON_COLUMNS,
    SAMPLE_COLUMNS,
    compare,
    compare_all,
    holm,
    paired_test,
    spearman_ci,
)
from gradsum.errors import GradSUMError


def test_identical_inputs_do_not_differ_and_correlate_perfectly() -> None:
    base = make_per_image("cnn", "gradcam")
    same = base.assign(method="copy")
    table = compare(pd.concat([base, same]), ("cnn", "gradcam"), ("cnn", "copy"))
    assert tuple(table.columns) == COMPARISON_COLUMNS + SAMPLE_COLUMNS
    assert len(table) == len(CLASS_IDS) and not table["differs"].any()
    assert (table["p_value"] == 1.0).all() and (table["mean_diff"] == 0).all()
    assert (table["spearman_rho"] == 1.0).all()
    assert (table["spearman_ci_low"] == 1.0).all() and (table["spearman_ci_high"] == 1.0).all()
    assert (table["a"] == "cnn/gradcam").all() and (table["b"] == "cnn/copy").all()


def test_a_shifted_method_differs_on_the_shifted_class_only(two_methods: pd.DataFrame) -> None:
    table = compare(two_methods, ("cnn", "gradcam"), ("cnn", "shifted")).set_index("class")
    assert table["differs"].tolist() == [c == "car" for c in table.index]
    assert table.loc["car", "mean_diff"] == pytest.approx(-0.2)
    assert table.loc["car", "n_pairs"] == 30
    assert 0 < table["spearman_ci_low"].iloc[0] <= table["spearman_rho"].iloc[0] <= 1


def test_holm_is_at_least_raw_and_monotone() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.5, np.nan, 0.002])
    adjusted = holm(p)
    finite = np.isfinite(p)
    assert np.isnan(adjusted[4])
    assert (adjusted[finite] >= p[finite]).all() and (adjusted[finite] <= 1).all()
    order = np.argsort(p[finite])
    assert (np.diff(adjusted[finite][order]) >= 0).all()
    np.testing.assert_allclose(adjusted[finite], [0.04, 0.09, 0.09, 0.5, 0.01])


def test_holm_p_in_tables_is_at_least_raw(two_methods: pd.DataFrame) -> None:
    table = compare(two_methods, ("cnn", "gradcam"), ("cnn", "shifted"))
    assert (table["p_holm"] >= table["p_value"]).all()


def test_paired_test_edge_cases() -> None:
    assert paired_test(np.zeros(4), np.zeros(4)) == (0.0, 1.0)
    assert np.isnan(paired_test(np.array([]), np.array([]))[1])
    statistic, p = paired_test(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.5]))
    assert 0 < p <= 1 and statistic >= 0


def test_spearman_ci_needs_four_classes() -> None:
    rho, low, high = spearman_ci(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0]))
    assert rho == pytest.approx(-1.0) and np.isnan(low) and np.isnan(high)
    rho, low, high = spearman_ci(np.arange(10.0), np.array([0, 2, 1, 3, 4, 6, 5, 7, 9, 8.0]))
    assert low < rho < high


def test_compare_all_pairs_models_within_a_method_and_methods_within_a_model(
    two_methods: pd.DataFrame,
) -> None:
    per_image = pd.concat([two_methods, make_per_image("vit", "gradcam", seed=2)], ignore_index=True)
    table = compare_all(per_image)
    pairs = sorted(set(zip(table["a"], table["b"], strict=True)))
    assert pairs == [("cnn/gradcam", "cnn/shifted"), ("cnn/gradcam", "vit/gradcam")]
    assert compare_all(make_per_image("cnn", "gradcam", n_images=2)).empty


def test_unknown_combo_names_the_argument(two_methods: pd.DataFrame) -> None:
    with pytest.raises(GradSUMError, match=r"b: no per_image rows for 'vit/gradcam'; known: cnn/gradcam"):
        compare(two_methods, ("cnn", "gradcam"), ("vit", "gradcam"))


@pytest.mark.parametrize(
    ("low", "high", "relation"),
    [(0.1, 0.9, "alike"), (-0.9, -0.2, "opposite"), (-0.3, 0.8, "unrelated"), (0.0, 0.5, "unrelated")],
)
def test_ranking_relation_reads_the_interval_against_zero(low: float, high: float, relation: str) -> None:
    from gradsum.aggregation.compare import ranking_relation

    assert ranking_relation(low, high) == relation
    assert ranking_relation(float("nan"), float("nan")) == "unrelated"


def test_one_map_computed_twice_does_not_differ_but_a_small_real_shift_does() -> None:
    # known answers for the paired test's float tolerance: per-image scores are float32 map sums, so two
    # computations of one map differ by float32 rounding (a few 1e-8 relative, as GradCAM on the hybrid's
    # tokenizer with fused attention off and on did in the default run); that must never be a difference,
    # while a shift of 1e-4 relative on every image must be
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.05, 0.5, 1000).astype(np.float32).astype(np.float64)
    rounding = scores * (1 + rng.choice([-1.0, 1.0], 1000) * rng.uniform(0, 4, 1000) * 2.0**-24)
    assert paired_test(scores, rounding)[1] == 1.0
    biased = scores * (1 + rng.uniform(0, 2, 1000) * 2.0**-24)  # rounding that happens to lean one way
    assert paired_test(scores, biased)[1] == 1.0
    assert paired_test(scores, scores * (1 + 1e-4))[1] < 1e-10
    # the nulls: an exact copy, and noise far above rounding in both directions, are judged as before
    assert paired_test(scores, scores.copy()) == (0.0, 1.0)
    noisy = scores + rng.normal(0, 0.01, 1000)
    assert paired_test(scores, noisy)[1] > 0.001
