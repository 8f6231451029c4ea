"""The decision rule on hand-made per-image rows: pass, fail, inconclusive, uninformative, undefined nulls.

Every figure here is a mean over images, so the expected outcome follows from the rows by hand: a method
whose every image beats every null by a wide margin passes, one identical to chance fails, one whose
margin over a confound is a coin toss is inconclusive, and a confound that beats chance makes the
criterion uninformative for everyone on that model.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradsum.evaluation.base import CHANCE, CONFOUND, CONTROL, HEURISTIC, METHOD, CheckResult, Criterion
from gradsum.evaluation.verdicts import (
    ADDS,
    FAIL,
    INCONCLUSIVE,
    NOT_RUN,
    PASS,
    UNINFORMATIVE,
    Resampled,
    compare,
    decide,
    image_counts,
    judge,
    overall,
    recommend,
    resample_figure,
    trust_table,
)

CRITERION = Criterion("check", "figure", threshold=0.5, name="check")
N_IMAGES = 60
ROLES = {
    "null:random": CHANCE,
    "null:uniform": CHANCE,
    "null:class_area": CONFOUND,
    "null:sobel": HEURISTIC,
    "good": METHOD,
    "chance_like": METHOD,
    "coin": METHOD,
    "control:oracle": CONTROL,
}


def _rows(model: str, values: dict[str, np.ndarray]) -> pd.DataFrame:
    frames = [
        pd.DataFrame(
            {"model": model, "method": method, "image": [f"i{k:03d}" for k in range(len(v))], "figure": v}
        )
        for method, v in values.items()
    ]
    return pd.concat(frames, ignore_index=True)


def _values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 0.02, N_IMAGES)
    noise -= noise.mean()  # the class-area prior's mean is exactly chance: it must not pass by luck
    return {
        "null:random": 0.5 + rng.normal(0, 0.05, N_IMAGES),
        "null:uniform": np.full(N_IMAGES, 0.5),
        "null:class_area": 0.5 + noise,
        "null:sobel": 0.7 + noise,
        "good": 0.9 + noise,
        "chance_like": np.full(N_IMAGES, 0.5),
        # above the class-area prior on half the images, below it on the other half
        "coin": 0.53 + noise + np.where(np.arange(N_IMAGES) % 2 == 0, 0.2, -0.2),
        "control:oracle": np.full(N_IMAGES, 1.0),
    }


def _table(values: dict[str, np.ndarray], criterion: Criterion = CRITERION) -> pd.DataFrame:
    result = CheckResult(
        tables={}, summary=pd.DataFrame(), criteria=[criterion], per_image=_rows("m", values)
    )
    return trust_table({"check": result}, ROLES, n_resamples=500, seed=0).set_index("method")


def test_each_outcome_on_hand_made_rows() -> None:
    table = _table(_values())
    assert table.loc["good", "check_verdict"] == PASS
    assert table.loc["control:oracle", "check_verdict"] == PASS
    assert table.loc["chance_like", "check_verdict"] == FAIL
    assert table.loc["coin", "check_verdict"] == INCONCLUSIVE
    for null in ("null:random", "null:uniform", "null:class_area"):
        assert table.loc[null, "check_verdict"] in (FAIL, INCONCLUSIVE)
    # the heuristic gates nothing: it beats chance here, and still "good" passes and nothing is uninformative
    assert table.loc["null:sobel", "check_verdict"] == PASS
    assert table.loc["good", "check_heuristic"] == ADDS
    assert table.loc["good", "check_over_heuristic"] == pytest.approx(0.2)
    assert table.loc["good", "verdict"] == PASS
    assert table.loc["good", "role"] == METHOD and not table.loc["good", "null"]
    assert table.loc["null:uniform", "null"] and table.loc["null:uniform", "role"] == CHANCE


def test_margin_is_over_the_best_gating_null_with_a_paired_interval() -> None:
    table = _table(_values())
    # the best gating null is the random map (mean above 0.5 on this seed) or the class-area prior (0.5 +
    # noise); against the class-area prior the method shares its noise, so the paired difference is 0.4
    values = _values()
    best = max(("null:random", "null:uniform", "null:class_area"), key=lambda k: values[k].mean())
    assert table.loc["good", "check_margin_null"] == best
    assert table.loc["good", "check_margin"] == pytest.approx(values["good"].mean() - values[best].mean())
    assert table.loc["good", "check"] == pytest.approx(0.9)
    values["null:random"] = np.full(N_IMAGES, 0.4)
    values["null:class_area"] += 0.02
    table = _table(values)
    assert table.loc["good", "check_margin_null"] == "null:class_area"
    assert table.loc["good", "check_margin"] == pytest.approx(0.38)
    assert table.loc["good", "check_margin_ci_low"] == pytest.approx(0.38)
    assert table.loc["good", "check_margin_ci_high"] == pytest.approx(0.38)


def test_pairing_decides_where_separate_intervals_would_overlap() -> None:
    """Method and null share large per-image noise; their difference is small but constant in sign."""
    rng = np.random.default_rng(3)
    shared = rng.normal(0, 0.3, N_IMAGES)
    shared -= shared.mean()
    values = {"null:class_area": 0.5 + shared, "good": 0.52 + shared}
    table = _table(values, Criterion("check", "figure", name="check"))
    high = table.loc["null:class_area", "check_ci_high"]
    assert table.loc["good", "check_ci_low"] < high  # the two intervals overlap ...
    assert table.loc["good", "check_margin_ci_low"] == pytest.approx(0.02)  # ... the paired margin does not
    assert table.loc["good", "check_verdict"] == PASS
    # a null with nothing to beat (no threshold, no other gating null) is not a pass
    assert table.loc["null:class_area", "check_verdict"] == INCONCLUSIVE


def test_a_confound_that_passes_makes_the_criterion_uninformative_for_every_row() -> None:
    values = _values()
    values["null:class_area"] = np.full(N_IMAGES, 0.95)
    table = _table(values)
    assert set(table["check_verdict"]) == {UNINFORMATIVE}
    assert "null:class_area passes" in table.loc["good", "check_reason"]
    assert table.loc["good", "verdict"] == UNINFORMATIVE
    # the margins stay, so methods can still be ranked
    assert table.loc["good", "check_margin"] == pytest.approx(values["good"].mean() - 0.95)


def test_a_null_with_an_undefined_figure_cannot_be_beaten_and_is_never_silently_dropped() -> None:
    values = _values()
    values["null:class_area"] = np.full(N_IMAGES, np.nan)
    table = _table(values)
    assert table.loc["good", "check_verdict"] == INCONCLUSIVE
    assert "null:class_area" in table.loc["good", "check_reason"]
    assert "undefined" in table.loc["good", "check_reason"]
    # a method no better than chance still fails: the defined chance null decides that
    assert table.loc["chance_like", "check_verdict"] == FAIL


def test_an_undefined_method_figure_is_inconclusive_not_a_fail() -> None:
    # fail means "shown no better than chance": a figure with no value has no bound to show that with
    values = _values()
    values["good"] = np.full(N_IMAGES, np.nan)
    table = _table(values)
    assert table.loc["good", "check_verdict"] == INCONCLUSIVE
    assert "undefined" in table.loc["good", "check_reason"]
    assert math.isnan(table.loc["good", "check"])


def test_the_threshold_alone_is_the_bar_when_nulls_do_not_apply() -> None:
    criterion = Criterion("check", "figure", threshold=0.0, against_nulls=False, name="check")
    values = {
        "good": np.full(N_IMAGES, 0.1),
        "chance_like": np.zeros(N_IMAGES),
        "coin": np.tile([1.0, -1.0], 30),
    }
    table = _table(values, criterion)
    assert table.loc["good", "check_verdict"] == PASS
    assert table.loc["chance_like", "check_verdict"] == FAIL
    assert table.loc["coin", "check_verdict"] == INCONCLUSIVE


def test_lower_is_better_flips_the_direction() -> None:
    criterion = Criterion("check", "figure", higher_is_better=False, threshold=0.5, name="check")
    values = {
        "null:uniform": np.full(N_IMAGES, 0.5),
        "good": np.full(N_IMAGES, 0.1),
        "bad": np.full(N_IMAGES, 0.9),
    }
    table = _table(values, criterion)
    assert table.loc["good", "check_verdict"] == PASS
    assert table.loc["bad", "check_verdict"] == FAIL
    assert table.loc["good", "check_margin"] == pytest.approx(0.4)


def test_ratio_figures_are_ratios_of_means_on_each_resample() -> None:
    criterion = Criterion("check", "mass", denominator="area", threshold=1.0, name="check")
    rows = pd.DataFrame({"image": ["a", "b", "c"], "mass": [0.2, 0.6, np.nan], "area": [0.1, 0.1, 0.5]})
    counts = np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    figure = resample_figure(criterion, rows, ["a", "b", "c"], counts)
    assert figure.point == pytest.approx(0.8 / 0.2)  # image c has no mass: left out of both means
    assert figure.draws == pytest.approx([4.0, 2.0, 6.0])
    # a denominator that is not positive on a resample makes that resample undefined, not sign-flipped
    rows = pd.DataFrame({"image": ["a", "b"], "mass": [0.2, 0.6], "area": [0.1, -0.3]})
    counts = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    figure = resample_figure(criterion, rows, ["a", "b"], counts)
    assert np.isnan(figure.point)
    assert figure.draws[0] == pytest.approx(2.0) and np.isnan(figure.draws[1:]).all()


def test_counts_are_drawn_once_per_model_and_reproducible() -> None:
    images = [f"i{k}" for k in range(10)]
    first, again = image_counts(images, 50, 0, "m"), image_counts(images, 50, 0, "m")
    assert np.array_equal(first, again)
    assert (first.sum(axis=1) == 10).all()
    assert not np.array_equal(first, image_counts(images, 50, 0, "other"))


def test_judge_on_the_figures_gives_the_trust_tables_columns() -> None:
    """`judge` is the trust table's decision once the figures exist: the same figures give the same row."""
    values = _values()
    rows = _rows("m", values)
    images = sorted(rows["image"].unique())
    counts = image_counts(images, 500, 0, "m")
    figures = {
        method: resample_figure(CRITERION, group, images, counts)
        for method, group in rows.groupby("method", sort=True)
    }
    judged = judge(CRITERION, figures, ROLES)
    table = _table(values)
    for method, columns in judged.items():
        assert table.loc[method, list(columns)].to_dict() == pytest.approx(columns, nan_ok=True)
    assert judged["good"]["check_verdict"] == PASS


