"""The Trust section: the rule, each outcome counted and explained, one recommendation per model, and the
table with every criterion's figure, margin and verdict; from a trust table the verdict code itself wrote."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import add_trust_tables, trust_tables, write_results

from gradsum.evaluation.verdicts import MEANINGS, NOT_RUN, OUTCOMES
from gradsum.report import load_results, write_report
from gradsum.report.findings import recommendations
from gradsum.report.html import trust_section, verdict_labels
from gradsum.report.results import Results

#: The profiled methods: the trust fixture's methods under test (its controls and nulls are not profiled).
MODELS = {
    "pilotnet": ("pilotnet", ("gradcam", "gradrollout", "saliency")),
    "vit": ("vit", ("gradcam", "gradrollout")),
}


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return trust_tables()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tables: tuple[pd.DataFrame, pd.DataFrame]) -> Path:
    return add_trust_tables(write_results(tmp_path_factory.mktemp("trust") / "run", models=MODELS), *tables)


@pytest.fixture(scope="module")
def results(folder: Path) -> Results:
    return load_results(folder)


def _rows(section: str) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """(model, method) → (the row's class attribute, its cells) of the trust table."""
    body = section[section.index("<tbody>") : section.index("</tbody>")]
    rows = {}
    for css, cells in re.findall(r"<tr( class=\w+)?>(.*?)</tr>", body):
        found = re.findall(r"<td>(.*?)</td>", cells)
        rows[(found[0], found[1])] = (css.strip(), found)
    return rows


def _span(outcome: str, title: str) -> str:
    css = "not-run" if outcome == NOT_RUN else outcome
    return f'<span class="{css}" title="{escape(title)}">{outcome}</span>'


def test_the_lead_states_the_rule_and_every_outcome(results: Results) -> None:
    section = trust_section(results)
    assert "one-sided at α = 0.05" in section and "paired" in section
    # the nulls by role, as this run's trust table names them
    assert "chance nulls (null:random, null:uniform) and the confounds (null:class_area) gate" in section
    assert "The edge heuristic (null:sobel) gates nothing" in section
    for outcome in OUTCOMES:
        assert f'<li><span class="{outcome}">{outcome}</span>: {escape(MEANINGS[outcome])}</li>' in section


def test_each_outcome_is_counted_and_uninformative_is_no_failure(results: Results) -> None:
    section = trust_section(results)
    assert (
        "Methods under test, 5 model × method rows: 1 pass, 1 fail, 1 inconclusive, 2 uninformative. "
        "Known-answer controls, 2 model × method rows: 1 pass, 0 fail, 0 inconclusive, 1 uninformative."
    ) in section
    assert "pass every trust check" not in section and "trusted" not in section


def test_one_recommendation_line_per_model(
    results: Results, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    section = trust_section(results)
    lines = re.findall(r'<p class="recommendation">(.*?)</p>', section)
    assert lines == [escape(s) for s in tables[1]["sentence"]]
    assert lines[0].startswith("For pilotnet, use gradcam (passes causal, localisation; margins causal +0.30")
    assert lines[1].startswith(
        "For vit, no method is shown better than chance and the confounds here; closest: gradrollout"
    )


def test_each_criterion_shows_figure_margin_verdict_and_reason(
    results: Results, tables: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    trust = tables[0].set_index(["model", "method"])
    section = trust_section(results)
    heads = "<th>figure [95% CI]</th><th>margin over the best null [95% CI]</th><th>verdict</th><th>adds over edges</th>"
    assert '<th colspan="4">causal</th><th colspan="4">localisation</th>' in section
    assert f"<tr>{heads}{heads}</tr>" in section
    rows = _rows(section)
    css, cells = rows[("pilotnet", "gradrollout")]
    row = trust.loc[("pilotnet", "gradrollout")]
    assert css == "" and cells[2] == "method under test"
    assert cells[3] == _span("fail", row["summary"])
    # causal: figure [CI], margin [CI] over the best gating null, verdict with its reason, heuristic column
    assert cells[4] == f"{row['causal']:.2f} [{row['causal_ci_low']:.2f}, {row['causal_ci_high']:.2f}]"
    assert cells[5] == "-0.05 [-0.05, -0.05] over null:class_area"
    assert cells[6] == _span(
        "fail", "not better than chance: not better than the threshold 0.5 (upper bound -0.0375)"
    )
    assert cells[7] == '<span title="figure minus the edge detector&#x27;s: -0.15 [-0.15, -0.15]">no</span>'
    assert cells[10] == _span("pass", row["localisation_reason"])  # localisation passes, causal fails
    _, saliency = rows[("pilotnet", "saliency")]
    assert saliency[6] == _span("inconclusive", trust.loc[("pilotnet", "saliency"), "causal_reason"])
    assert "not shown better than null:class_area" in saliency[6]
    _, vit = rows[("vit", "gradcam")]
    assert vit[6] == _span("uninformative", trust.loc[("vit", "gradcam"), "causal_reason"])
    assert "null:class_area passes" in vit[6]
    # localisation did not run on vit
    assert vit[8:12] == ["—", "—", _span(NOT_RUN, MEANINGS[NOT_RUN]), "—"]


def test_controls_are_labelled_and_nulls_greyed_with_their_role(results: Results) -> None:
    rows = _rows(trust_section(results))
    assert rows[("pilotnet", "oracle")][0] == "class=control"
    assert rows[("pilotnet", "oracle")][1][2] == "known-answer control"
    roles = {method: (css, cells[2]) for (model, method), (css, cells) in rows.items() if model == "vit"}
    assert roles["null:random"] == ("class=null", "null: chance")
    assert roles["null:class_area"] == ("class=null", "null: confound")
    assert roles["null:sobel"] == ("class=null", "null: edge heuristic")
    # per model: methods, the control, then the nulls
    order = [method for model, method in rows if model == "pilotnet"]
    assert order == [
        "gradcam",
        "gradrollout",
        "saliency",
        "oracle",
        "null:random",
        "null:uniform",
        "null:class_area",
        "null:sobel",
    ]


def test_the_checks_own_figures_are_folded_below(results: Results) -> None:
    section = trust_section(results)
    folded = section[section.index("<details><summary>each check's own figures</summary>") :]
    assert "density_spearman" in folded and "mass_accuracy" in folded
    assert "<td>0.80 [0.70, 0.90]</td>" in folded  # pilotnet gradcam's density Spearman ± 0.1


def test_verdict_labels_word_each_outcome(results: Results) -> None:
    labels = verdict_labels(results)
    assert {run: labels[run] for run in ("pilotnet · gradcam", "pilotnet · gradrollout")} == {
        "pilotnet · gradcam": "pass",
        "pilotnet · gradrollout": "fail: causal",
    }
    assert labels["pilotnet · saliency"] == "inconclusive" and labels["vit · gradcam"] == "uninformative"
    plain = Results(**{**vars(results), "trust": None, "recommendations": None})
    assert set(verdict_labels(plain).values()) == {"not evaluated"}


def test_recommendations_are_read_from_their_table(results: Results) -> None:
    # the CSV round trip reads vit's "" (no method) as missing; the helper gives it back as ""
    assert recommendations(results)["method"].tolist() == ["gradcam", ""]
    assert "recommendations" not in results.checks and "trust" not in results.checks
    # a folder without recommendations.csv: recomputed from the trust table
    recomputed = recommendations(Results(**{**vars(results), "recommendations": None}))
    assert recomputed["sentence"].tolist() == recommendations(results)["sentence"].tolist()


def test_the_page_leads_with_the_recommendations_and_labels_the_profiles(folder: Path) -> None:
    page = write_report(folder).read_text()
    findings = page[page.index('<section id="findings">') : page.index('<section id="trust">')]
    assert '<p class="recommendation">For pilotnet, use gradcam' in findings
    assert (
        "each model from its recommended method, or the closest where none is recommended (pilotnet · gradcam, vit · gradrollout)"
        in findings
    )
    assert 'vit · gradcam: <span class="uninformative">uninformative</span>' in findings
    profiles = page[page.index('<section id="profiles">') : page.index('<section id="comparisons">')]
    assert (
        "pilotnet · gradrollout (fail: causal)" in profiles
        and "pilotnet · saliency (inconclusive)" in profiles
    )
