from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS
from gradsum.evaluation.agreement import (
    AGREEMENT_COLUMNS,
    DECLARED,
    MEASURED,
    agreement_table,
    rank_correlations,
)
from gradsum.truthsets.base import CauseDeclaration

CLASS_IDS = {"road": 7, "sidewalk": 8, "building": 11, "vegetation": 21, "sky": 23}
STEERING = {"steering": CauseDeclaration(causal=("road", "sidewalk"), independent=("sky",))}


def _row(image: str, cls: str, **values: float) -> dict[str, object]:
    return {"image": image, "class": cls, "class_id": CLASS_IDS[cls], **values}


def _effects(rows: list[dict[str, object]], model: str = "m", task: str = "steering") -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.assign(model=model, task=task, domain="in")


def _gradsum(rows: list[dict[str, object]], method: str = "x", model: str = "m") -> pd.DataFrame:
    frame = pd.DataFrame(rows).assign(model=model, method=method)
    for column in ("pixels", "area_share", "score", "mass_share", "lift"):
        if column not in frame:
            frame[column] = 1.0
    return frame[list(PER_IMAGE_COLUMNS)]


def _paired(score_of: Callable[[float, int], float], seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """8 images × 5 classes (image k lacks class k mod 5) with random effects and scores derived from them."""
    rng = np.random.default_rng(seed)
    effects, scores = [], []
    for k in range(8):
        for position, cls in enumerate(CLASS_IDS):
            if position == k % 5:
                continue
            change = float(rng.uniform(0, 1) + position)
            effects.append(_row(f"i{k}", cls, abs_delta=change))
            scores.append(_row(f"i{k}", cls, score=score_of(change, k)))
    return _gradsum(scores), _effects(effects)


def _one(table: pd.DataFrame) -> pd.Series:
    assert len(table) == 1
    return table.iloc[0]


@pytest.mark.parametrize(("transform", "expected"), [(lambda v, k: 3 * v + 2, 1.0), (lambda v, k: -v, -1.0)])
def test_a_linear_image_of_the_causal_profile_agrees_perfectly_on_every_resample(
    transform: Callable[[float, int], float], expected: float
) -> None:
    gradsum, effects = _paired(transform)
    row = _one(agreement_table(gradsum, effects, None, n_resamples=200, seed=0))
    assert (row["n_images"], row["n_classes"]) == (8, 5)
    for name in ("spearman", "kendall"):
        assert (row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"]) == pytest.approx((expected,) * 3)


def test_a_monotone_image_of_class_constant_effects_has_rank_correlation_one() -> None:
    level = {cls: float(i) for i, cls in enumerate(CLASS_IDS)}
    effects = _effects([_row(f"i{k}", c, abs_delta=v) for k in range(4) for c, v in level.items()])
    gradsum = _gradsum([_row(f"i{k}", c, score=np.exp(5 * v)) for k in range(4) for c, v in level.items()])
    row = _one(agreement_table(gradsum, effects, None, n_resamples=100, seed=0))
    assert (row["spearman"], row["kendall"], row["spearman_ci_low"]) == pytest.approx((1.0, 1.0, 1.0))


def test_a_flat_profile_has_no_correlation_even_through_float_noise() -> None:
    # The uniform map's score is its sum over a class divided by the class's pixels: equal up to rounding.
    pixels = [3, 7, 10, 11, 13]
    noisy = [float(np.full(n, 1 / 7).sum() / n) for n in pixels]
    assert np.ptp(noisy) > 0  # the test exercises float noise, not exact equality
    effects = _effects(
        [_row(f"i{k}", c, abs_delta=float(i)) for k in range(3) for i, c in enumerate(CLASS_IDS)]
    )
    gradsum = _gradsum(
        [_row(f"i{k}", c, score=s) for k in range(3) for c, s in zip(CLASS_IDS, noisy, strict=True)]
    )
    row = _one(agreement_table(gradsum, effects, None, n_resamples=100, seed=0))
    columns = [f"{n}{s}" for n in ("spearman", "kendall") for s in ("", "_ci_low", "_ci_high")]
    assert row[columns].isna().all()


def test_point_estimates_equal_scipy_on_the_class_means_and_the_ci_is_seeded() -> None:
    gradsum, effects = _paired(lambda v, k: v + np.sin(7 * v + k))
    row = _one(agreement_table(gradsum, effects, None, n_resamples=300, seed=5))
    means = pd.DataFrame(
        {
            "score": gradsum.groupby("class")["score"].mean(),
            "effect": effects.groupby("class")["abs_delta"].mean(),
        }
    )
    assert row["spearman"] == pytest.approx(stats.spearmanr(means["score"], means["effect"]).statistic)
    assert row["kendall"] == pytest.approx(stats.kendalltau(means["score"], means["effect"]).statistic)
    assert -1 <= row["spearman_ci_low"] < row["spearman_ci_high"] <= 1  # resamples differ: a real interval
    again = _one(agreement_table(gradsum, effects, None, n_resamples=300, seed=5))
    pd.testing.assert_series_equal(row, again)


def test_rank_correlations_equal_scipy_with_ties_and_missing_classes() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, (50, 9)).astype(float)
    y = np.round(rng.normal(size=(50, 9)), 1)
    x[rng.random(x.shape) < 0.2] = np.nan
    spearman, kendall = rank_correlations(x, y)
    for row in range(50):
        keep = np.isfinite(x[row])
        assert spearman[row] == pytest.approx(stats.spearmanr(x[row, keep], y[row, keep]).statistic)
        assert kendall[row] == pytest.approx(stats.kendalltau(x[row, keep], y[row, keep]).statistic)


def _shares() -> pd.DataFrame:
    return _gradsum(
        [
            _row("a", "road", mass_share=0.6, area_share=0.3),
            _row("a", "sidewalk", mass_share=0.1, area_share=0.2),
            _row("a", "sky", mass_share=0.3, area_share=0.5),
            _row("b", "road", mass_share=0.4, area_share=0.1),
            _row("b", "sky", mass_share=0.6, area_share=0.9),
            _row("c", "sky", mass_share=1.0, area_share=1.0),  # no causal class: left out of the shares
        ]
    )


def _share_effects() -> pd.DataFrame:
    changes = {"road": 0.2, "sidewalk": 0.1, "sky": 0.9}
    return _effects(
        [_row(image, cls, abs_delta=changes[cls]) for image, cls in _shares()[["image", "class"]].to_numpy()]
    )


def test_declared_causal_classes_mass_and_area_share_by_hand() -> None:
    row = _one(agreement_table(_shares(), _share_effects(), STEERING, n_resamples=200, seed=0))
    assert (row["causal_classes"], row["cause_source"]) == ("road+sidewalk", DECLARED)
    # per image: a 0.6 + 0.1 of the mass on 0.3 + 0.2 of the area; b 0.4 on 0.1 (c has neither class)
    assert row["cause_mass_share"] == pytest.approx((0.7 + 0.4) / 2)
    assert row["cause_area_share"] == pytest.approx((0.5 + 0.1) / 2)
    assert row["cause_lift"] == pytest.approx(0.55 / 0.3)
    assert 0.4 <= row["cause_mass_share_ci_low"] <= 0.55 <= row["cause_mass_share_ci_high"] <= 0.7
    assert row["domain"] == "in"


@pytest.mark.parametrize("causes", [None, {}, {"obstacle": CauseDeclaration(("car",), ())}])
def test_without_a_declaration_the_top_class_of_the_causal_profile_is_the_cause(
    causes: dict[str, CauseDeclaration] | None,
) -> None:
    row = _one(agreement_table(_shares(), _share_effects(), causes, n_resamples=200, seed=0))
    assert (row["causal_classes"], row["cause_source"]) == ("sky", MEASURED)
    assert row["cause_mass_share"] == pytest.approx((0.3 + 0.6 + 1.0) / 3)
    assert row["cause_area_share"] == pytest.approx((0.5 + 0.9 + 1.0) / 3)
    assert row["cause_lift"] == pytest.approx(1.9 / 2.4)


def test_one_row_per_model_and_method_with_effects() -> None:
    gradsum, effects = _paired(lambda v, k: v)
    both = pd.concat([gradsum, gradsum.assign(method="y"), gradsum.assign(model="no_effects")])
    table = agreement_table(both, effects, None, n_resamples=50, seed=0)
    assert list(table.columns) == list(AGREEMENT_COLUMNS)
    assert table[["model", "method"]].to_numpy().tolist() == [["m", "x"], ["m", "y"]]
