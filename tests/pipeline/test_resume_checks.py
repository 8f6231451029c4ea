"""A run killed during its trust checks resumes after the last finished check, to the uninterrupted tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gradsum.contract import CRITERIA_PER_IMAGE, FINISHED_CHECKS, TRUST, read_table
from gradsum.evaluation import CHECKS
from gradsum.evaluation.base import CheckResult, EvaluationContext
from gradsum.pipeline import config_from_dict, run
from gradsum.pipeline.shards import CHECK_RESULT, CheckFolder, work_folder

CHECKED: dict[str, Any] = {
    "name": "checked",
    "truthset": {"path": "synth", "split": "test", "generate": {"count": 40, "seed": 4, "size": [96, 192]}},
    "models": [{"name": "pilotnet", "spec": "pilotnet", "overrides": {"train": {"epochs": 1}}}],
    "methods": [{"method": "gradcam"}],
    "bootstrap_resamples": 50,
    "overlays": 1,
    "evaluation": {"checks": ["causal", "localisation"], "images": 3, "bootstrap_resamples": 50},
}


def config_data(root: Path) -> dict[str, Any]:
    data = json.loads(json.dumps(CHECKED))
    data["truthset"]["path"] = str(root / "synth")
    data["models_dir"] = str(root / "models")
    return data


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the workspace root, an uninterrupted run's results)."""
    root = tmp_path_factory.mktemp("resume_checks")
    return root, run(config_from_dict(config_data(root)), out=root / "reference")


def test_a_run_killed_after_its_first_check_runs_only_the_rest_again(
    reference: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, expected = reference
    out = root / "killed"
    causal, localisation = CHECKS.get("causal"), CHECKS.get("localisation")
    calls: list[str] = []
    real_causal = causal.run

    def counted(self: Any, context: EvaluationContext) -> CheckResult:
        calls.append(self.name)
        return real_causal(self, context)

    def killed(self: Any, context: EvaluationContext) -> CheckResult:
        raise KeyboardInterrupt

    monkeypatch.setattr(causal, "run", counted)
    monkeypatch.setattr(localisation, "run", killed)
    with pytest.raises(KeyboardInterrupt):
        run(config_from_dict(config_data(root)), out=out)
    assert calls == ["causal"] and not out.exists()
    assert [p.name for p in (work_folder(out) / FINISHED_CHECKS).iterdir()] == ["causal"]

    monkeypatch.undo()
    monkeypatch.setattr(causal, "run", counted)
    run(config_from_dict(config_data(root)), out=out)
    # causal was read back, not run again; the tables are the uninterrupted run's, but for the last bits of
    # what localisation computes from maps: a resumed run reads its attribution from the shards, so the
    # checks compute their maps again, in batches of other sizes than the attribution stage's
    assert calls == ["causal"]
    for schema in (TRUST, CRITERIA_PER_IMAGE):
        pd.testing.assert_frame_equal(read_table(out, schema), read_table(expected, schema), rtol=1e-6)
    assert not work_folder(out).exists()


def test_a_check_finished_with_other_settings_runs_again(tmp_path: Path) -> None:
    result = CheckResult({}, pd.DataFrame({"model": ["m"], "method": ["gradcam"], "figure": [0.5]}))
    CheckFolder(tmp_path, {"evaluation": {"images": 3, "checks": ("causal",)}}).save("causal", result, 1.5)
    kept = CheckFolder(tmp_path, {"evaluation": {"images": 3, "checks": ("causal",)}}).load("causal")
    assert kept is not None
    pd.testing.assert_frame_equal(kept[0].summary, result.summary)
    assert kept[1] == 1.5
    assert CheckFolder(tmp_path, {"evaluation": {"images": 4, "checks": ("causal",)}}).load("causal") is None
    assert CheckFolder(tmp_path, {"evaluation": {"images": 3}}).load("localisation") is None


def test_a_finished_check_that_no_longer_unpickles_runs_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = CheckFolder(tmp_path, {"evaluation": {"images": 3}})
    folder.save("causal", CheckResult({}, pd.DataFrame({"model": ["m"]})), 1.0)
    (tmp_path / "causal" / CHECK_RESULT).write_bytes(b"\x80\x05not a pickle")
    assert folder.load("causal") is None
    assert f"{CHECK_RESULT}: unreadable" in caplog.text and "the check runs again" in caplog.text
