"""The gate suite: which tables it times, and the quick suite's JSON through `gradsum bench`.

Timings are only checked to be positive and finite, never against a clock.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gate_results import write_results
from gradsum.bench.suites import gate as gate_suite
from gradsum.cli import main
from gradsum.gate import gate, policy_from_dict


def test_the_quick_suite_times_the_folder_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_results(tmp_path / "base")
    monkeypatch.setenv(gate_suite.RESULTS_ENV, str(folder))
    out = tmp_path / "bench.json"
    assert main(["bench", "--suite", "gate", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())["suites"]["gate"]
    assert figures["baseline"] == f"results folder {folder} ({gate_suite.RESULTS_ENV})"
    assert (figures["images"], figures["classes"], figures["pairs"], figures["rows"]) == (40, 5, 2, 380)
    assert figures["resamples"] == 1000
    assert figures["checks"] == ["class_shift", "class_shift", "spearman", "top_k", "verdict", "task_metric"]
    # class_shift twice, spearman and top_k per method (2); verdict on the recommended method; task_metric
    assert figures["outcomes"] == 2 * 2 + 2 + 2 + 1 + 1
    for key in ("gate_seconds", "read_seconds"):
        assert math.isfinite(figures[key]) and figures[key] > 0
    assert figures["meets_target"] == (figures["gate_seconds"] < figures["target_seconds"] == 1.0)


def test_without_a_run_the_tables_are_synthesised_at_the_default_runs_shape(tmp_path: Path) -> None:
    inputs, source = gate_suite.baseline_inputs(None, tmp_path / "results" / "default", quick=True)
    assert source == (
        "synthesised: 200 images × 19 classes × 10 model/method pairs, seed 0; "
        f"no run at {tmp_path / 'results' / 'default'}"
    )
    per_image = inputs.per_image
    assert (per_image["image"].nunique(), per_image["class_id"].nunique()) == (200, 19)
    assert per_image.groupby(["model", "method"]).ngroups == 10
    report = gate(inputs, gate_suite.noisy(inputs), policy_from_dict(gate_suite.POLICY, "suite"))
    # per pair: two class shifts, spearman and top_k; per model: the verdict (method0) and the task metric
    assert len(report.outcomes) == 10 * 4 + 5 + 5
    assert {o.verdict for o in report.outcomes if o.check in ("verdict", "task_metric")} == {"pass"}


def test_the_default_runs_folder_is_where_the_default_config_writes() -> None:
    assert gate_suite.default_results() == Path("results") / "default"
