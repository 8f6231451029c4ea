"""Each gate check on results folders with known figures: verdicts, messages and figures against hand
computations, and the refusals of folders that cannot be gated against each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gate_results import CARD, IMAGES, TRUTHSET, per_image, shifted, write_results
from gradsum.errors import ResultsError
from gradsum.gate import GateInputError, GateReport, gate, policy_from_dict
from gradsum.gate.checks import Placement

CLASS_SHIFT = {"check": "class_shift", "statistic": "mass_share", "tolerance": 0.05}
TOP_K = {"check": "top_k", "k": 3, "keep_in": ["road"], "keep_out": ["sky"], "statistic": "mass_share"}
EVERY_CHECK = [
    CLASS_SHIFT,
    {"check": "spearman", "floor": 0.8, "statistic": "mass_share"},
    TOP_K,
    {"check": "verdict"},
    {"check": "task_metric", "tolerance": 0.02},
]


def _gate(base: Path, cand: Path, *checks: dict[str, Any], **top: Any) -> GateReport:
    return gate(base, cand, policy_from_dict({"checks": list(checks), "resamples": 400, **top}, "p.yaml"))


def _only(report: GateReport, name: str, method: str = "gradcam") -> Any:
    (outcome,) = [o for o in report.outcomes if o.name == name and o.method in (method, "")]
    return outcome


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("gate") / "base")


@pytest.fixture(scope="module")
def sky_raised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sky's mass share raised by 0.2 on every image: 0.28, between road's 0.40 and car's 0.25."""
    return write_results(
        tmp_path_factory.mktemp("gate") / "sky", shifted(per_image(), "sky", "mass_share", 0.2)
    )


def test_an_identical_candidate_passes_every_check(base: Path, tmp_path: Path) -> None:
    report = _gate(base, write_results(tmp_path / "same"), *EVERY_CHECK)
    # class_shift, spearman and top_k per method, verdict on the recommended method, task_metric per model
    assert [(o.name, o.method) for o in report.outcomes] == [
        ("class_shift", "gradcam"),
        ("class_shift", "gradrollout"),
        ("spearman", "gradcam"),
        ("spearman", "gradrollout"),
        ("top_k", "gradcam"),
        ("top_k", "gradrollout"),
        ("verdict", "gradcam"),
        ("task_metric", ""),
    ]
    assert report.passed and all(o.verdict == "pass" for o in report.outcomes)
    assert _only(report, "spearman").message == (
        "Spearman rho 1.000 [1.000, 1.000] of the mass_share profiles, above the floor 0.8"
    )
    assert _only(report, "top_k").message == (
        "road stays in the top 3 (rank 1 of 5; baseline rank 1; in the top 3 in 100% of resamples); "
        "sky stays out of the top 3 (rank 5 of 5; baseline rank 5; in the top 3 in 0% of resamples)"
    )


def test_a_raised_sky_fails_class_shift_and_enters_the_top_3(base: Path, sky_raised: Path) -> None:
    report = _gate(base, sky_raised, *EVERY_CHECK)
    shift = _only(report, "class_shift")
    assert shift.verdict == "fail"
    assert shift.message == "sky mass_share moved +0.200 [+0.200, +0.200], beyond ±0.05"
    assert (shift.figures["class"], shift.figures["shift"]) == ("sky", pytest.approx(0.2))
    rows = {row["class"]: row for row in shift.details}
    assert set(rows) == {"road", "car", "building", "vegetation", "sky"}
    assert rows["road"]["shift"] == 0.0 and rows["road"]["verdict"] == "pass" and rows["car"]["images"] == 30
    top = _only(report, "top_k")
    assert top.verdict == "fail"
    assert (
        top.message
        == "sky entered the top 3 (rank 2 of 5; baseline rank 5; in the top 3 in 100% of resamples)"
    )
    # mass-share ranks road, car, building, vegetation, sky → road, sky, car, building, vegetation:
    # rank differences 0, 1, 1, 1, -3, so rho = 1 - 6 * 12 / (5 * 24) = 0.4 on every resample
    rho = _only(report, "spearman")
    assert rho.verdict == "fail" and rho.figures["rho"] == pytest.approx(0.4)
    assert rho.message == "Spearman rho 0.400 [0.400, 0.400] of the mass_share profiles, below the floor 0.8"
    assert not report.passed
    assert [o.name for o in report.violations] == [
        "class_shift",
        "class_shift",
        "spearman",
        "spearman",
        "top_k",
        "top_k",
    ]


