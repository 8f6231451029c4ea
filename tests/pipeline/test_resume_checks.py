"""A run killed during its trust checks resumes after the last finished check, or the last finished model
of a long check, to the uninterrupted tables."""

from __future__ import annotations

import importlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gradsum.contract import CRITERIA_PER_IMAGE, FINISHED_CHECKS, MANIFEST, TRUST, read_table
from gradsum.evaluation import CHECKS
from gradsum.evaluation.base import CheckResult, EvaluationContext
from gradsum.pipeline import config_from_dict, run
from gradsum.pipeline.shards import CHECK_PARTS, CHECK_RESULT, CheckFolder, work_folder

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


#: Two models, so that a long check has a part finished before the kill and one after it.
LONG: dict[str, Any] = {
    **CHECKED,
    "name": "long",
    "models": [
        *CHECKED["models"],
        {"name": "second", "spec": "pilotnet", "overrides": {"train": {"epochs": 1, "seed": 1}}},
    ],
    "evaluation": {
        "checks": ["perturbation", "sanity"],
        "images": 3,
        "bootstrap_resamples": 50,
        "options": {"perturbation": {"fractions": [0.5], "max_images": 2}, "sanity": {"blocks": 1}},
    },
}


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the workspace root, an uninterrupted run of two models' ROAD and sanity checks)."""
    root = tmp_path_factory.mktemp("resume_parts")
    return root, run(config_from_dict(long_data(root)), out=root / "reference")


def long_data(root: Path) -> dict[str, Any]:
    data = json.loads(json.dumps(LONG))
    data["truthset"]["path"] = str(root / "synth")
    data["models_dir"] = str(root / "models")
    return data


@pytest.mark.parametrize(("check", "share"), [("perturbation", "_perturb_model"), ("sanity", "model_sanity")])
def test_a_run_killed_during_a_long_check_resumes_after_its_last_finished_model(
    long_reference: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    check: str,
    share: str,
) -> None:
    root, expected = long_reference
    out = root / f"killed_{check}"
    module = importlib.import_module(f"gradsum.evaluation.checks.{check}")
    real = getattr(module, share)
    calls: list[str] = []

    def counted(context: EvaluationContext, model: Any, *args: Any) -> Any:
        calls.append(model.name)
        return real(context, model, *args)

    def killed_at_second(context: EvaluationContext, model: Any, *args: Any) -> Any:
        if model.name == "second":
            raise KeyboardInterrupt
        return counted(context, model, *args)

    monkeypatch.setattr(module, share, killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        run(config_from_dict(long_data(root)), out=out)
    parts = work_folder(out) / FINISHED_CHECKS / check / CHECK_PARTS
    assert calls == ["pilotnet"] and sorted(p.name for p in parts.glob("*.pkl")) == ["pilotnet.pkl"]

    monkeypatch.setattr(module, share, counted)
    with caplog.at_level(logging.INFO, logger="gradsum.evaluation.base"):
        run(config_from_dict(long_data(root)), out=out)
    # the first model's share was read back, not computed again; the tables are the uninterrupted run's
    # (to the last bits of maps a resumed run computes in other batch sizes, as above)
    assert calls == ["pilotnet", "second"]
    for schema in (TRUST, CRITERIA_PER_IMAGE):
        pd.testing.assert_frame_equal(read_table(out, schema), read_table(expected, schema), rtol=1e-6)
    # the check's seconds count the share the interrupted run computed, as the log says it took then
    [kept] = re.findall(
        rf"trust check {check}: pilotnet kept from an interrupted run \(([0-9.]+) s then\)", caplog.text
    )
    seconds = json.loads((out / MANIFEST).read_text())["evaluation_seconds"][check]
    assert float(kept) > 0 and seconds >= float(kept)


def test_a_part_is_kept_with_its_settings_until_its_check_finishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"evaluation": {"images": 3}}
    folder = CheckFolder(tmp_path, settings)
    folder.save_part("sanity", "pilotnet/a", {"drop": 0.25}, 2.5)
    assert folder.load_part("sanity", "pilotnet/a") == ({"drop": 0.25}, 2.5)
    assert folder.load_part("sanity", "other") is None
    assert folder.load_part("perturbation", "pilotnet/a") is None
    # other settings read nothing back, and their first part discards the parts of the old ones
    other = CheckFolder(tmp_path, {"evaluation": {"images": 4}})
    assert other.load_part("sanity", "pilotnet/a") is None
    other.save_part("sanity", "second", [1], 1.0)
    assert folder.load_part("sanity", "pilotnet/a") is None
    assert other.load_part("sanity", "second") == ([1], 1.0)
    # a part that no longer unpickles is computed again
    [path] = (tmp_path / "sanity" / CHECK_PARTS).glob("second*.pkl")
    path.write_bytes(b"\x80\x05not a pickle")
    assert other.load_part("sanity", "second") is None
    assert "unreadable" in caplog.text and "the part runs again" in caplog.text
    # the finished check replaces its folder: its parts go with it
    other.save_part("sanity", "second", [1], 1.0)
    other.save("sanity", CheckResult({}, pd.DataFrame({"model": ["m"]})), 3.0)
    assert not (tmp_path / "sanity" / CHECK_PARTS).exists()
    assert other.load_part("sanity", "second") is None
