"""The gate's runs: a candidate model profiled as the baseline was, and seed twins profiled to calibrate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from gradsum.contract import MANIFEST, PER_IMAGE, read_table
from gradsum.errors import SpecError
from gradsum.pipeline import config_from_dict, run
from gradsum.pipeline.gate import baseline_config, calibrate, candidate_config, profile_candidate

TINY_VIT: dict[str, Any] = {
    "img_size": [32, 64],
    "arch": {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2},
    "train": {"epochs": 1, "batch_size": 8},
}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ViT and a compact CNN on 12 test scenes, GradCAM on both and gradient rollout on the ViT only."""
    root = tmp_path_factory.mktemp("gate_runs")
    data: dict[str, Any] = {
        "name": "base",
        "truthset": {
            "path": str(root / "synth"),
            "split": "test",
            "limit": 12,
            "generate": {"count": 120, "seed": 4, "size": [32, 64]},
        },
        "models": [
            {"name": "vit", "spec": "vit", "overrides": TINY_VIT},
            {
                "name": "cnn",
                "spec": "compact_cnn",
                "overrides": {"img_size": [32, 64], "train": {"epochs": 1}},
            },
        ],
        "methods": [{"method": "gradcam"}, {"method": "gradrollout", "models": ["vit"]}],
        "bootstrap_resamples": 50,
        "overlays": 1,
        "attention_diagnostics": False,
        "evaluation": {"checks": []},
        "models_dir": str(root / "models"),
    }
    return run(config_from_dict(data), out=root / "baseline")


def test_the_baseline_config_is_read_back_from_its_manifest(baseline: Path) -> None:
    config = baseline_config(baseline)
    assert [m.name for m in config.models] == ["vit", "cnn"]
    assert config.truthset.limit == 12


def test_the_candidate_config_keeps_only_the_replaced_model_and_its_methods(baseline: Path) -> None:
    config = baseline_config(baseline)
    entry = config.models[1]
    narrowed = candidate_config(config, entry, Path("elsewhere/cnn"))
    assert [(m.name, m.checkpoint) for m in narrowed.models] == [("cnn", "elsewhere/cnn")]
    # gradient rollout ran on the ViT only: the CNN's candidate run has GradCAM alone
    assert [(m.name, m.models) for m in narrowed.methods] == [("gradcam", ("cnn",))]
    assert narrowed.truthset == config.truthset and narrowed.targets == config.targets


def test_a_copy_of_the_baseline_model_profiles_identically(baseline: Path, tmp_path: Path) -> None:
    config = baseline_config(baseline)
    copy = shutil.copytree(Path(config.models_dir) / "vit", tmp_path / "vit_copy")
    out = profile_candidate(baseline, copy, model="vit", out=tmp_path / "candidate")
    ours = read_table(out, PER_IMAGE)
    theirs = read_table(baseline, PER_IMAGE)
    theirs = theirs[theirs["model"] == "vit"].reset_index(drop=True)
    assert set(ours["method"]) == {"gradcam", "gradrollout"}
    key = ["model", "method", "image", "class_id"]
    pd.testing.assert_frame_equal(
        ours.sort_values(key).reset_index(drop=True), theirs.sort_values(key).reset_index(drop=True)
    )
    assert (
        json.loads((out / MANIFEST).read_text())["truthset"]
        == json.loads((baseline / MANIFEST).read_text())["truthset"]
    )


def test_the_candidate_must_name_a_model_of_the_baseline(baseline: Path, tmp_path: Path) -> None:
    folder = Path(baseline_config(baseline).models_dir) / "vit"
    with pytest.raises(SpecError, match=r"--model: .* holds 2 models; name the one .*: vit, cnn"):
        profile_candidate(baseline, folder, out=tmp_path / "out")
    with pytest.raises(SpecError, match=r"--model: .* holds no model 'vitt'; valid: vit, cnn"):
        profile_candidate(baseline, folder, model="vitt", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_candidate_of_another_task_is_refused_naming_its_card(baseline: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(Path(baseline_config(baseline).models_dir) / "cnn", tmp_path / "cnn")
    card = json.loads((folder / "card.json").read_text())
    card["task"] = "steering"
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(
        SpecError,
        match=r"cnn/card.json: the candidate is trained for the steering task; the baseline's 'cnn' for the obstacle",
    ):
        profile_candidate(baseline, folder, model="cnn", out=tmp_path / "out")
    with pytest.raises(SpecError, match=r"not a model folder"):
        profile_candidate(baseline, tmp_path, model="cnn", out=tmp_path / "out")


def test_calibration_trains_seed_twins_and_writes_a_policy(baseline: Path, tmp_path: Path) -> None:
    written = calibrate(baseline, model="vit", method="gradrollout", twins=2, out=tmp_path / "cal")
    assert written == tmp_path / "cal" / "policy.yaml"
    models = Path(baseline_config(baseline).models_dir)
    # twins retrain the spec with seeds 1 and 2 (seed 1 is the trust checks' seed twin's folder)
    for offset in (1, 2):
        card = json.loads((models / f"vit_seed{offset}" / "card.json").read_text())
        assert card["spec"]["train"]["seed"] == offset
        assert (tmp_path / "cal" / "twins" / f"vit_seed{offset}" / MANIFEST).is_file()
    policy = yaml.safe_load(written.read_text())
    assert {check["check"] for check in policy["checks"]} >= {"class_shift", "spearman", "top_k"}