def test_a_shift_whose_interval_straddles_the_tolerance_is_inconclusive(base: Path, tmp_path: Path) -> None:
    # sky moves by 0.05 on average, 0 or 0.1 on alternate images: the interval holds the tolerance
    moves = np.resize([0.0, 0.1], len(IMAGES) * 2)
    cand = write_results(tmp_path / "half", shifted(per_image(), "sky", "mass_share", moves))
    outcome = _only(_gate(base, cand, CLASS_SHIFT), "class_shift")
    assert outcome.verdict == "inconclusive"
    assert outcome.figures["shift"] == pytest.approx(0.05)
    assert outcome.figures["low"] < 0.05 < outcome.figures["high"]
    assert outcome.message.startswith("sky mass_share moved +0.050 [")
    assert outcome.message.endswith("], not shown within ±0.05")
    assert _gate(base, cand, CLASS_SHIFT).passed
    assert not _gate(base, cand, CLASS_SHIFT, inconclusive="fail").passed


def test_class_shift_judges_only_the_classes_it_names(base: Path, sky_raised: Path) -> None:
    outcome = _only(_gate(base, sky_raised, {**CLASS_SHIFT, "classes": ["road", "car"]}), "class_shift")
    assert outcome.verdict == "pass" and [r["class"] for r in outcome.details] == ["road", "car"]


def test_top_k_says_road_left_and_what_stayed_as_in_the_baseline(base: Path, tmp_path: Path) -> None:
    cand = write_results(tmp_path / "road", shifted(per_image(), "road", "mass_share", -0.35))
    report = _gate(
        base,
        cand,
        TOP_K,
        {"check": "top_k", "k": 3, "keep_in": ["sky"], "keep_out": ["car"], "statistic": "mass_share"},
    )
    assert _only(report, "top_k").message == (
        "road left the top 3 (rank 5 of 5; baseline rank 1; in the top 3 in 0% of resamples)"
    )
    # road falls to 0.05, last: car, building, vegetation rise to ranks 1, 2, 3 and sky (0.08) to 4
    assert _only(report, "top_k_2").message == (
        "sky is not in the top 3, as in the baseline (rank 4 of 5; baseline rank 5; in the top 3 in 0% of resamples); "
        "car is in the top 3, as in the baseline (rank 1 of 5; baseline rank 2; in the top 3 in 100% of resamples)"
    )


def test_a_top_k_share_between_the_bounds_is_inconclusive_and_matches_a_loop(
    base: Path, tmp_path: Path
) -> None:
    # sky at building's level (0.15) give or take per-image noise: in the top 3 in some resamples only
    noise = np.random.default_rng(0).normal(0.0, 0.05, len(IMAGES) * 2)
    cand = write_results(tmp_path / "tie", shifted(per_image(), "sky", "mass_share", 0.07 + noise))
    outcome = _only(_gate(base, cand, TOP_K), "top_k")
    (row,) = [r for r in outcome.details if r["class"] == "sky"]
    wide = shifted(per_image(), "sky", "mass_share", 0.07 + noise)
    wide = wide[wide["method"] == "gradcam"].pivot(index="image", columns="class", values="mass_share")
    draws = np.random.default_rng(0).integers(0, len(IMAGES), (400, len(IMAGES)))
    inside = [(wide.iloc[d].mean() > wide.iloc[d].mean()["sky"]).sum() < 3 for d in draws]
    assert row["share_in_top"] == pytest.approx(np.mean(inside))
    assert 0.025 < row["share_in_top"] < 0.975 and outcome.verdict == "inconclusive"
    assert f"in the top 3 in {np.mean(inside):.0%} of resamples" in outcome.message


def test_verdict_guards_the_recommended_method(base: Path, tmp_path: Path) -> None:
    worse = write_results(tmp_path / "worse", verdicts={"gradcam": "inconclusive", "gradrollout": "fail"})
    report = _gate(base, worse, {"check": "verdict"})
    (outcome,) = report.outcomes
    assert (outcome.method, outcome.verdict) == ("gradcam", "fail")
    assert outcome.message == "trust verdict pass → inconclusive (worse)"
    assert outcome.figures == {"baseline": "pass", "candidate": "inconclusive"}
    named = _gate(base, worse, {"check": "verdict", "methods": ["gradrollout"]})
    assert [(o.method, o.message) for o in named.outcomes] == [
        ("gradrollout", "trust verdict pass → fail (worse)")
    ]
    better = _gate(worse, base, {"check": "verdict", "methods": ["gradcam"]})
    assert better.outcomes[0].message == "trust verdict inconclusive → pass (better)" and better.passed


