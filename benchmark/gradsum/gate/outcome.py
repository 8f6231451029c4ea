"""A gate's outcomes and the four ways it is shown: JUnit XML for CI systems, a JSON summary, Markdown for a
pull-request comment and a text table for the terminal.

Each policy check yields one outcome per model × method it covers (one per model for a check of the
model itself, the task metric), and each outcome is one JUnit test case, so a CI system lists them
natively. An inconclusive outcome counts as the policy says (`inconclusive: pass | fail`); it is always
reported as inconclusive.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradsum.evaluation.verdicts import FAIL, INCONCLUSIVE, PASS
from gradsum.fileio import atomic_write_bytes, atomic_write_text
from gradsum.names import pair_label

#: The files a gate writes into its output folder.
GATE_JUNIT = "gate.xml"
GATE_SUMMARY = "gate.json"
GATE_MARKDOWN = "gate.md"
#: A gate's verdicts, worst first.
VERDICTS = (FAIL, INCONCLUSIVE, PASS)
#: What an inconclusive outcome counts as for the exit code (the policy's `inconclusive`).
COUNTS_AS = (PASS, FAIL)


@dataclass(frozen=True)
class CheckOutcome:
    """One policy check on one model × method (`method` is empty for a check of the model, such as its
    task metric): the verdict, one sentence with the deciding figures, the figures by name and one row of
    figures per class (or per item) the check judged."""

    name: str
    check: str
    model: str
    method: str
    verdict: str
    message: str
    figures: dict[str, Any] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def subject(self) -> str:
        """What was checked: `model/method`, or the model alone."""
        return pair_label(self.model, self.method) if self.method else self.model

    def line(self) -> str:
        """The outcome in one line: verdict, check name, subject and message."""
        return f"{self.verdict.upper()} {self.name} [{self.subject}]: {self.message}"


@dataclass(frozen=True)
class GateReport:
    """Every outcome of a gate, with what was compared and how an inconclusive outcome counts."""

    baseline: str
    candidate: str
    policy: str
    outcomes: list[CheckOutcome]
    inconclusive: str = PASS

    @property
    def violations(self) -> list[CheckOutcome]:
        """The outcomes that make the gate fail: every fail, and every inconclusive one where the policy
        counts it as a fail."""
        failing = {FAIL, INCONCLUSIVE} if self.inconclusive == FAIL else {FAIL}
        return [o for o in self.outcomes if o.verdict in failing]

    @property
    def passed(self) -> bool:
        """True when no outcome violates the policy."""
        return not self.violations

    def counts(self) -> dict[str, int]:
        """How many outcomes got each verdict."""
        return {verdict: sum(o.verdict == verdict for o in self.outcomes) for verdict in VERDICTS}

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "policy": self.policy,
            "inconclusive_counts_as": self.inconclusive,
            "passed": self.passed,
            "counts": self.counts(),
            "violations": len(self.violations),
            "outcomes": [asdict(o) for o in self.outcomes],
        }


def write_summary(report: GateReport, path: str | os.PathLike[str]) -> Path:
    """Write the report as JSON (`GateReport.to_dict`); an undefined figure (NaN) is null, as strict JSON
    readers in CI need."""
    text = json.dumps(_strict(report.to_dict()), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _strict(value: Any) -> Any:
    """`value` with numpy scalars as plain numbers and non-finite floats as None, at any depth."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_junit(report: GateReport, path: str | os.PathLike[str]) -> Path:
    """Write the report as JUnit XML: one test case per outcome, a `<failure>` for each violation."""
    violations = {id(o) for o in report.violations}
    suite = ET.Element(
        "testsuite",
        name="gradsum gate",
        tests=str(len(report.outcomes)),
        failures=str(len(violations)),
        errors="0",
        skipped="0",
    )
    properties = ET.SubElement(suite, "properties")
    for name in ("baseline", "candidate", "policy"):
        ET.SubElement(properties, "property", name=name, value=getattr(report, name))
    for outcome in report.outcomes:
        case = ET.SubElement(
            suite, "testcase", classname=f"gradsum.gate.{outcome.name}", name=outcome.subject
        )
        if id(outcome) in violations:
            failure = ET.SubElement(case, "failure", message=outcome.message, type=outcome.verdict)
            failure.text = _details_text(outcome)
        ET.SubElement(case, "system-out").text = f"{outcome.verdict}: {outcome.message}"
    root = ET.Element("testsuites", tests=suite.get("tests", "0"), failures=suite.get("failures", "0"))
    root.append(suite)
    ET.indent(root)
    return atomic_write_bytes(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _details_text(outcome: CheckOutcome) -> str:
    lines = [outcome.message]
    lines += [", ".join(f"{k}={_short(v)}" for k, v in row.items()) for row in outcome.details]
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def text_table(report: GateReport) -> str:
    """The outcomes as a plain-text table with a closing line saying whether the gate passed."""
    rows = [(o.verdict.upper(), o.name, o.subject, o.message) for o in report.outcomes]
    header = ("VERDICT", "CHECK", "SUBJECT", "MESSAGE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)), row[3]])
        for row in [header, *rows]
    ]
    return "\n".join([*lines, _closing(report)])


def _closing(report: GateReport) -> str:
    counts = report.counts()
    tally = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    if report.passed:
        return f"gate passed ({tally}; inconclusive counts as {report.inconclusive})"
    return f"gate FAILED: {len(report.violations)} violation(s) ({tally}; inconclusive counts as {report.inconclusive})"


def write_markdown(report: GateReport, path: str | os.PathLike[str]) -> Path:
    """Write the outcomes as a Markdown table for a pull-request comment, violations first."""
    order = {verdict: rank for rank, verdict in enumerate(VERDICTS)}
    rows = sorted(report.outcomes, key=lambda o: order.get(o.verdict, len(order)))
    lines = [
        f"### GradSUM gate: {'passed' if report.passed else 'failed'}",
        "",
        f"Baseline `{report.baseline}`, candidate `{report.candidate}`, policy `{report.policy}`.",
        "",
        "| verdict | check | subject | message |",
        "|---|---|---|---|",
        *(f"| {o.verdict} | {o.name} | {o.subject} | {_cell(o.message)} |" for o in rows),
        "",
        _closing(report),
    ]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _cell(text: str) -> str:
    # a bar inside a cell would end it
    return text.replace("|", "\\|")