def test_judge_by_hand_a_passing_prior_makes_every_row_uninformative() -> None:
    draws = np.array([0.0, 0.1, -0.1])
    figures = {
        "null:uniform": Resampled(0.5, 0.5 + draws),
        "null:class_area": Resampled(0.8, 0.8 + draws),
        "good": Resampled(0.9, 0.9 + draws),
    }
    criterion = Criterion("check", "figure", name="check")
    judged = judge(criterion, figures, ROLES)
    # the class-area prior beats the uniform map on every resample (0.3 > 0): a prior passes
    assert {columns["check_verdict"] for columns in judged.values()} == {UNINFORMATIVE}
    assert judged["good"]["check_margin_null"] == "null:class_area"
    assert judged["good"]["check_margin"] == pytest.approx(0.1)
    # without the prior, the method beats the uniform map by 0.4 on every resample
    del figures["null:class_area"]
    judged = judge(criterion, figures, ROLES)
    assert judged["good"]["check_verdict"] == PASS
    assert judged["good"]["check_margin"] == pytest.approx(0.4)


def test_decide_and_compare_by_hand() -> None:
    row = Resampled(0.8, np.array([0.7, 0.8, 0.9]))
    null = Resampled(0.5, np.array([0.5, 0.5, 0.5]))
    diff = compare(CRITERION, row, null)
    assert diff.point == pytest.approx(0.3)
    assert diff.lower == pytest.approx(np.quantile([0.2, 0.3, 0.4], 0.05))
    assert decide(CRITERION, row, {"null:uniform": (CHANCE, null)})[0] == PASS
    assert decide(CRITERION, null, {"null:uniform": (CHANCE, null)})[0] == FAIL


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([PASS, PASS], PASS),
        ([PASS, FAIL], FAIL),
        ([PASS, INCONCLUSIVE], INCONCLUSIVE),
        ([PASS, UNINFORMATIVE], PASS),
        ([UNINFORMATIVE, UNINFORMATIVE], UNINFORMATIVE),
        ([UNINFORMATIVE, FAIL], FAIL),
        ([NOT_RUN, PASS], PASS),
        ([NOT_RUN], NOT_RUN),
    ],
)
def test_overall_verdict(outcomes: list[str], expected: str) -> None:
    assert overall(outcomes) == expected


