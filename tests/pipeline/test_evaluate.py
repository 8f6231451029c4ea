"""`gradsum evaluate`: trust checks added to an existing results folder, through the API and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from gradsum.cli import main
from gradsum.errors import GradSUMError
from gradsum.pipeline import config_from_dict, run
from gradsum.pipeline.evaluate import evaluate
from gradsum.report.results import folder_checksums

NO_TRUST = {
    "name": "plain",
    "truthset": {"path": "synth", "split": "test", "generate": {"count": 40, "seed": 4, "size": [96, 192]}},
    "models": [{"name": "pilotnet", "spec": "pilotnet", "overrides": {"train": {"epochs": 1}}}],
    "methods": [{"method": "gradcam"}],
    "bootstrap_resamples": 50,
    "overlays": 1,
    "evaluation": {"checks": [], "bootstrap_resamples": 50},
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    data = json.loads(json.dumps(NO_TRUST))
    data["truthset"]["path"] = str(root / "synth")
    data["models_dir"] = str(root / "models")
    return run(config_from_dict(data), out=root / "results" / "plain")


def _snapshot(folder: Path) -> dict[str, str]:
    return folder_checksums(folder)


def test_a_run_without_checks_says_so_in_its_report(plain: Path) -> None:
    assert not (plain / "trust.csv").exists()
    assert "No trust checks ran" in (plain / "report.html").read_text()


def test_evaluate_adds_the_trust_tables_and_keeps_the_profiles(plain: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"

    shutil.copytree(plain, folder)
    before = _snapshot(folder)
    evaluate(folder, ["causal", "localisation"], images=3)
    after = _snapshot(folder)
    for name in ["per_image.parquet", "profiles.csv"]:
        assert after[name] == before[name]
    trust = pd.read_csv(folder / "trust.csv")
    nulls = {"null:random", "null:uniform", "null:sobel", "null:class_area", "null:positional_prior"}
    controls = {f"control:{c}" for c in ("oracle", "other_model", "other_task", "other_image", "cause_mask")}
    assert {"gradcam"} | nulls | controls == set(trust["method"])
    assert {"causal_verdict", "localisation_verdict"} <= set(trust.columns)
    assert "sanity_verdict" not in trust.columns
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["config"]["evaluation"]["checks"] == ["causal", "localisation"]
    assert set(manifest["trust_tables"]) == {
        "trust",
        "recommendations",
        "causal_effects",
        "causal_profiles",
        "causal_materiality",
        "agreement",
        "localisation",
        "criteria",
        "criteria_per_image",
    }
    assert set(manifest["files"]) == set(folder_checksums(folder))
    assert 'id="trust"' in (folder / "report.html").read_text()

    # a second evaluation replaces the first one's tables rather than mixing them
    evaluate(folder, ["localisation"], images=3)
    assert not (folder / "agreement.csv").exists()
    assert "causal_verdict" not in pd.read_csv(folder / "trust.csv").columns


def test_cli_evaluate_and_its_refusals(
    plain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    folder = tmp_path / "cli"
    shutil.copytree(plain, folder)
    before = _snapshot(folder)
    assert main(["evaluate", str(folder), "--checks", "causal,typo"]) == 2
    assert "unknown trust check 'typo'" in capsys.readouterr().err
    assert _snapshot(folder) == before  # nothing written
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "no such results folder" in capsys.readouterr().err
    assert main(["evaluate", str(folder), "--checks", "sanity", "--images", "2"]) == 0
    assert "trust.csv" in capsys.readouterr().out
    assert (pd.read_csv(folder / "sanity.csv")["n_images"] == 2).all()


def test_evaluate_needs_the_models_on_disk(plain: Path, tmp_path: Path) -> None:

    folder = tmp_path / "moved"
    shutil.copytree(plain, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["models_dir"] = str(tmp_path / "nowhere")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GradSUMError, match=r"no checkpoint at .*nowhere"):
        evaluate(folder, ["causal"], images=2)


def test_the_trust_config_runs_every_check_at_a_small_size(tmp_path: Path) -> None:
    """The shipped `trust` config's evaluation block (every check, shuffled-label twins) on a tiny set."""
    from gradsum.pipeline import load_config

    trust = load_config("trust")
    data = json.loads(json.dumps(NO_TRUST))
    data["truthset"]["path"] = str(tmp_path / "synth")
    data["models_dir"] = str(tmp_path / "models")
    data["evaluation"] = {
        "checks": list(trust.evaluation.checks),
        "images": 3,
        "shuffled_labels": ["pilotnet"],
        "options": {**trust.evaluation.options, "perturbation": {"max_images": 2}},
        "bootstrap_resamples": 50,
    }
    folder = run(config_from_dict(data), out=tmp_path / "results")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"perturbation_auc", "granularity", "sanity_data", "instance_profiles"} <= set(
        manifest["trust_tables"]
    )
    assert (tmp_path / "models" / "pilotnet_shuffled" / "card.json").is_file()
    trust_table = pd.read_csv(folder / "trust.csv")
    assert {"causal_verdict", "sanity_verdict", "perturbation_verdict", "localisation_verdict"} <= set(
        trust_table.columns
    )
    sanity = pd.read_csv(folder / "sanity.csv")
    assert {"cascading", "independent"} <= set(sanity["mode"])
    assert set(pd.read_csv(folder / "sanity_data.csv")["block"]) == {"pilotnet_shuffled"}


@pytest.mark.parametrize("decorrelated", [False, True])
def test_the_default_checks_leave_out_those_the_truth_set_cannot_run(
    tmp_path: Path, decorrelated: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from gradsum.pipeline.evaluate import supported_checks
    from gradsum.truthsets import open_truthset
    from gradsum.truthsets.synthetic import generate

    root = generate(tmp_path / "set", count=6, size=(32, 64), decorrelated=decorrelated)
    with caplog.at_level("INFO", logger="gradsum.pipeline.evaluate"):
        kept = supported_checks(("causal", "shortcut", "localisation"), open_truthset(root, "test"))
    if decorrelated:
        assert kept == ("causal", "shortcut", "localisation")
    else:
        # the set has no test_decorrelated split: the shortcut check says so instead of failing the run
        assert kept == ("causal", "localisation")
        assert "check shortcut left out" in caplog.text and "test_decorrelated" in caplog.text
