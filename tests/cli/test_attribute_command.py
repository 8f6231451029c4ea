"""`gradsum attribute` is a thin layer: its overlays are the API's, drawn from the maps it saves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gradsum.attribution.base import upsample
from gradsum.cli import main
from gradsum.models import ModelSpec, build_model, save_model
from gradsum.report.overlays import overlay_png
from gradsum.truthsets import open_truthset
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("attribute")
    spec = ModelSpec(name="tiny", architecture="pilotnet", task="steering", img_size=SIZE)
    torch.manual_seed(0)
    save_model(build_model("pilotnet", SIZE), spec, root / "model")
    generate(root / "set", count=20, seed=0, size=SIZE)
    return root / "model", root / "set"


def test_the_overlays_are_the_saved_maps_drawn_by_the_api(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, truthset = inputs
    out = tmp_path / "maps"
    argv = [
        "attribute",
        "--model",
        str(model),
        "--truthset",
        str(truthset),
        "--count",
        "2",
        "--out",
        str(out),
    ]
    assert main([*argv, "--device", "cpu"]) == 0
    maps = np.load(out / "maps.npy")
    target = json.loads((out / "attribution.json").read_text())["target"]
    frames = open_truthset(truthset, "test")
    for index in range(2):
        image = frames[index].image
        heat = upsample(torch.from_numpy(maps[index : index + 1]), image.shape[:2])[0].numpy()
        expected = overlay_png(image, heat, f"gradcam · {target} · image {index}")
        assert (out / f"overlay_{index:03d}.png").read_bytes() == expected
    assert sorted(p.name for p in out.iterdir()) == [
        "attribution.json",
        "maps.npy",
        "overlay_000.png",
        "overlay_001.png",
    ]