def test_overall_verdict_needs_evidence_of_the_causes() -> None:
    # a model-dependence pass (sanity) beside uninformative criteria of the causes is no pass
    assert overall([UNINFORMATIVE, PASS], [UNINFORMATIVE]) == UNINFORMATIVE
    assert overall([INCONCLUSIVE, PASS], [INCONCLUSIVE]) == INCONCLUSIVE
    assert overall([PASS, PASS], [PASS]) == PASS
    assert overall([PASS, FAIL], [PASS]) == FAIL


def test_models_criterion_reads_the_permutation_p() -> None:
    criterion = Criterion("shortcut", "detection", over="models", name="shortcut")
    summary = pd.DataFrame(
        {
            "model": ["a", "a", "a", "a"],
            "method": ["strong", "weak", "none", "null:uniform"],
            "detection": [0.9, 0.4, -0.2, np.nan],
            "detection_ci_low": [0.8, 0.3, -0.3, np.nan],
            "detection_ci_high": [0.95, 0.5, 0.1, np.nan],
            "detection_p": [0.002, 0.18, 0.7, np.nan],
        }
    )
    result = CheckResult(tables={}, summary=summary, criteria=[criterion])
    table = trust_table({"shortcut": result}, {"null:uniform": CHANCE}).set_index("method")
    # the image-bootstrap interval of "weak" lies above 0, but the claim is about models: p decides
    assert table.loc["strong", "shortcut_verdict"] == PASS
    assert table.loc["weak", "shortcut_verdict"] == INCONCLUSIVE
    assert table.loc["none", "shortcut_verdict"] == FAIL
    assert table.loc["null:uniform", "shortcut_verdict"] == FAIL


