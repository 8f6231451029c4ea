"""Pointing a run at a folder: --truthset, --spec, the default split, and unlabelled splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scale_workspace import Workspace

from gradsum.cli import main

#: CamVid release colours (class_dict.csv) and the Cityscapes ids the camvid-rgb spec maps them to
CAMVID = {(128, 64, 128): 7, (128, 128, 128): 23, (64, 0, 128): 26}


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def camvid_tree(root: Path) -> np.ndarray:
    """Two `test` frames in the Kaggle CamVid layout, painted with release colours; their Cityscapes ids."""
    rng = np.random.default_rng(1)
    ids = []
    colours = np.array(list(CAMVID), dtype=np.uint8)
    for stem in ("0001TP_006690", "0001TP_006720"):
        pick = rng.integers(0, len(CAMVID), (72, 96))
        save(root / "test" / f"{stem}.png", rng.integers(0, 256, (72, 96, 3), dtype=np.uint8))
        save(root / "test_labels" / f"{stem}_L.png", colours[pick])
        ids.append(np.array(list(CAMVID.values()))[pick])
    return np.stack(ids)


def cityscapes_frame(root: Path, split: str, labels: np.ndarray) -> None:
    frame = "aachen_000000_000019"
    save(
        root / "leftImg8bit" / split / "aachen" / f"{frame}_leftImg8bit.png",
        np.zeros((*labels.shape, 3), np.uint8),
    )
    save(root / "gtFine" / split / "aachen" / f"{frame}_gtFine_labelIds.png", labels.astype(np.uint8))


def test_a_built_in_spec_reads_a_folder_without_its_own(workspace: Workspace, tmp_path: Path) -> None:
    ids = camvid_tree(tmp_path / "camvid")
    model = str(workspace.root / "models" / "pilotnet")
    out = tmp_path / "out"
    argv = ["profile", "--model", model, "--truthset", str(tmp_path / "camvid"), "--spec", "camvid-rgb"]
    assert main([*argv, "--out", str(out)]) == 0
    per_image = pd.read_parquet(out / "per_image.parquet")
    pixels = per_image[per_image["method"] == "gradcam"].groupby("class_id")["pixels"].sum()
    assert pixels.to_dict() == {c: int((ids == c).sum()) for c in CAMVID.values()}


def test_an_unlabelled_split_is_refused_up_front(
    workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "cityscapes"
    cityscapes_frame(root, "test", np.zeros((64, 128)))
    cityscapes_frame(root, "val", np.full((64, 128), 7))
    model = str(workspace.root / "models" / "pilotnet")
    argv = ["profile", "--model", model, "--truthset", str(root)]
    assert main([*argv, "--split", "test", "--out", str(tmp_path / "no")]) == 2
    error = capsys.readouterr().err
    assert "split 'test' has no labels" in error and "--split val" in error
    assert not (tmp_path / "no").exists()
    # without --split a Cityscapes tree is profiled on val, which has labels
    assert main([*argv, "--out", str(tmp_path / "val")]) == 0
    assert set(pd.read_parquet(tmp_path / "val" / "per_image.parquet")["class"]) == {"road"}


def test_the_shipped_new_truthset_config_says_how_to_point_it(
    workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config", "new_truthset"]) == 2
    assert "--truthset PATH" in capsys.readouterr().err
