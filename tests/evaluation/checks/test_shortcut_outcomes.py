"""The shortcut study's decisions, checked by hand: each method's outcome from the detection p or the
trust table, the Student t interval over seeds, and fine-tuning's success rule."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from gradsum.evaluation.checks.shortcut import (
    DETECTION_COLUMNS,
    R2_TOLERANCE,
    RECOVERY_TARGET,
    detection_outcomes,
    finetune_outcomes,
    seed_change,
    t_interval,
)
from gradsum.evaluation.verdicts import permutation_outcome

NAN = math.nan


def _detection(p_values: dict[str, float]) -> pd.DataFrame:
    rows = [(m, m.startswith("null:"), 5, 0.5, 0.1, 0.9, p, 0.5) for m, p in p_values.items()]
    return pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))


def test_the_permutation_rule_at_its_edges() -> None:
    outcomes = [permutation_outcome(p)[0] for p in (0.0, 0.049, 0.05, 0.4999, 0.5, 1.0, NAN)]
    assert outcomes == ["pass", "pass", "inconclusive", "inconclusive", "fail", "fail", "fail"]


def test_outcomes_from_the_detection_p_without_a_trust_verdict() -> None:
    detection = _detection({"gradcam": 0.01, "rollout": 0.2, "null:random": 0.7})
    expected = {"gradcam": "pass", "rollout": "inconclusive", "null:random": "fail"}
    assert detection_outcomes(detection, None) == (expected, False)
    # a trust table without the shortcut column, or judging no method, leaves the p to decide
    assert detection_outcomes(detection, pd.DataFrame({"method": ["gradcam"]})) == (expected, False)
    unjudged = pd.DataFrame({"method": ["gradcam"], "shortcut_verdict": ["not run"]})
    assert detection_outcomes(detection, unjudged) == (expected, False)


def test_the_trust_verdict_wins_and_a_fail_among_a_methods_rows_wins() -> None:
    detection = _detection({"gradcam": 0.01, "rollout": 0.2, "null:random": 0.7})
    trust = pd.DataFrame(
        {
            "method": ["gradcam", "gradcam", "null:random", "null:random"],
            "shortcut_verdict": ["pass", "fail", "pass", "not run"],
        }
    )
    outcomes, from_trust = detection_outcomes(detection, trust)
    # rollout has no trust row: its own p decides
    assert from_trust and outcomes == {"gradcam": "fail", "rollout": "inconclusive", "null:random": "pass"}


def test_t_interval_is_the_student_interval() -> None:
    values = [0.5, 0.7, 0.6]
    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)  # sd of the three is 0.1
    found = t_interval(values)
    assert (found.mean, found.low, found.high, found.n) == pytest.approx((0.6, 0.6 - half, 0.6 + half, 3))
    one = t_interval([0.3, NAN])
    assert one.mean == 0.3 and math.isnan(one.low) and one.n == 1
    assert math.isnan(t_interval([NAN]).mean)


def test_seed_change_pairs_each_seed() -> None:
    change = seed_change(pd.Series([1.0, 2.0, 3.0]), pd.Series([2.0, 4.0, 6.0]))
    assert change.seeds == 3 and change.before.mean == 2.0 and change.after.mean == 4.0
    # after − before per seed: 1, 2, 3
    assert (change.change.mean, change.change.high - change.change.mean) == pytest.approx(
        (2.0, stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    )


def _finetune(recovered: list[float], in_after: list[float]) -> pd.DataFrame:
    n = len(recovered)
    return pd.DataFrame(
        {
            "base": ["b"] * n,
            "gap_recovered": recovered,
            "r2_decorrelated_before": [0.1] * n,
            "r2_decorrelated_after": [0.5] * n,
            "r2_in_distribution_before": [0.9] * n,
            "r2_in_distribution_after": in_after,
        }
    )


def test_finetuning_succeeds_on_half_the_gap_and_a_kept_in_distribution_r2() -> None:
    (success,) = finetune_outcomes(_finetune([0.5, 0.7, 0.6], [0.89, 0.885, 0.895]))
    assert success.seeds == 3 and success.recovered.mean == pytest.approx(0.6)
    assert success.in_distribution_change.mean == pytest.approx(-0.01)
    assert success.has_gap and success.recovers_half and success.keeps_in_distribution and success.success
    (hurt,) = finetune_outcomes(_finetune([0.6, 0.6], [0.9 - R2_TOLERANCE - 0.01] * 2))
    assert hurt.recovers_half and not hurt.keeps_in_distribution and not hurt.success
    (short,) = finetune_outcomes(_finetune([RECOVERY_TARGET - 0.1] * 2, [0.9, 0.9]))
    assert not short.recovers_half and not short.success
    (clean,) = finetune_outcomes(_finetune([NAN, NAN], [0.9, 0.9]))
    assert not clean.has_gap