def test_recommendation_names_a_method_or_says_none_beats_chance() -> None:
    table = _table(_values()).reset_index()
    lines = recommend(table).set_index("model")
    assert lines.loc["m", "method"] == "good"  # the control passes too, but is never recommended
    assert lines.loc["m", "sentence"].startswith("For m, use good (passes check; margins check +0.")
    values = {k: v for k, v in _values().items() if k not in ("good", "control:oracle")}
    lines = recommend(_table(values).reset_index()).set_index("model")
    assert lines.loc["m", "method"] == ""
    assert lines.loc["m", "sentence"].startswith("For m, no method is shown better than chance")
    assert "closest: coin" in lines.loc["m", "sentence"]


def test_a_recommendation_needs_a_pass_that_is_evidence_of_the_causes() -> None:
    """A method passing only a model-dependence criterion (sanity-like) is not recommended."""
    faithful = Criterion("check", "figure", threshold=0.5, name="check")
    dependence = Criterion("dep", "drop", threshold=0.0, against_nulls=False, name="dep", evidence=False)
    rows = _rows("m", {"good": np.full(N_IMAGES, 0.4), "null:uniform": np.full(N_IMAGES, 0.5)})
    rows["drop"] = np.where(rows["method"] == "good", 0.3, np.nan)
    results = {
        "check": CheckResult(
            {}, pd.DataFrame(), [faithful], per_image=rows[["model", "method", "image", "figure"]]
        ),
        "dep": CheckResult(
            {}, pd.DataFrame(), [dependence], per_image=rows[["model", "method", "image", "drop"]]
        ),
    }
    table = trust_table(results, ROLES, n_resamples=200)
    good = table.set_index("method").loc["good"]
    assert (good["check_verdict"], good["dep_verdict"]) == (FAIL, PASS)
    # now "good" is inconclusive on the evidence criterion (a coin around chance), and passes "dep" only
    values = {"good": np.tile([0.7, 0.3], N_IMAGES // 2), "null:uniform": np.full(N_IMAGES, 0.5)}
    rows = _rows("m", values).assign(drop=lambda f: np.where(f["method"] == "good", 0.3, np.nan))
    results["check"] = CheckResult(
        {}, pd.DataFrame(), [Criterion("check", "figure", name="check")], per_image=rows
    )
    results["dep"] = CheckResult({}, pd.DataFrame(), [dependence], per_image=rows)
    table = trust_table(results, ROLES, n_resamples=200)
    assert table.set_index("method").loc["good", ["check_verdict", "dep_verdict"]].tolist() == [
        INCONCLUSIVE,
        PASS,
    ]
    assert recommend(table, evidence=["check"]).loc[0, "method"] == ""
    assert recommend(table).loc[0, "method"] == "good"  # every criterion counts when none is named
