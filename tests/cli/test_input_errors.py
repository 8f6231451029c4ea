"""Bad user input met beyond the cases of tests/test_bad_input.py: each reaches the user as one
`gradsum <command>: error: ...` line naming the file, field or flag, exit 2, no traceback, and no output.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradsum.cli import main
from gradsum.models import ModelSpec, build_model, save_model
from gradsum.truthsets.layout import FrameId
from gradsum.truthsets.synthetic import generate
from gradsum.truthsets.synthetic.writer import frame_id

SIZE = (64, 128)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained steering model and a synthetic set: the errors come before any result matters."""
    root = tmp_path_factory.mktemp("inputs")
    spec = ModelSpec(name="tiny", architecture="pilotnet", task="steering", img_size=SIZE)
    torch.manual_seed(0)
    save_model(build_model("pilotnet", SIZE), spec, root / "model")
    generate(root / "set", count=20, seed=0, size=SIZE)
    return root / "model", root / "set"


def refused(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `argv`; check exit 2 and one error line, without a traceback, that names `named`."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    prefix = f"gradsum {argv[0]}: error: "
    assert err.startswith(prefix) and err.count("\n") == 1, err
    assert named in err, err
    return err


def _attribute(model: Path, truthset: Path, out: Path, *extra: str) -> list[str]:
    return ["attribute", "--model", str(model), "--truthset", str(truthset), "--out", str(out), *extra]


def _copy(truthset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(truthset, tmp_path / "set"))


def _scene_without_targets(root: Path) -> Path:
    path = frame_id("test", 0).scene(root)
    record = json.loads(path.read_text())
    del record["targets"]
    path.write_text(json.dumps(record))
    return path


def _scene_with_text_target(root: Path) -> Path:
    path = frame_id("test", 1).scene(root)
    record = json.loads(path.read_text())
    record["targets"]["steering"] = "left"
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("damage", [_scene_without_targets, _scene_with_text_target], ids=["missing", "text"])
def test_a_scene_file_with_bad_targets_is_named(
    inputs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], Path],
) -> None:
    model, truthset = inputs
    root = _copy(truthset, tmp_path)
    scene = damage(root)
    out = tmp_path / "out"
    refused(_attribute(model, root, out, "--count", "2"), f"{scene}: field 'targets'", capsys)
    assert not out.exists()


def _cityscapes(root: Path, name: str) -> Path:
    """A one-frame Cityscapes val split whose image file is called `name`."""
    frame = FrameId("val", "aachen", 0, 0)
    for path in (frame.image(root), frame.label_ids(root), frame.vehicle(root)):
        path.parent.mkdir(parents=True, exist_ok=True)
    image = frame.image(root).with_name(name)
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(image)
    Image.fromarray(np.full(SIZE, 7, np.uint8)).save(frame.label_ids(root))
    frame.vehicle(root).write_text(json.dumps({"speed": 1.0, "yawRate": 0.0, "gpsHeading": 0.0}))
    return image


def test_a_cityscapes_image_name_without_numbers_is_named(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = inputs
    image = _cityscapes(tmp_path / "cityscapes", "aachen_first_000000_leftImg8bit.png")
    out = tmp_path / "out"
    argv = _attribute(model, tmp_path / "cityscapes", out, "--split", "val")
    refused(argv, f"{image}: not a Cityscapes image name", capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--count", "0", "--count: must be 1 or more, got 0"),
        ("--count", "-3", "--count: must be 1 or more, got -3"),
        ("--device", "tpu", "device 'tpu': not a torch device"),
    ],
)
def test_attribute_flags_out_of_range_are_named(
    inputs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    named: str,
) -> None:
    model, truthset = inputs
    out = tmp_path / "out"
    refused(_attribute(model, truthset, out, flag, value), named, capsys)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: cuda is a valid device here")
@pytest.mark.parametrize("command", ["attribute", "profile"])
def test_cuda_without_a_gpu_is_named(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    model, truthset = inputs
    out = tmp_path / "out"
    argv = [
        command,
        "--model",
        str(model),
        "--truthset",
        str(truthset),
        "--out",
        str(out),
        "--device",
        "cuda",
    ]
    refused(argv, "device 'cuda': no CUDA GPU is available here", capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value", "named"), [("--limit", "0", "--limit"), ("--device", "tpu", "'tpu'")]
)
def test_profile_flags_out_of_range_are_named(
    inputs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    named: str,
) -> None:
    model, truthset = inputs
    out = tmp_path / "out"
    argv = ["profile", "--model", str(model), "--truthset", str(truthset), "--out", str(out), flag, value]
    refused(argv, named, capsys)
    assert not out.exists()


def test_a_config_that_is_not_text_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"\xff\xfe\x00name: binary")
    out = tmp_path / "out"
    refused(["run", "--config", str(config), "--out", str(out)], f"{config}: not valid YAML", capsys)
    assert not out.exists()


def test_a_model_spec_that_is_not_text_is_named(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, truthset = inputs
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"\xff\xfe\x00architecture: pilotnet")
    out = tmp_path / "out"
    refused(
        ["train", "--model", str(spec), "--truthset", str(truthset), "--out", str(out)], str(spec), capsys
    )
    assert not out.exists()
