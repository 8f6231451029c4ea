"""`gradsum gate` on results folders: exit 0 on a pass, 1 on a violation, 2 with one line naming the file
or field on bad input; a model-folder candidate and --calibrate go through the pipeline's functions."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from gate_results import CARD, TRUTHSET, per_image, shifted, write_results
from gradsum.cli import main

POLICY = """\
# the road stays in view, sky stays out of it
resamples: 200
checks:
  - {check: class_shift, statistic: mass_share, tolerance: 0.05}
  - {check: top_k, k: 3, keep_in: [road], keep_out: [sky], statistic: mass_share}
  - {check: verdict}
"""


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    policy = tmp_path / "gate.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return {
        "policy": policy,
        "base": write_results(tmp_path / "base"),
        "same": write_results(tmp_path / "same"),
        "sky": write_results(tmp_path / "sky", shifted(per_image(), "sky", "mass_share", 0.2)),
        "out": tmp_path / "gate",
    }


def _gate(folders: dict[str, Path], candidate: str | Path, *extra: str) -> int:
    return main(
        [
            "gate",
            str(folders["base"]),
            str(candidate),
            "--policy",
            str(folders["policy"]),
            "--out",
            str(folders["out"]),
            *extra,
        ]
    )


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("gradsum gate: error: ")
    return lines[0]


def test_an_identical_candidate_passes_and_writes_the_reports(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    markdown = folders["out"].parent / "comment.md"
    assert _gate(folders, folders["same"], "--markdown", str(markdown)) == 0
    out = capsys.readouterr().out
    assert "gate passed (0 fail, 0 inconclusive, 5 pass; inconclusive counts as pass)" in out
    suite = ET.parse(folders["out"] / "gate.xml").getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("5", "0")
    summary = json.loads((folders["out"] / "gate.json").read_text())
    assert summary["passed"] is True and len(summary["outcomes"]) == 5
    assert markdown.read_text().startswith("### GradSUM gate: passed")
    for name in ("gate.xml", "gate.json"):
        assert f"wrote {folders['out'] / name}" in out


def test_a_raised_sky_exits_1_and_says_it_entered_the_top_3(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _gate(folders, folders["sky"]) == 1
    out = capsys.readouterr().out
    assert "sky entered the top 3 (rank 2 of 5; baseline rank 5; in the top 3 in 100% of resamples)" in out
    assert "gate FAILED: 4 violation(s)" in out
    cases = ET.parse(folders["out"] / "gate.xml").getroot().iter("testcase")
    assert sum(case.find("failure") is not None for case in cases) == 4


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        (
            "checks:\n  - {check: top_k, keep_out: [skye]}\n",
            "field 'checks[0].keep_out[0]': unknown class 'skye' (did you mean sky?)",
        ),
        (
            "checks:\n  - {check: top_k, keep_out: [train]}\n",
            "field 'checks[0].keep_out' names class 'train', which the baseline does not hold",
        ),
        (
            "checks:\n  - {check: spearmann, floor: 0.8}\n",
            "field 'checks[0].check': unknown gate check 'spearmann' (did you mean spearman?)",
        ),
        ("checks:\n  - {check: spearman, floor: 0.8, flor: 0.7}\n", "unknown field 'checks[0].flor'"),
    ],
)
def test_a_bad_policy_exits_2_naming_the_file_and_field(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str], policy: str, match: str
) -> None:
    folders["policy"].write_text(policy, encoding="utf-8")
    assert _gate(folders, folders["same"]) == 2
    line = _error(capsys)
    assert line.startswith(f"gradsum gate: error: {folders['policy']}: ")
    assert match in line


def test_bad_inputs_exit_2_with_one_line_naming_the_file(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert _gate(folders, tmp_path / "nowhere") == 2
    assert _error(capsys) == f"gradsum gate: error: {tmp_path / 'nowhere'}: no such results folder"
    other = write_results(tmp_path / "other", truthset={**TRUTHSET, "split": "val"})
    assert _gate(folders, other) == 2
    assert f"{other / 'manifest.json'}: field 'truthset.split' is 'val'" in _error(capsys)
    task = write_results(tmp_path / "task", cards={"vit": {**CARD, "task": "obstacle"}})
    assert _gate(folders, task) == 2
    assert f"{task / 'cards' / 'vit.json'}: field 'task' is 'obstacle'" in _error(capsys)
    assert (
        main(["gate", str(folders["base"]), str(folders["same"]), "--policy", str(tmp_path / "none.yaml")])
        == 2
    )
    assert f"{tmp_path / 'none.yaml'}: cannot read" in _error(capsys)
    assert not (folders["out"] / "gate.xml").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{base}"], "CANDIDATE: required unless --calibrate"),
        (["{base}", "{same}"], "--policy: required to gate a candidate"),
        (
            ["{base}", "{same}", "--policy", "default", "--model", "vit="],
            "--model: 'vit=' is not BASE or BASE=CANDIDATE",
        ),
        (
            ["{base}", "{same}", "--policy", "default", "--method", "gradcam"],
            "--method: only with --calibrate (a policy names its methods itself)",
        ),
        (
            ["{base}", "{same}", "--calibrate"],
            "CANDIDATE: --calibrate proposes a policy from seed twins; give no candidate",
        ),
    ],
)
def test_usage_errors_exit_2(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    filled = [a.format(**{k: str(v) for k, v in folders.items()}) for a in argv]
    assert main(["gate", *filled]) == 2
    assert _error(capsys) == f"gradsum gate: error: {message}"


def test_a_model_folder_candidate_is_profiled_then_gated(
    folders: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import gradsum.pipeline.gate as pipeline_gate

    model = tmp_path / "vit_retrained"
    model.mkdir()
    (model / "card.json").write_text(json.dumps(CARD))
    calls: list[dict[str, Any]] = []

    def profile_candidate(baseline: str, candidate: Path, **options: Any) -> Path:
        calls.append({"baseline": baseline, "candidate": candidate, **options})
        return write_results(Path(options["out"]), shifted(per_image(), "sky", "mass_share", 0.2))

    monkeypatch.setattr(pipeline_gate, "profile_candidate", profile_candidate)
    assert _gate(folders, model, "--model", "vit", "--device", "cpu") == 1
    assert calls == [
        {
            "baseline": str(folders["base"]),
            "candidate": model,
            "model": "vit",
            "out": folders["out"] / "candidate",
            "device": "cpu",
            "progress": True,
        }
    ]
    assert "sky entered the top 3" in capsys.readouterr().out


def test_calibrate_calls_the_pipeline_and_prints_the_policy(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gradsum.pipeline.gate as pipeline_gate

    calls: list[dict[str, Any]] = []

    def calibrate(baseline: str, **options: Any) -> Path:
        calls.append({"baseline": baseline, **options})
        path = Path(options["out"]) / "policy.yaml"
        path.parent.mkdir(parents=True)
        path.write_text("# proposed\nchecks:\n  - {check: verdict}\n")
        return path

    monkeypatch.setattr(pipeline_gate, "calibrate", calibrate)
    argv = ["gate", str(folders["base"]), "--calibrate", "--twin-model", "a", "--twin-model", "b"]
    assert main([*argv, "--model", "vit", "--method", "gradcam", "--out", str(folders["out"])]) == 0
    assert calls == [
        {
            "baseline": str(folders["base"]),
            "model": "vit",
            "method": "gradcam",
            "twins": 2,
            "twin_models": ["a", "b"],
            "out": str(folders["out"]),
            "device": None,
            "progress": True,
        }
    ]
    out = capsys.readouterr().out
    assert out.startswith("# proposed\nchecks:\n") and f"wrote {folders['out'] / 'policy.yaml'}" in out