def test_verdict_without_a_recommended_method_says_so(tmp_path: Path) -> None:
    base = write_results(tmp_path / "base", recommended="")
    (outcome,) = _gate(base, base, {"check": "verdict"}).outcomes
    assert outcome.verdict == "inconclusive" and outcome.method == ""
    assert f"({base / 'recommendations.csv'}) recommends no method for vit" in outcome.message


def test_verdict_without_a_trust_table_names_the_missing_file(base: Path, tmp_path: Path) -> None:
    cand = write_results(tmp_path / "cand")
    (cand / "trust.csv").unlink()
    with pytest.raises(GateInputError, match=f"{cand / 'trust.csv'}: missing; the verdict check reads"):
        _gate(base, cand, {"check": "verdict"})


@pytest.mark.parametrize(
    ("metric", "candidate", "drop", "verdict", "message"),
    [
        ("r2", 0.92, 0.03, "fail", "r2 0.95 → 0.92 (drop +0.03), beyond the tolerance 0.02"),
        ("r2", 0.94, 0.01, "pass", "r2 0.95 → 0.94 (drop +0.01), within the tolerance 0.02"),
        # lower is better: the drop is candidate − baseline
        ("mae", 0.07, 0.03, "fail", "mae 0.04 → 0.07 (drop +0.03), beyond the tolerance 0.02"),
        ("mae", 0.01, -0.03, "pass", "mae 0.04 → 0.01 (drop -0.03), within the tolerance 0.02"),
    ],
)
def test_task_metric_drop(
    base: Path, tmp_path: Path, metric: str, candidate: float, drop: float, verdict: str, message: str
) -> None:
    card = {**CARD, "metrics": {**CARD["metrics"], metric: candidate}}
    cand = write_results(tmp_path / "cand", cards={"vit": card})
    checks = {"check": "task_metric", "tolerance": 0.02} | ({} if metric == "r2" else {"metric": metric})
    (outcome,) = _gate(base, cand, checks).outcomes
    assert (outcome.verdict, outcome.message, outcome.method) == (verdict, message, "")
    assert outcome.figures["drop"] == pytest.approx(drop)


def test_a_metric_the_card_lacks_names_the_card_and_field(base: Path) -> None:
    with pytest.raises(
        GateInputError, match=r"cards/vit.json: field 'metrics.accuracy' is missing; valid: mae, r2, rmse"
    ):
        _gate(base, base, {"check": "task_metric", "tolerance": 0.1, "metric": "accuracy"})


def test_a_candidate_of_another_truth_set_is_refused_naming_its_manifest(base: Path, tmp_path: Path) -> None:
    other = write_results(
        tmp_path / "other", truthset={**TRUTHSET, "parameters": {**TRUTHSET["parameters"], "seed": 1}}
    )
    with pytest.raises(
        GateInputError, match=rf"{other / 'manifest.json'}: field 'truthset.parameters' is .*'seed': 1"
    ):
        _gate(base, other, {"check": "verdict"})
    split = write_results(tmp_path / "split", truthset={**TRUTHSET, "split": "val"})
    with pytest.raises(GateInputError, match=r"field 'truthset.split' is 'val'.*is 'test'"):
        _gate(base, split, {"check": "verdict"})
    fewer = write_results(tmp_path / "fewer", per_image(images=IMAGES[:30]))
    with pytest.raises(
        GateInputError,
        match=rf"{fewer / 'per_image.parquet'}: the candidate scored 30 images, the baseline 40, 10",
    ):
        _gate(base, fewer, {"check": "verdict"})


def test_a_manifest_without_a_truth_set_is_refused(base: Path, tmp_path: Path) -> None:
    cand = write_results(tmp_path / "cand")
    (cand / "manifest.json").write_text('{"files": {}}')
    with pytest.raises(GateInputError, match=rf"{cand / 'manifest.json'}: field 'truthset' is missing"):
        _gate(base, cand, {"check": "verdict"})


def test_a_candidate_of_another_task_is_refused_naming_its_card(base: Path, tmp_path: Path) -> None:
    cand = write_results(tmp_path / "cand", cards={"vit": {**CARD, "task": "obstacle"}})
    with pytest.raises(
        GateInputError,
        match=rf"{cand / 'cards' / 'vit.json'}: field 'task' is 'obstacle'; the baseline's 'vit'",
    ):
        _gate(base, cand, {"check": "verdict"})


def test_a_missing_folder_is_refused_naming_it(base: Path, tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=rf"{tmp_path / 'nowhere'}: no such results folder"):
        _gate(base, tmp_path / "nowhere", {"check": "verdict"})


