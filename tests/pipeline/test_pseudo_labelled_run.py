"""Issue 21's path from a fresh clone: train a segmenter on a labelled set, label frames whose labels were
removed, and run the main job on the pseudo-labelled result, once through the CLI and once through the API.
The run's per-image pixel counts are the predicted labels', and its report says the labels are predicted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from gradsum.cli import main
from gradsum.contract import CARD, MANIFEST, PER_IMAGE, REPORT, read_table
from gradsum.labelling import label_frames, load_segmenter, train_segmenter
from gradsum.pipeline import config_from_dict, run
from gradsum.truthsets import open_truthset
from gradsum.truthsets.encodings import read_png
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A labelled synthetic set, and a copy of it without its labels (the user's unlabelled frames)."""
    root = tmp_path_factory.mktemp("pseudo_run")
    labelled = generate(root / "labelled", count=60, seed=2, size=SIZE)
    frames = root / "frames"
    shutil.copytree(labelled, frames)
    shutil.rmtree(frames / "gtFine")
    return {"root": root, "labelled": labelled, "frames": frames}


def run_config(root: Path, truthset: Path) -> dict[str, Any]:
    return {
        "name": "pseudo",
        "truthset": {"path": str(truthset), "split": "test"},
        "models": [
            {
                "name": "pilotnet",
                "spec": "pilotnet",
                "overrides": {"img_size": list(SIZE), "train": {"epochs": 1}},
            }
        ],
        "methods": [{"method": "gradcam"}],
        "evaluation": {"checks": ["causal"], "images": 4},
        "batch_size": 4,
        "workers": 0,
        "bootstrap_resamples": 50,
        "overlays": 1,
        "models_dir": str(root / "models"),
        "device": "cpu",
    }


def check_run(results: Path, pseudo: Path, segmenter: Path) -> None:
    """The run profiled the predicted labels and says so."""
    card = json.loads((segmenter / CARD).read_text())
    recorded = json.loads((results / MANIFEST).read_text())["truthset"]
    assert recorded["kind"] == "pseudo"
    source = recorded["parameters"]["label_source"]
    assert source["predicted"] and source["held_out_miou"] == pytest.approx(card["metrics"]["miou"])
    truthset = open_truthset(pseudo, "test")
    per_image: pd.DataFrame = read_table(results, PER_IMAGE)
    first = truthset[0]
    predicted = read_png(Path(first.meta["label"]), "labels")
    counts = np.bincount(predicted.ravel(), minlength=34)
    rows = per_image[(per_image["image"] == per_image["image"].iloc[0])]
    assert rows["image"].iloc[0] == first.meta["frame"]
    assert {int(c): int(n) for c, n in zip(rows["class_id"], rows["pixels"], strict=True)} == {
        c: int(n) for c, n in enumerate(counts) if n and c in set(rows["class_id"])
    }
    report = (results / REPORT).read_text()
    assert "The labels of this truth set are predicted, not annotated: lraspp_mobilenet_v3_large" in report


def test_cli_train_label_run(sets: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = sets["root"] / "cli"
    segmenter, pseudo = root / "segmenter", root / "pseudo"
    train = ["train-segmenter", str(sets["labelled"]), "--out", str(segmenter), "--steps", "4"]
    assert main([*train, "--batch-size", "4", "--input-size", *map(str, SIZE)]) == 0
    label = ["label", str(sets["frames"]), "--segmenter", str(segmenter), "--out", str(pseudo)]
    assert main([*label, "--threshold", "0.2", "--device", "cpu"]) == 0
    assert main(["check", str(pseudo)]) == 0
    config = root / "pseudo.yaml"
    config.write_text(yaml.safe_dump(run_config(root, pseudo)))
    assert main(["run", "--config", str(config), "--out", str(root / "results")]) == 0
    capsys.readouterr()
    check_run(root / "results", pseudo, segmenter)


def test_api_train_label_run(sets: dict[str, Path]) -> None:
    root = sets["root"] / "api"
    segmenter, pseudo = root / "segmenter", root / "pseudo"
    card = train_segmenter(
        sets["labelled"], segmenter, steps=4, batch_size=4, input_size=SIZE, progress=False
    )
    assert 0.0 <= card["metrics"]["miou"] <= 1.0
    manifest = label_frames(sets["frames"], load_segmenter(segmenter), pseudo, threshold=0.2, progress=False)
    assert manifest.kind == "pseudo"
    results = run(config_from_dict(run_config(root, pseudo)), out=root / "results")
    check_run(results, pseudo, segmenter)
