"""The compression study: its figures against hand computations, its known answers (a variant identical to
its parent), and its config refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradsum.contract import METRIC_FIRST, NEITHER, PROFILE_FIRST, TOGETHER
from gradsum.evaluation.verdicts import FAIL, INCONCLUSIVE, PASS
from gradsum.models.tasks import regression_metrics
from gradsum.pipeline.compression import (
    CLASS_SHIFT,
    SPEARMAN,
    TASK_METRIC,
    Variant,
    agreement_row,
    dropped,
    gate_verdicts,
    metric_change,
    onset_rows,
    overall,
    shared_methods,
    study_policy,
)
from gradsum.pipeline.config import CompressConfig, CompressionStudyConfig, RunConfig

#: Classes of the hand-made per-image tables: road, sky, car, building (Cityscapes ids).
CLASSES = {"road": 7, "sky": 23, "car": 26, "building": 11}
SETTINGS = CompressionStudyConfig()


def per_image_rows(model: str, scores: np.ndarray, shares: np.ndarray) -> pd.DataFrame:
    """A per_image table of one model × gradcam: image i holds every class of CLASSES."""
    rows = [
        {
            "model": model,
            "method": "gradcam",
            "image": f"{i:03d}",
            "class_id": class_id,
            "class": name,
            "score": float(scores[i, c]),
            "mass_share": float(shares[i, c]),
            # the gate reads every profile statistic; lift is not under test here
            "lift": 1.0,
        }
        for i in range(scores.shape[0])
        for c, (name, class_id) in enumerate(CLASSES.items())
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def parent_figures() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    # four classes with well separated mean scores, so that the profile's ranking is clear
    scores = np.array([0.8, 0.2, 0.5, 0.35]) + rng.normal(0, 0.05, (30, 4))
    shares = scores / scores.sum(axis=1, keepdims=True)
    return scores, shares


def variant(name: str, level: float | None = 0.5) -> Variant:
    return Variant(name, "parent", CompressConfig(base="parent", method="magnitude", level=level))


def test_a_variant_identical_to_its_parent_agrees_perfectly(
    parent_figures: tuple[np.ndarray, np.ndarray],
) -> None:
    scores, shares = parent_figures
    table = pd.concat([per_image_rows("parent", scores, shares), per_image_rows("same", scores, shares)])
    row = agreement_row(table, variant("same"), "gradcam", SETTINGS, np.random.default_rng(0), 200)
    assert row["spearman"] == 1.0 and row["spearman_ci_low"] == 1.0 and row["spearman_ci_high"] == 1.0
    assert row["shift"] == 0.0 and row["shift_ci_low"] == 0.0 and row["shift_ci_high"] == 0.0
    assert row["classes"] == 4 and row["lost"] == 0 and row["shift_images"] == 30
    assert not row["drifted"]


def test_a_planted_shift_is_found_with_its_paired_interval(
    parent_figures: tuple[np.ndarray, np.ndarray],
) -> None:
    scores, shares = parent_figures
    moved = shares.copy()
    # sky gains 0.2 of the mass on every image (give or take 0.01), road and building lose it
    moved[:, 1] += 0.2 + np.linspace(-0.01, 0.01, len(moved))
    moved[:, 0] -= 0.15
    moved[:, 3] -= 0.05
    table = pd.concat([per_image_rows("parent", scores, shares), per_image_rows("shifted", scores, moved)])
    row = agreement_row(table, variant("shifted"), "gradcam", SETTINGS, np.random.default_rng(0), 500)
    difference = moved[:, 1] - shares[:, 1]
    assert row["shift_class"] == "sky" and row["statistic"] == "mass_share"
    assert row["shift"] == pytest.approx(difference.mean())
    assert row["shift_ci_low"] <= difference.mean() <= row["shift_ci_high"]
    assert row["shift_ci_low"] > SETTINGS.shift_tolerance
    # scores unchanged: the ranking agrees, the class shift alone is shown beyond ±0.05
    assert row["spearman"] == 1.0
    assert row["drifted"]


def test_a_reordered_profile_is_shown_below_the_floor(parent_figures: tuple[np.ndarray, np.ndarray]) -> None:
    scores, shares = parent_figures
    reversed_scores = scores[:, ::-1].copy()
    table = pd.concat(
        [per_image_rows("parent", scores, shares), per_image_rows("flipped", reversed_scores, shares)]
    )
    row = agreement_row(table, variant("flipped"), "gradcam", SETTINGS, np.random.default_rng(0), 200)
    base, moved = scores.mean(axis=0), reversed_scores.mean(axis=0)
    assert row["spearman"] == pytest.approx(stats.spearmanr(base, moved).statistic)
    assert row["spearman_ci_high"] < SETTINGS.spearman_floor
    assert row["drifted"]


def test_the_metric_change_is_paired_by_image() -> None:
    rng = np.random.default_rng(1)
    targets = rng.normal(0, 1, 400)
    parent = targets + rng.normal(0, 0.1, 400)
    worse = targets + rng.normal(0, 0.6, 400)
    base, value, change, low, high = metric_change(parent, worse, targets, "steering", rng, 500)
    r2 = [regression_metrics(p, targets)["r2"] for p in (parent, worse)]
    assert base == pytest.approx(r2[0]) and value == pytest.approx(r2[1])
    assert change == pytest.approx(r2[1] - r2[0])
    assert low <= change <= high < 0
    # a model against itself: no change, and every resample agrees
    assert metric_change(parent, parent, targets, "steering", rng, 100)[2:] == (0.0, 0.0, 0.0)


def test_obstacle_models_are_scored_by_accuracy() -> None:
    targets = np.array([0.0, 1.0] * 50)
    right = np.where(targets > 0.5, 2.0, -2.0)
    half = right.copy()
    half[:50] *= -1  # the first half of the images now predicted wrong
    base, value, change, _, high = metric_change(
        right, half, targets, "obstacle", np.random.default_rng(0), 200
    )
    assert (base, value, change) == (1.0, 0.5, -0.5)
    assert high < 0


def test_the_overall_verdict_names_what_failed() -> None:
    assert overall({SPEARMAN: PASS, CLASS_SHIFT: PASS}) == (PASS, "")
    assert overall({SPEARMAN: INCONCLUSIVE, CLASS_SHIFT: PASS}) == (INCONCLUSIVE, "")
    assert overall({SPEARMAN: FAIL, CLASS_SHIFT: INCONCLUSIVE, "task_metric": FAIL}) == (
        FAIL,
        "spearman, task_metric",
    )


def _onset(drifted: list[bool], dropped: list[bool], levels: list[float]) -> dict[str, object]:
    names = [f"m_{level}" for level in levels]
    agreement = pd.DataFrame(
        {"model": names, "parent": "m", "compression": "magnitude", "method": "gradcam"}
        | {"level": levels, "drifted": drifted}
    )
    table = pd.DataFrame({"model": names, "dropped": dropped})
    (row,) = onset_rows(agreement, table)
    return row


def test_the_onset_is_the_lowest_level_shown() -> None:
    # listed out of order: the study sorts by level
    row = _onset([True, False, True], [True, False, False], [0.9, 0.3, 0.5])
    assert (row["drift_level"], row["drop_level"], row["order"]) == (0.5, 0.9, PROFILE_FIRST)
    assert row["drift_model"] == "m_0.5" and row["levels"] == 3
    assert _onset([False, True], [True, True], [0.3, 0.5])["order"] == METRIC_FIRST
    assert _onset([False, True], [False, True], [0.3, 0.5])["order"] == TOGETHER
    none = _onset([False, False], [False, False], [0.3, 0.5])
    assert none["order"] == NEITHER and math.isnan(none["drift_level"]) and none["drop_model"] == ""
    # a profile that drifts where the metric never drops moved first
    assert _onset([False, True], [False, False], [0.3, 0.5])["order"] == PROFILE_FIRST


def test_a_method_run_on_one_side_only_is_not_compared(parent_figures: tuple[np.ndarray, np.ndarray]) -> None:
    scores, shares = parent_figures
    extra = per_image_rows("same", scores, shares).assign(method="gradrollout")
    table = pd.concat(
        [per_image_rows("parent", scores, shares), per_image_rows("same", scores, shares), extra]
    )
    assert shared_methods(table, variant("same")) == ["gradcam"]


def test_a_drop_is_judged_in_the_metric_s_own_direction() -> None:
    assert dropped("r2", -0.1, -0.03, 0.02) and not dropped("r2", -0.1, -0.01, 0.02)
    assert dropped("rmse", 0.03, 0.1, 0.02) and not dropped("rmse", -0.1, -0.03, 0.02)
    assert not dropped("accuracy", math.nan, math.nan, 0.02)


def _cards(parent_r2: float, variant_r2: float, variant_name: str) -> dict[str, dict[str, object]]:
    return {
        "parent": {"task": "steering", "metrics": {"r2": parent_r2}},
        variant_name: {"task": "steering", "metrics": {"r2": variant_r2}},
    }


def test_the_gate_passes_an_identical_variant_and_names_what_fails(
    parent_figures: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    scores, shares = parent_figures
    config = RunConfig(bootstrap_resamples=200)
    policy = study_policy(config, SETTINGS)
    same = pd.concat([per_image_rows("parent", scores, shares), per_image_rows("same", scores, shares)])
    verdicts = gate_verdicts(same, _cards(0.98, 0.98, "same"), variant("same"), policy, tmp_path)
    assert verdicts == {"gradcam": (PASS, "")}
    # the metric drops by 0.1 on the cards (beyond 0.02), and the profile is reversed: both checks fail
    flipped = pd.concat(
        [per_image_rows("parent", scores, shares), per_image_rows("flipped", scores[:, ::-1].copy(), shares)]
    )
    verdicts = gate_verdicts(flipped, _cards(0.98, 0.88, "flipped"), variant("flipped"), policy, tmp_path)
    assert verdicts == {"gradcam": (FAIL, f"{SPEARMAN}, {TASK_METRIC}")}