def test_models_pair_by_name_by_mapping_or_one_each(base: Path, tmp_path: Path) -> None:
    renamed = write_results(
        tmp_path / "int8",
        shifted(per_image(model="vit_int8"), "sky", "mass_share", 0.2),
        cards={"vit_int8": CARD},
    )
    # one model on each side: they pair
    assert {o.model for o in _gate(base, renamed, CLASS_SHIFT).outcomes} == {"vit"}
    assert not _gate(base, renamed, CLASS_SHIFT).passed
    two = pd.concat([per_image(), per_image(model="pilotnet")], ignore_index=True)
    both = write_results(tmp_path / "two", two, cards={"vit": CARD, "pilotnet": CARD})
    with pytest.raises(
        GateInputError,
        match=r"no model shares a name with the baseline's \(pilotnet, vit\); pair them with --model",
    ):
        _gate(both, renamed, CLASS_SHIFT)
    policy = policy_from_dict({"checks": [CLASS_SHIFT], "resamples": 50}, "p.yaml")
    paired = gate(both, renamed, policy, models={"vit": "vit_int8"})
    assert {o.model for o in paired.outcomes} == {"vit"} and not paired.passed
    with pytest.raises(
        GateInputError, match=r"--model: the candidate holds no model 'vit_fp16'; valid: vit_int8"
    ):
        gate(both, renamed, policy, models={"vit": "vit_fp16"})


def test_a_check_limited_to_models_and_methods_covers_only_those(base: Path, sky_raised: Path) -> None:
    report = _gate(base, sky_raised, {**CLASS_SHIFT, "models": ["vit"], "methods": ["gradrollout"]})
    assert [(o.model, o.method) for o in report.outcomes] == [("vit", "gradrollout")]


def test_the_same_policy_and_folders_give_the_same_figures(base: Path, tmp_path: Path) -> None:
    noise = np.random.default_rng(1).normal(0.0, 0.05, len(IMAGES) * 2)
    cand = write_results(tmp_path / "noisy", shifted(per_image(), "sky", "mass_share", noise))
    first, second = (_gate(base, cand, CLASS_SHIFT).to_dict() for _ in range(2))
    assert first == second
    reseeded = _gate(base, cand, CLASS_SHIFT, seed=1).outcomes[0].figures
    assert reseeded["low"] != first["outcomes"][0]["figures"]["low"]


def test_a_figure_on_its_bar_but_for_float_rounding_is_within_it(base: Path, tmp_path: Path) -> None:
    # 0.95 - 0.94 is 0.010000000000000009 in floats
    cand = write_results(
        tmp_path / "cand", cards={"vit": {**CARD, "metrics": {**CARD["metrics"], "r2": 0.94}}}
    )
    (outcome,) = _gate(base, cand, {"check": "task_metric", "tolerance": 0.01}).outcomes
    assert outcome.figures["drop"] > 0.01 and outcome.verdict == "pass"
    sky = write_results(tmp_path / "sky", shifted(per_image(), "sky", "mass_share", 0.05))
    assert _gate(base, sky, CLASS_SHIFT).outcomes[0].verdict == "pass"


@pytest.mark.parametrize(
    ("keep_in", "rank", "baseline_rank", "head", "verdict"),
    [
        (False, 2, 6, "sky entered the top 3", "fail"),
        (False, 2, 1, "sky is in the top 3, as in the baseline", "fail"),
        (False, 5, 1, "sky left the top 3", "pass"),
        (False, 5, 6, "sky stays out of the top 3", "pass"),
        (True, 2, 6, "sky entered the top 3", "pass"),
        (True, 2, 1, "sky stays in the top 3", "pass"),
        (True, 5, 1, "sky left the top 3", "fail"),
        (True, 5, 6, "sky is not in the top 3, as in the baseline", "fail"),
    ],
)
def test_every_top_k_sentence(keep_in: bool, rank: int, baseline_rank: int, head: str, verdict: str) -> None:
    share = 1.0 if rank <= 3 else 0.0
    placement = Placement("sky", keep_in, float(rank), 12, float(baseline_rank), share, 3)
    assert placement.sentence() == (
        f"{head} (rank {rank} of 12; baseline rank {baseline_rank}; in the top 3 in {share:.0%} of resamples)"
    )
    assert placement.verdict(0.05) == verdict
    # a share between alpha/2 and 1 - alpha/2 decides nothing
    assert (
        Placement("sky", keep_in, float(rank), 12, float(baseline_rank), 0.5, 3).verdict(0.05)
        == "inconclusive"
    )
