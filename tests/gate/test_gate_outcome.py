"""A gate report's four forms: JUnit XML (parsed back), JSON, Markdown and the terminal table."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from gradsum.gate import (
    GATE_JUNIT,
    GATE_MARKDOWN,
    GATE_SUMMARY,
    CheckOutcome,
    GateReport,
    text_table,
    write_junit,
    write_markdown,
    write_summary,
)

OUTCOMES = [
    CheckOutcome(
        "class_shift",
        "class_shift",
        "vit",
        "gradcam",
        "fail",
        "sky score moved +0.200 [+0.190, +0.210], beyond ±0.05",
        {"shift": 0.2},
        [{"class": "sky", "shift": 0.2}],
    ),
    CheckOutcome("top_k", "top_k", "vit", "gradcam", "inconclusive", "sky is | odd", {"k": 3}),
    CheckOutcome("spearman", "spearman", "vit", "gradrollout", "pass", "rho fine"),
    CheckOutcome("task_metric", "task_metric", "vit", "", "pass", "r2 fine"),
]


def _report(inconclusive: str = "pass") -> GateReport:
    return GateReport("results/base", "results/cand", "gate.yaml", OUTCOMES, inconclusive)


@pytest.mark.parametrize(("inconclusive", "failures"), [("pass", 1), ("fail", 2)])
def test_junit_has_one_case_per_outcome_and_a_failure_per_violation(
    tmp_path: Path, inconclusive: str, failures: int
) -> None:
    path = write_junit(_report(inconclusive), tmp_path / GATE_JUNIT)
    root = ET.parse(path).getroot()
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert (root.get("tests"), root.get("failures")) == ("4", str(failures))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", str(failures), "0")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("gradsum.gate.class_shift", "vit/gradcam"),
        ("gradsum.gate.top_k", "vit/gradcam"),
        ("gradsum.gate.spearman", "vit/gradrollout"),
        ("gradsum.gate.task_metric", "vit"),
    ]
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == failures
    failure = cases[0].find("failure")
    assert failure is not None and failure.get("type") == "fail"
    assert failure.get("message") == OUTCOMES[0].message
    assert "class=sky, shift=0.2" in (failure.text or "")
    assert cases[2].find("system-out").text == "pass: rho fine"  # type: ignore[union-attr]
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties == {"baseline": "results/base", "candidate": "results/cand", "policy": "gate.yaml"}


def test_the_summary_is_the_report_as_json(tmp_path: Path) -> None:
    data = json.loads(write_summary(_report(), tmp_path / GATE_SUMMARY).read_text())
    assert data["passed"] is False and data["violations"] == 1
    assert data["counts"] == {"fail": 1, "inconclusive": 1, "pass": 2}
    assert data["inconclusive_counts_as"] == "pass"
    assert data["outcomes"][0] == {
        "name": "class_shift",
        "check": "class_shift",
        "model": "vit",
        "method": "gradcam",
        "verdict": "fail",
        "message": OUTCOMES[0].message,
        "figures": {"shift": 0.2},
        "details": [{"class": "sky", "shift": 0.2}],
    }


def test_passed_honours_how_inconclusive_counts() -> None:
    passing = GateReport("a", "b", "p", OUTCOMES[1:], "pass")
    assert passing.passed and passing.violations == []
    strict = GateReport("a", "b", "p", OUTCOMES[1:], "fail")
    assert not strict.passed and strict.violations == [OUTCOMES[1]]


def test_markdown_lists_violations_first_and_escapes_bars(tmp_path: Path) -> None:
    text = write_markdown(_report(), tmp_path / GATE_MARKDOWN).read_text()
    lines = text.splitlines()
    assert lines[0] == "### GradSUM gate: failed"
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| verdict")]
    assert [r.split(" | ")[0] for r in rows] == ["| fail", "| inconclusive", "| pass", "| pass"]
    assert "sky is \\| odd" in text
    assert (
        lines[-1]
        == "gate FAILED: 1 violation(s) (1 fail, 1 inconclusive, 2 pass; inconclusive counts as pass)"
    )


def test_the_text_table_has_a_row_per_outcome_and_a_closing_line() -> None:
    lines = text_table(_report()).splitlines()
    assert lines[0].split() == ["VERDICT", "CHECK", "SUBJECT", "MESSAGE"]
    assert (
        lines[1].startswith("FAIL ") and "vit/gradcam" in lines[1] and lines[1].endswith(OUTCOMES[0].message)
    )
    assert lines[4].split()[:3] == ["PASS", "task_metric", "vit"]
    assert lines[-1].startswith("gate FAILED: 1 violation(s)")
    # the messages start in one column
    assert (
        len({line.index(word) for line, word in zip(lines[1:5], ["sky", "sky", "rho", "r2"], strict=True)})
        == 1
    )
    assert GateReport("a", "b", "p", OUTCOMES[2:]).passed
    assert text_table(GateReport("a", "b", "p", OUTCOMES[2:])).splitlines()[-1] == (
        "gate passed (0 fail, 0 inconclusive, 2 pass; inconclusive counts as pass)"
    )


def test_an_outcome_line_names_verdict_check_subject_and_figures() -> None:
    assert OUTCOMES[0].line() == (
        "FAIL class_shift [vit/gradcam]: sky score moved +0.200 [+0.190, +0.210], beyond ±0.05"
    )
    assert OUTCOMES[3].subject == "vit"


def test_an_undefined_figure_is_null_in_the_summary(tmp_path: Path) -> None:
    nan = CheckOutcome(
        "spearman",
        "spearman",
        "vit",
        "gradcam",
        "inconclusive",
        "cannot be ranked",
        {"rho": float("nan"), "n": np.int64(3)},
    )
    data = json.loads(write_summary(GateReport("a", "b", "p", [nan]), tmp_path / GATE_SUMMARY).read_text())
    assert data["outcomes"][0]["figures"] == {"rho": None, "n": 3}
