from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gradsum.cli import main
from gradsum.models import ModelSpec, build_model, save_model
from gradsum.truthsets.synthetic import generate


def test_methods_lists_every_method_with_its_families(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "lib:scorecam" in out and "cnn/hybrid/vit" in out
    assert main(["methods", "--family", "cnn"]) == 0
    assert "lib:fullgrad" in capsys.readouterr().out


@pytest.fixture(scope="module")
def checkpoint_and_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    spec = ModelSpec(name="tiny", architecture="pilotnet", task="steering", img_size=(64, 128))
    torch.manual_seed(0)
    save_model(build_model("pilotnet", (64, 128)), spec, root / "model")
    generate(root / "set", count=20, seed=0, size=(64, 128))
    return root / "model", root / "set"


def test_attribute_writes_maps_and_overlays(checkpoint_and_set: tuple[Path, Path], tmp_path: Path) -> None:
    model, truthset = checkpoint_and_set
    out = tmp_path / "maps"
    args = [
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
    assert main(args) == 0
    maps = np.load(out / "maps.npy")
    assert maps.shape == (2, 64, 128) and maps.max() > 0.99
    assert sorted(p.name for p in out.glob("*.png")) == ["overlay_000.png", "overlay_001.png"]
    assert main(args) == 2  # the folder exists and --overwrite was not given


def test_attribute_errors_are_one_line(
    checkpoint_and_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, truthset = checkpoint_and_set
    base = ["attribute", "--model", str(model), "--truthset", str(truthset), "--out", str(tmp_path / "x")]
    assert main([*base, "--method", "attention"]) == 2
    assert "applies to" in capsys.readouterr().err
    assert main([*base, "--layer", "features.9"]) == 2
    assert "close names" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
