"""Findings: questions from the tables, answers quoting comparisons.csv, the best-verdict method per model."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import comparisons_table, write_results

from gradsum.report import load_results
from gradsum.report.findings import (
    SERIES,
    best_methods,
    findings,
    headline_profiles,
    meaningful_comparisons,
)
from gradsum.report.html import comparisons_section, findings_section
from gradsum.report.results import Results

TASKS = {"pilotnet": "steering", "vit": "steering", "hybrid": "obstacle"}


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """pilotnet and vit steer, hybrid detects obstacles; comparisons hold every kind of pair."""
    comparisons = pd.concat(
        [
            comparisons_table("pilotnet/gradcam", "vit/gradcam", (0.6, 0.1, 0.9)),  # same task, same method
            comparisons_table("vit/gradcam", "vit/gradrollout", (0.4, -0.2, 0.8)),  # same model
            comparisons_table("pilotnet/gradcam", "vit/gradrollout", (0.31, 0.01, 0.52)),  # both differ
            comparisons_table("hybrid/gradcam", "pilotnet/gradcam", (-0.77, -0.91, -0.43)),  # across tasks
        ]
    )
    folder = write_results(tmp_path_factory.mktemp("tasks") / "run", tasks=TASKS, comparisons=comparisons)
    return load_results(folder)


def test_finding_quotes_rho_ci_and_the_differing_class(two_tasks: Results) -> None:
    (finding,) = findings(two_tasks)
    assert (finding.task, finding.method, finding.model_a, finding.model_b) == (
        "steering",
        "gradcam",
        "pilotnet",
        "vit",
    )
    # comparisons_table: rho 0.6 [0.1, 0.9]; road differs with mean_a 0.6 > mean_b 0.3, six classes
    assert finding.answer == (
        "Profile Spearman ρ = 0.60 [0.10, 0.90]: they rank the classes alike. "
        "1 of 6 classes differ (paired test, Holm): road (pilotnet higher)."
    )
    section = findings_section(two_tasks)
    assert "Does vit look at the scene like pilotnet (gradcam, steering)?" in section
    assert "ρ = 0.60 [0.10, 0.90]" in section
    # no trust table: both sides say so beside the answer
    assert "pilotnet · gradcam: <span" in section and "not evaluated" in section


def test_only_meaningful_comparisons_reach_the_page(two_tasks: Results) -> None:
    kept = meaningful_comparisons(two_tasks)[["a", "b"]].drop_duplicates()
    assert list(kept.itertuples(index=False, name=None)) == [
        ("pilotnet/gradcam", "vit/gradcam"),
        ("vit/gradcam", "vit/gradrollout"),
    ]
    page = comparisons_section(two_tasks) + findings_section(two_tasks)
    assert "hybrid/gradcam" not in page and "−0.77" not in page and "-0.77" not in page
    assert "vit/gradrollout" in page and "0.31" not in page


def _trust(rows: list[tuple[str, str, bool, str, str, str, float]]) -> pd.DataFrame:
    columns = [
        "model",
        "method",
        "null",
        "causal_verdict",
        "sanity_verdict",
        "localisation_verdict",
        "agreement",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(verdict="fail", failed="", summary="")


def _results(trust: pd.DataFrame | None) -> Results:
    methods = {"m1": ("gradcam", "a", "b"), "m2": ("gradcam", "x"), "m3": ("saliency", "gradcam")}
    profiles = pd.DataFrame(
        [(m, k, "road", 7, 0.5, 0.4, 0.6) for m, ks in methods.items() for k in ks],
        columns=["model", "method", "class", "class_id", "score_mean", "score_ci_low", "score_ci_high"],
    )
    return Results(path=Path("."), manifest={}, per_image=pd.DataFrame(), profiles=profiles, trust=trust)


def test_best_method_passes_most_checks_then_agrees_most_with_the_causal_profile() -> None:
    nan = math.nan
    trust = _trust(
        [
            ("m1", "gradcam", False, "pass", "fail", "fail", 0.9),  # 1 pass
            ("m1", "a", False, "pass", "pass", "fail", 0.3),  # 2 passes
            ("m1", "b", False, "fail", "pass", "pass", 0.7),  # 2 passes, higher agreement: best
            ("m1", "null:class_area", True, "pass", "pass", "pass", 1.0),  # a null explainer never wins
            ("m2", "gradcam", False, "fail", "pass", "fail", 0.1),  # 1 pass, agreement 0.1: best
            ("m2", "x", False, "pass", "fail", "fail", nan),  # 1 pass, no agreement
        ]
    )
    assert best_methods(_results(trust)) == {"m1": "b", "m2": "gradcam", "m3": "gradcam"}
    assert best_methods(_results(None)) == {"m1": "gradcam", "m2": "gradcam", "m3": "gradcam"}
    headline = headline_profiles(_results(trust), ["m1", "m2"])
    assert list(headline[SERIES]) == ["m1 · b", "m1 · gradcam", "m2 · gradcam"]
