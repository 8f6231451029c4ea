from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gradsum.attribution import attribute
from gradsum.cli import main
from gradsum.models import ModelSpec, build_model, load_model, save_model
from gradsum.models.inputs import model_input
from gradsum.truthsets import open_truthset
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
    record = json.loads((out / "attribution.json").read_text())
    assert record["steps"][0] == "relu" and record["steps"][-1] == "normalise minmax"
    assert main(args) == 2  # the folder exists and --overwrite was not given
    assert main([*args, "--overwrite", "--postprocess", "abs"]) == 0
    assert json.loads((out / "attribution.json").read_text())["steps"][0] == "abs"


def test_attribute_errors_are_one_line(
    checkpoint_and_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, truthset = checkpoint_and_set
    base = ["attribute", "--model", str(model), "--truthset", str(truthset), "--out", str(tmp_path / "x")]
    assert main([*base, "--method", "attention"]) == 2
    assert "applies to" in capsys.readouterr().err
    assert main([*base, "--layer", "features.9"]) == 2
    assert "close names" in capsys.readouterr().err
    assert main([*base, "--postprocess", "relu,clip"]) == 2
    assert "unknown postprocess step 'clip'" in capsys.readouterr().err
    lone = tmp_path / "lone" / "model.pt"
    lone.parent.mkdir()
    lone.write_bytes((model / "model.safetensors").read_bytes())
    assert main([*base, "--model", str(lone)]) == 2
    err = capsys.readouterr().err
    assert f"a model folder (card.json + model.safetensors) is expected; {lone} has no card.json" in err
    assert not (tmp_path / "x").exists()
    assert main([*base, "--model", str(model / "model.safetensors"), "--count", "1"]) == 0  # names its folder


def test_attribute_takes_frames_of_different_sizes(
    checkpoint_and_set: tuple[Path, Path], tmp_path: Path
) -> None:
    model, generated = checkpoint_and_set
    truthset = tmp_path / "mixed"
    shutil.copytree(generated, truthset)
    for path in truthset.glob("*/test/*/*_000001_*.png"):  # the second test frame, at 48×96 instead
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert pixels is not None
        cv2.imwrite(str(path), cv2.resize(pixels, (96, 48), interpolation=cv2.INTER_NEAREST))
    frames = [sample.image for sample in open_truthset(truthset, "test")][:2]
    assert [frame.shape for frame in frames] == [(64, 128, 3), (48, 96, 3)]
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
    # oracle: each frame alone through the one input transform gives the map the batch gave it
    module, card = load_model(model)
    alone = [
        attribute(
            module, model_input([frame], (64, 128)), "gradcam", task=card.task, normalise="minmax"
        ).maps[0]
        for frame in frames
    ]
    np.testing.assert_allclose(np.load(out / "maps.npy"), torch.stack(alone).numpy(), atol=1e-5)
    shapes = [getattr(cv2.imread(str(out / f"overlay_00{i}.png")), "shape", None) for i in (0, 1)]
    assert None not in shapes and shapes[0] != shapes[1]  # each drawn at its frame's own size
