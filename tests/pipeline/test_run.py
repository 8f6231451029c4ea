"""End to end: the main job at a small size, its tables checked against the definitions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradsum.attribution import attribute
from gradsum.cli import main
from gradsum.models import load_model
from gradsum.pipeline import config_from_dict, run
from gradsum.truthsets import open_truthset

TINY = {
    "name": "tiny",
    "truthset": {"path": "synth", "split": "test", "generate": {"count": 40, "seed": 3, "size": [96, 192]}},
    "models": [
        {"name": "pilotnet", "spec": "pilotnet", "overrides": {"train": {"epochs": 1}}},
        {"name": "hybrid", "spec": "hybrid_vit", "overrides": {"train": {"epochs": 1}}},
    ],
    "methods": [
        {"method": "gradcam"},
        {"method": "gradcam", "label": "gradcam_tokenizer", "models": ["hybrid"], "layer": "tokenizer"},
        {"method": "split", "models": ["hybrid"]},
    ],
    "bootstrap_resamples": 100,
    "overlays": 2,
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    data = json.loads(json.dumps(TINY))
    data["truthset"]["path"] = str(root / "synth")
    data["models_dir"] = str(root / "models")
    return run(config_from_dict(data), out=root / "results" / "tiny")


def test_results_folder_has_every_table_and_the_report(results: Path) -> None:
    for name in ["per_image.parquet", "profiles.csv", "comparisons.csv", "ground_truth.csv", "report.html"]:
        assert (results / name).is_file(), name
    assert (results / "attention.csv").is_file()
    assert sorted(p.name for p in (results / "cards").iterdir()) == ["hybrid.json", "pilotnet.json"]
    assert list((results / "plots").glob("*.png")) and list((results / "plots").glob("*.svg"))
    manifest = json.loads((results / "manifest.json").read_text())
    assert "per_image.parquet" in manifest["files"] and manifest["resolution"] == "label"
    assert not list(results.parent.glob(".*partial"))


def test_profiles_follow_the_per_image_table(results: Path) -> None:
    per_image = pd.read_parquet(results / "per_image.parquet")
    profiles = pd.read_csv(results / "profiles.csv")
    methods = set(per_image["method"])
    assert {
        "gradcam",
        "gradcam_tokenizer",
        "split",
        "split/tokenizer_gradcam",
        "split/attention",
        "split/mean",
    } <= methods
    # the split's main map is its product part, profiled once
    assert "split/product" not in methods
    row = profiles[
        (profiles["model"] == "pilotnet") & (profiles["method"] == "gradcam") & (profiles["class"] == "road")
    ]
    scores = per_image[(per_image["model"] == "pilotnet") & (per_image["method"] == "gradcam")]
    road = scores[scores["class"] == "road"]["score"]
    assert int(row["n_images"].iloc[0]) == len(road)
    assert row["score_mean"].iloc[0] == pytest.approx(road.mean())
    assert row["score_ci_low"].iloc[0] <= row["score_mean"].iloc[0] <= row["score_ci_high"].iloc[0]
    # absent classes are missing, never zero-filled
    assert (per_image["pixels"] > 0).all()


def test_a_score_recomputed_by_hand(results: Path) -> None:
    manifest = json.loads((results / "manifest.json").read_text())
    truthset = open_truthset(manifest["truthset"]["root"], "test")
    sample = truthset[0]
    model, _ = load_model(Path(manifest["config"]["models_dir"]) / "pilotnet")
    image = torch.from_numpy(sample.image).permute(2, 0, 1).float()[None] / 255
    heat = attribute(model, image, "gradcam", task="steering").maps[0].numpy()
    per_image = pd.read_parquet(results / "per_image.parquet")
    rows = per_image[
        (per_image["model"] == "pilotnet")
        & (per_image["method"] == "gradcam")
        & (per_image["image"] == sample.meta["frame"])
    ].set_index("class")
    road = sample.labels == 7
    assert rows.loc["road", "pixels"] == road.sum()
    assert rows.loc["road", "score"] == pytest.approx(heat[road].mean(), rel=1e-4)
    valid = ~np.isin(sample.labels, [c for c in range(34) if c not in set(rows["class_id"])] + [0])
    assert rows.loc["road", "mass_share"] == pytest.approx(heat[road].sum() / heat[valid].sum(), rel=1e-4)


def test_a_second_run_reuses_truthset_and_models_and_gives_the_same_tables(
    results: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = json.loads((results / "manifest.json").read_text())
    config = config_from_dict(
        {
            **json.loads(json.dumps(TINY)),
            "truthset": manifest["config"]["truthset"],
            "models_dir": manifest["config"]["models_dir"],
        }
    )
    with caplog.at_level(logging.WARNING, logger="gradsum.pipeline.run"):
        again = run(config, out=results.parent / "again")
    assert "used as it is" not in caplog.text
    assert json.loads((again / "manifest.json").read_text())["stage_seconds"]["models"] < 30
    for table in ["profiles.csv", "comparisons.csv", "ground_truth.csv"]:
        assert (again / table).read_bytes() == (results / table).read_bytes(), table


def test_what_is_on_disk_but_differs_from_the_config_is_kept_with_a_warning(
    results: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = json.loads((results / "manifest.json").read_text())
    data = json.loads(json.dumps(TINY))
    truthset = manifest["config"]["truthset"]
    data["truthset"] = {**truthset, "generate": {**truthset["generate"], "count": 50}}
    data["models_dir"] = manifest["config"]["models_dir"]
    data["models"][0]["overrides"] = {"train": {"epochs": 2}}
    card = Path(data["models_dir"]) / "pilotnet" / "card.json"
    before = card.read_bytes()
    with caplog.at_level(logging.WARNING, logger="gradsum.pipeline.run"):
        run(config_from_dict(data), out=results.parent / "changed")
    assert "was rendered with count 40 (config: 50)" in caplog.text
    assert "differs from models[pilotnet] in train.epochs;" in caplog.text
    assert "models[hybrid]" not in caplog.text
    assert card.read_bytes() == before


def test_report_command_rerenders_and_rejects_a_broken_folder(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(results)]) == 0
    (results / "profiles.csv").write_text("model,method\n")
    assert main(["report", str(results)]) != 0
    assert "profiles.csv" in capsys.readouterr().err


def test_profile_command_profiles_an_existing_model(results: Path, tmp_path: Path) -> None:
    manifest = json.loads((results / "manifest.json").read_text())
    model = str(Path(manifest["config"]["models_dir"]) / "pilotnet")
    out = tmp_path / "profiled"
    argv = ["profile", "--model", model, "--truthset", manifest["truthset"]["root"], "--limit", "4"]
    assert main([*argv, "--method", "hirescam", "--out", str(out)]) == 0
    profiles = pd.read_csv(out / "profiles.csv")
    assert set(profiles["method"]) == {"hirescam"} and set(profiles["model"]) == {"pilotnet"}
    assert profiles["n_images"].max() <= 4


def test_run_command_lists_configs_and_rejects_unknown_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--list-configs"]) == 0
    assert "cnn_vs_vit" in capsys.readouterr().out
    assert main(["run", "--config", "no-such-config"]) == 2
    assert "no-such-config" in capsys.readouterr().err


def test_every_profile_carries_a_trust_verdict(results: Path) -> None:
    trust = pd.read_csv(results / "trust.csv")
    profiled = set(
        pd.read_csv(results / "profiles.csv")[["model", "method"]].itertuples(index=False, name=None)
    )
    judged = set(trust[["model", "method"]].itertuples(index=False, name=None))
    # the split's parts are profiles of the split method; every configured method has its row
    assert {(m, k) for m, k in profiled if "/" not in k} <= judged
    assert {"causal_verdict", "causal_image_verdict", "sanity_verdict", "localisation_verdict"} <= set(
        trust.columns
    )
    for name in [
        "causal_profiles.csv",
        "causal_effects.csv",
        "causal_materiality.csv",
        "recommendations.csv",
        "agreement.csv",
        "sanity.csv",
        "localisation.csv",
    ]:
        assert (results / name).is_file(), name
    manifest = json.loads((results / "manifest.json").read_text())
    assert set(manifest["trust_tables"]) >= {
        "trust",
        "agreement",
        "causal_profiles",
        "sanity",
        "localisation",
    }
    page = (results / "report.html").read_text()
    assert page.index('id="trust"') < page.index('id="profiles"') < page.index('id="configuration"')


def test_no_null_or_mismatched_control_passes_and_every_model_gets_a_recommendation(results: Path) -> None:
    trust = pd.read_csv(results / "trust.csv")
    verdict_columns = [c for c in trust.columns if c.endswith("_verdict")]
    gating = trust[trust["role"].isin(["chance", "confound"])]
    assert set(gating["method"]) == {
        "null:random",
        "null:uniform",
        "null:class_area",
        "null:positional_prior",
    }
    assert len(gating) == 2 * 4  # two models × four gating nulls
    # a gating null never passes: where one would, the criterion is uninformative for every row instead
    assert not (gating[verdict_columns] == "pass").any().any(), gating[["model", "method", "summary"]]
    # the nulls and controls know nothing of the weights: the sanity check leaves them out
    assert (trust.loc[trust["role"] != "method", "sanity_verdict"] == "not run").all()
    controls = trust[trust["role"] == "control"]
    assert set(controls["method"]) == {
        "control:oracle",
        "control:other_model",
        "control:other_task",
        "control:other_image",
        "control:cause_mask",
    }
    mismatched = controls[controls["method"].isin(["control:other_image", "control:other_model"])]
    assert not (mismatched["causal_image_verdict"] == "pass").any()
    lines = pd.read_csv(results / "recommendations.csv", keep_default_na=False)
    assert set(lines["model"]) == {"pilotnet", "hybrid"}
    for line in lines.itertuples(index=False):
        named = f"For {line.model}, use {line.method} (" if line.method else f"For {line.model}, no method"
        assert line.sentence.startswith(named)
        assert not str(line.method).startswith(("control:", "null:"))
