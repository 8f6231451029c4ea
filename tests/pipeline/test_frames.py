"""Frames as real truth sets have them: mixed sizes, full resolution, and models that return NaN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scale_workspace import Workspace

from gradsum.cli import main
from gradsum.errors import AttributionError
from gradsum.models import load_model
from gradsum.pipeline import run
from gradsum.truthsets.labels import ignored_cityscapes_ids

#: KITTI-like frame sizes: the split mixes them
SIZES = [(75, 248), (96, 192), (75, 248), (74, 245)]


def cityscapes_tree(root: Path) -> dict[str, np.ndarray]:
    """A `val` split in the Cityscapes layout with frames of several sizes; returns labels by frame id."""
    rng = np.random.default_rng(0)
    labels = {}
    for number, (height, width) in enumerate(SIZES):
        frame = f"aachen_{number:06d}_000019"
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        label = rng.choice([7, 8, 11, 21, 23, 26, 0], size=(height, width)).astype(np.uint8)
        for folder, suffix, array in (
            ("leftImg8bit", "leftImg8bit", image),
            ("gtFine", "gtFine_labelIds", label),
        ):
            path = root / folder / "val" / "aachen" / f"{frame}_{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
        labels[frame] = label
    return labels


def test_frames_of_mixed_sizes_are_profiled_at_their_own_label_size(
    workspace: Workspace, tmp_path: Path
) -> None:
    labels = cityscapes_tree(tmp_path / "mixed")
    out = tmp_path / "out"
    model = workspace.root / "models" / "pilotnet"
    argv = ["profile", "--model", str(model), "--truthset", str(tmp_path / "mixed"), "--split", "val"]
    assert main([*argv, "--out", str(out), "--workers", "2"]) == 0

    per_image = pd.read_parquet(out / "per_image.parquet")
    ignored = set(ignored_cityscapes_ids())
    for frame, label in labels.items():
        rows = per_image[(per_image["image"] == frame) & (per_image["method"] == "gradcam")]
        counts = np.bincount(label.ravel(), minlength=34)
        expected = {c: int(n) for c, n in enumerate(counts) if n and c not in ignored}
        assert dict(zip(rows["class_id"], rows["pixels"], strict=True)) == expected
    manifest = json.loads((out / "manifest.json").read_text())
    sizes = {(s["height"], s["width"]): s["frames"] for s in manifest["frame_sizes"]["frames"]}
    assert sizes == {(75, 248): 2, (96, 192): 1, (74, 245): 1}
    assert sorted(manifest["frame_sizes"]["resized"]["pilotnet"]) == ["74×245 → 96×192", "75×248 → 96×192"]
    report = (out / "report.html").read_text()
    assert "1 × 96×192" in report and "resized (bilinear, antialias" in report and "75×248 → 96×192" in report


def test_a_model_returning_nan_is_named(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    module, _ = load_model(workspace.root / "models" / "pilotnet")
    with torch.no_grad():
        next(module.parameters()).fill_(float("nan"))
    original = load_model

    def poisoned(folder: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, object]:
        _, card = original(folder, device=device)
        return module, card

    monkeypatch.setattr("gradsum.pipeline.inputs.load_model", poisoned)
    with pytest.raises(
        AttributionError, match=r"models\[pilotnet\] on a batch of .*: method gradcam: non-finite map"
    ):
        run(workspace.config(), out=workspace.root / "nan")
    assert not (workspace.root / "nan").exists()
