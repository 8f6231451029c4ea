"""The leaderboard table: pooled figures over training seeds, verdicts, ranks and Kendall's W, checked against
hand computations on the two-seed, three-image fixture (board_fixtures)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from board_fixtures import (
    CAUSAL,
    CRITERIA,
    FIGURES,
    IMAGES,
    LOCALISATION,
    MODEL,
    NULL,
    ORACLE,
    ROLES,
    SEEDS,
    per_seed,
)
from scipy.stats import friedmanchisquare

from gradsum.errors import ResultsError
from gradsum.evaluation.base import CheckResult, Criterion
from gradsum.evaluation.verdicts import NOT_RUN, PASS, criteria_per_image, criterion_table
from gradsum.leaderboard.board import (
    EXPECTED_ORDER,
    KNOWN_ANSWERS,
    build_board,
    draw,
    kendalls_w,
    pooled_figures,
    rank_rows,
)

N = 200


def board(figures=FIGURES, seed=0, n=N):
    return build_board(MODEL, "cnn", "steering", per_seed(figures), CRITERIA, ROLES, n, seed)


def of(criterion: str, frames: dict[int, pd.DataFrame]) -> dict[int, pd.DataFrame]:
    return {s: f[f["criterion"] == criterion] for s, f in frames.items()}


def test_pooled_point_is_the_mean_of_the_seeds_points():
    figures = pooled_figures(LOCALISATION, of("localisation", per_seed()), MODEL, N, 0)
    # gradcam: seed 0 mean(1.0, 1.2, 1.4) / mean(2, 2, 2) = 0.6, seed 2 mean(.4, .5, .6) / 1 = 0.5
    assert figures["gradcam"].point == pytest.approx(0.55)
    assert figures[NULL].point == pytest.approx(0.25)
    assert sorted(figures) == sorted(FIGURES["localisation"])


def test_pooled_draws_weight_each_seeds_resampled_figure_by_its_seed_count():
    frames = of("causal", per_seed())
    figures = pooled_figures(CAUSAL, frames, MODEL, N, 3)
    draws = draw(MODEL, {s: IMAGES for s in SEEDS}, {s: f"{MODEL}_s{s}" for s in SEEDS}, N, 3)
    per_image = {
        s: np.array([FIGURES["causal"]["saliency"][k] + d for d in (-0.1, 0.0, 0.1)])
        for k, s in enumerate(SEEDS)
    }
    seed_figure = {s: draws.image_counts[s] @ per_image[s] / draws.image_counts[s].sum(axis=1) for s in SEEDS}
    expected = (draws.seed_counts[:, 0] * seed_figure[0] + draws.seed_counts[:, 1] * seed_figure[2]) / 2
    np.testing.assert_allclose(figures["saliency"].draws, expected)
    # the seeds are resampled: some resamples hold one seed twice, so the spread includes the seeds'
    assert {tuple(c) for c in draws.seed_counts} == {(2.0, 0.0), (1.0, 1.0), (0.0, 2.0)}
    only_first = (draws.seed_counts[:, 0] == 2).nonzero()[0]
    np.testing.assert_allclose(figures["saliency"].draws[only_first], seed_figure[0][only_first])


def test_ranks_scores_and_margins_by_hand():
    rows = board().rows.set_index("method")
    # causal: oracle 1.0, gradcam 0.75, ig 0.75, null 0.5, saliency 0.45 → 1, 2.5, 2.5, 4, 5
    assert rows["causal_rank"].to_dict() == {
        ORACLE: 1.0,
        "gradcam": 2.5,
        "ig": 2.5,
        NULL: 4.0,
        "saliency": 5.0,
    }
    # localisation: oracle .9, ig .75, gradcam .55, saliency .55, null .25 → 1, 2, 3.5, 3.5, 5
    assert rows["localisation_rank"].to_dict() == {
        ORACLE: 1.0,
        "ig": 2.0,
        "gradcam": 3.5,
        "saliency": 3.5,
        NULL: 5.0,
    }
    # scores 1, 2.25 (ig), 3 (gradcam), 4.25 (saliency), 4.5 (null)
    assert list(board().rows["method"]) == [ORACLE, "ig", "gradcam", "saliency", NULL]
    assert list(board().rows["rank"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert rows.loc["gradcam", "causal_margin"] == pytest.approx(0.25)
    assert rows.loc["ig", "localisation_margin"] == pytest.approx(0.5)
    assert rows.loc["ig", "localisation_margin_null"] == NULL
    assert math.isnan(rows.loc[NULL, "causal_margin"]) and rows.loc[NULL, "causal_margin_null"] == ""
    assert rows.loc[ORACLE, "causal_verdict"] == PASS and rows.loc[ORACLE, "verdict"] == PASS
    low, high = rows.loc["ig", ["localisation_margin_ci_low", "localisation_margin_ci_high"]]
    assert low < 0.5 < high


def test_a_row_not_scored_on_a_criterion_is_ranked_on_the_others():
    frames = {
        s: f[~((f["criterion"] == "localisation") & f["method"].isin([ORACLE, NULL]))]
        for s, f in per_seed().items()
    }
    rows = build_board(MODEL, "cnn", "steering", frames, CRITERIA, ROLES, N, 0).rows.set_index("method")
    # localisation among the methods: ig 1, gradcam and saliency 2.5; scores: oracle 1 (causal alone), ig 1.75,
    # gradcam 2.5, saliency 3.75, null 4 (causal alone)
    assert rows["rank"].to_dict() == {ORACLE: 1, "ig": 2, "gradcam": 3, "saliency": 4, NULL: 5}
    assert rows.loc[ORACLE, "localisation_verdict"] == NOT_RUN
    assert (
        math.isnan(rows.loc[ORACLE, "localisation_rank"]) and rows.loc["gradcam", "localisation_rank"] == 2.5
    )
    assert rows.loc[ORACLE, "verdict"] == PASS


def test_kendalls_w_of_the_checks_and_of_the_seeds_by_hand():
    result = board()
    # checks over (gradcam, ig, saliency): causal 1.5 1.5 3, localisation 2.5 1 2.5; rank sums 4, 2.5, 5.5
    # S = 4.5, ties 6 + 6, W = 12 · 4.5 / (4 · 24 − 2 · 12) = 0.75
    assert result.kendall_w_checks == pytest.approx(0.75)
    # seed 0 scores: gradcam 2.5, ig 2.5, saliency 4.25 → 1.5 1.5 3; seed 2: gradcam 3.5, ig 2, saliency 4
    # → 2 1 3; rank sums 3.5 2.5 6, S = 6.5, ties 6, W = 78 / 84
    assert result.kendall_w_seeds == pytest.approx(78 / 84)
    assert result.agreement.startswith(
        "The checks agree on the methods' order (Kendall's W 0.75 over 2 checks)"
    )
    assert result.seeds == SEEDS and result.criteria == ("causal", "localisation")


def test_one_seed_has_no_agreement_over_seeds():
    result = build_board(MODEL, "cnn", "steering", {0: per_seed()[0]}, CRITERIA, ROLES, N, 0)
    assert math.isnan(result.kendall_w_seeds) and result.seeds == (0,)
    assert result.agreement.endswith(
        "; Kendall's W over the training seeds is undefined (it needs two or more training seeds and two or more methods)."
    )


def test_disagreeing_checks_are_named_not_averaged():
    figures = {
        **FIGURES,
        "localisation": {**FIGURES["localisation"], "saliency": (0.85, 0.85), "ig": (0.5, 0.5)},
    }
    result = board(figures)
    # causal ranks gradcam and ig first (0.75 each); localisation ranks saliency (0.85) first
    assert result.kendall_w_checks < 0.5
    assert "causal ranks gradcam and ig first, localisation ranks saliency first" in result.agreement


def test_headline_says_the_expected_order_or_names_the_rows_that_break_it():
    assert board().headline == EXPECTED_ORDER
    assert KNOWN_ANSWERS[0] == ORACLE
    figures = {
        "causal": {**FIGURES["causal"], NULL: (0.9, 0.9)},
        "localisation": {**FIGURES["localisation"], ORACLE: (0.1, 0.1)},
    }
    headline = board(figures).headline
    # causal: oracle 1, null 2, gradcam and ig 3.5, saliency 5; localisation: ig 1, gradcam and saliency
    # 2.5, null 4, oracle 5. Scores: ig 2.25; oracle, null and gradcam 3; saliency 3.75 → ranks 1, 3, 3, 3, 5
    assert headline == (
        "not the expected order: control:oracle (rank 3) does not rank above ig (rank 1); "
        "null:random (rank 3) does not rank below saliency (rank 5)"
    )


def test_rank_interval_and_kept_share_by_hand():
    # the fixture's order in dyadic figures (exact in floating point), the same on every image: a resample's
    # ranks are then seed 0's (seed counts (2, 0)), seed 2's ((0, 2)) or the pooled ones ((1, 1))
    figures = {
        "causal": {
            ORACLE: (1, 1),
            "gradcam": (0.75, 0.625),
            "ig": (0.625, 0.75),
            "saliency": (0.5, 0.375),
            NULL: (0.5, 0.5),
        },
        "localisation": {
            ORACLE: (0.875, 0.875),
            "gradcam": (0.5, 0.375),
            "ig": (0.75, 0.625),
            "saliency": (0.375, 0.5),
            NULL: (0.125, 0.25),
        },
    }
    frames = per_seed(figures, spread=(0.0, 0.0, 0.0))
    rows = build_board(MODEL, "cnn", "steering", frames, CRITERIA, ROLES, N, 0).rows.set_index("method")
    counts = draw(MODEL, {s: IMAGES for s in SEEDS}, {s: f"{MODEL}_s{s}" for s in SEEDS}, N, 0).seed_counts
    first_only = float(np.mean(counts[:, 0] == 2))
    assert 0.025 < first_only < 0.975
    # pooled ranks: oracle 1, ig 2, gradcam 3, saliency 4, null 5; seed 2's the same; seed 0's scores: oracle 1,
    # gradcam 2.5, ig 2.5, saliency 4.25, null 4.75, so gradcam and ig both rank 2.5 there
    assert rows["rank"].to_dict() == {ORACLE: 1, "ig": 2, "gradcam": 3, "saliency": 4, NULL: 5}
    assert rows["rank_kept"].to_dict() == pytest.approx(
        {ORACLE: 1, "ig": 1 - first_only, "gradcam": 1 - first_only, "saliency": 1, NULL: 1}
    )
    assert rows.loc["ig", ["rank_low", "rank_high"]].tolist() == [2.0, 2.5]
    assert rows.loc["gradcam", ["rank_low", "rank_high"]].tolist() == [2.5, 3.0]
    assert rows.loc[NULL, ["rank_low", "rank_high"]].tolist() == [5.0, 5.0]


def test_one_seed_decides_as_that_folders_trust_table():
    frame = per_seed()[0]
    results = {}
    for criterion in CRITERIA:
        rows = frame[frame["criterion"] == criterion.key]
        table = rows[["model", "method", "image"]].assign(**{criterion.column: rows["value"].to_numpy()})
        if criterion.denominator:
            table[criterion.denominator] = rows["denominator"].to_numpy()
        results[criterion.key] = CheckResult({}, pd.DataFrame(), [criterion], table.reset_index(drop=True))
    trust = criterion_table(results, ROLES, N, 5).set_index("method")
    # the board reads the long table the results folder stores, built from the same check results
    long = criteria_per_image(results, ROLES)
    rows = build_board(MODEL, "cnn", "steering", {0: long}, CRITERIA, ROLES, N, 5).rows.set_index("method")
    for key, field in itertools.product(
        ("causal", "localisation"), ("verdict", "margin", "margin_ci_low", "margin_ci_high", "margin_null")
    ):
        column = f"{key}_{field}"
        pd.testing.assert_series_equal(
            rows[column], trust.loc[rows.index, column], check_names=False, check_dtype=False
        )


def test_same_seed_same_board_other_seed_other_draws():
    pd.testing.assert_frame_equal(board(seed=1).rows, board(seed=1).rows)
    frames = of("causal", per_seed())
    a, b = (pooled_figures(CAUSAL, frames, MODEL, N, seed)["gradcam"].draws for seed in (1, 2))
    assert not np.array_equal(a, b)


def test_rank_rows_ties_average_and_undefined_last():
    np.testing.assert_array_equal(rank_rows(np.array([0.2, np.nan, 0.9, 0.2])), [2.5, 4, 1, 2.5])
    np.testing.assert_array_equal(rank_rows(np.array([0.2, np.nan, 0.9]), higher_is_better=False), [1, 3, 2])


def test_kendalls_w_by_hand_and_against_friedman():
    # three raters, perfect agreement → 1; two raters reversing each other over three items → 0
    assert kendalls_w(np.array([[1, 2, 3]] * 3)) == pytest.approx(1.0)
    assert kendalls_w(np.array([[1, 2, 3], [3, 2, 1]])) == pytest.approx(0.0)
    # [[1, 2, 3], [1, 3, 2]]: rank sums 2, 5, 5, S = 6, W = 12 · 6 / (4 · 24) = 0.75
    assert kendalls_w(np.array([[1, 2, 3], [1, 3, 2]])) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.integers(0, 3, size=(4, 5)).astype(float)  # ties on purpose
        ranks = np.stack([rank_rows(row, higher_is_better=False) for row in scores])
        w = kendalls_w(ranks)
        chi2 = friedmanchisquare(*scores.T).statistic
        assert chi2 == pytest.approx(4 * (5 - 1) * w)
    assert math.isnan(kendalls_w(np.array([[1.0, 2.0]])))
    with pytest.raises(ValueError, match="not a ranking"):
        kendalls_w(np.array([[1, 1, 1], [1, 2, 3]]))


def test_bad_input_is_named():
    with pytest.raises(ResultsError, match="per_seed"):
        build_board(MODEL, "cnn", "steering", {}, CRITERIA, ROLES, N, 0)
    frames = {0: per_seed()[0].drop(columns="value")}
    with pytest.raises(ResultsError, match=r"per_seed\[0\]: missing column\(s\) \['value'\]"):
        build_board(MODEL, "cnn", "steering", frames, CRITERIA, ROLES, N, 0)
    with pytest.raises(ResultsError, match="no rows of any criterion"):
        build_board(MODEL, "cnn", "steering", per_seed(), [Criterion("sanity", "sanity")], ROLES, N, 0)
    with pytest.raises(ValueError, match="n_resamples"):
        build_board(MODEL, "cnn", "steering", per_seed(), CRITERIA, ROLES, 0, 0)
