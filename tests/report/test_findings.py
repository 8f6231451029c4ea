"""Findings: questions from the tables, answers quoting comparisons.csv, the recommended method per model."""

from __future__ import annotations

from html import escape
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import Models, add_trust_tables, comparisons_table, trust_tables, write_results

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


def _results(trust: pd.DataFrame | None, recommended: pd.DataFrame | None = None) -> Results:
    """Profiles of every method of the trust fixture (its control and nulls too), and its trust table."""
    methods = {
        "pilotnet": ("gradcam", "gradrollout", "saliency", "oracle", "null:class_area"),
        "vit": ("gradcam", "gradrollout", "oracle", "null:class_area", "null:random"),
        "untested": ("saliency", "gradcam"),
    }
    profiles = pd.DataFrame(
        [(m, k, "road", 7, 0.5, 0.4, 0.6) for m, ks in methods.items() for k in ks],
        columns=["model", "method", "class", "class_id", "score_mean", "score_ci_low", "score_ci_high"],
    )
    return Results(
        path=Path("."),
        manifest={},
        per_image=pd.DataFrame(),
        profiles=profiles,
        trust=trust,
        recommendations=recommended,
    )


def test_best_method_is_the_recommended_one_else_the_best_margins_never_a_control_or_null() -> None:
    trust, recommended = trust_tables()
    # pilotnet: gradcam is recommended. vit: none is; by the summed margin lower bounds the oracle (+0.25)
    # and the class-area prior (+0.20) lead gradrollout (+0.15), but neither may stand for the model.
    # untested: no trust rows, so GradCAM.
    best = best_methods(_results(trust, recommended))
    assert best == {"pilotnet": "gradcam", "vit": "gradrollout", "untested": "gradcam"}
    assert best_methods(_results(None)) == {"pilotnet": "gradcam", "vit": "gradcam", "untested": "gradcam"}
    headline = headline_profiles(_results(trust, recommended), ["pilotnet", "vit"])
    assert list(headline[SERIES]) == ["pilotnet · gradcam", "vit · gradrollout", "vit · gradcam"]


def test_best_method_follows_recommendations_csv_but_not_to_a_control() -> None:
    trust, recommended = trust_tables()
    edited = recommended.assign(method=["saliency", "oracle"])
    # saliency is no stronger than gradcam on the margins: the file, not the ranking, chose it; the oracle
    # is a control, so vit falls back to the best margins among the methods under test
    assert best_methods(_results(trust, edited)) == {
        "pilotnet": "saliency",
        "vit": "gradrollout",
        "untested": "gradcam",
    }


def test_findings_state_each_models_recommendation(tmp_path: Path) -> None:
    trust, recommended = trust_tables()
    models: Models = {
        "pilotnet": ("pilotnet", ("gradcam", "gradrollout")),
        "vit": ("vit", ("gradcam", "gradrollout")),
    }
    results = load_results(
        add_trust_tables(write_results(tmp_path / "run", models=models), trust, recommended)
    )
    section = findings_section(results)
    for sentence in recommended["sentence"]:
        assert f'<p class="recommendation">{escape(sentence)}</p>' in section
    assert "pilotnet: gradcam; vit: gradrollout" in section
    assert 'pilotnet · gradcam: <span class="pass">pass</span>' in section
