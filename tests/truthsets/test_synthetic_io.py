"""Writer, reader and CLI of the synthetic set: determinism, atomicity, layout, DataLoader, bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gradsum.cli import main
from gradsum.errors import GradSUMError, TruthSetError
from gradsum.fileio import sha256_file
from gradsum.truthsets import detect_kind, open_truthset
from gradsum.truthsets.labels import cityscapes_palette
from gradsum.truthsets.layout import MANIFEST, FrameId
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate, render
from gradsum.truthsets.synthetic import writer as synthetic_writer
from gradsum.truthsets.synthetic.scene import STEERING_SCALE

SIZE = (48, 96)


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synthetic") / "set", count=20, seed=3, size=SIZE, shortcut=0.8)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    tmp_path: Path, synthetic_root: Path
) -> None:
    again = generate(tmp_path / "again", count=20, seed=3, size=SIZE, shortcut=0.8, workers=2)
    other = generate(tmp_path / "other", count=20, seed=4, size=SIZE, shortcut=0.8)
    reference = _checksums(synthetic_root)
    assert _checksums(again) == reference
    differing = {name for name, digest in _checksums(other).items() if reference.get(name) != digest}
    assert len(differing) >= len(reference) - 2  # the few constant files aside, everything differs


def test_layout_is_cityscapes_with_vehicle_scene_and_manifest(synthetic_root: Path) -> None:
    manifest = json.loads((synthetic_root / MANIFEST).read_text())
    assert manifest["kind"] == "synthetic" and manifest["format_version"] == 2
    assert {k: v["count"] for k, v in manifest["splits"].items()} == {"train": 16, "val": 2, "test": 2}
    assert len({v["seed"] for v in manifest["splits"].values()}) == 3
    assert manifest["splits"]["train"]["shortcut"] == 0.8 and manifest["splits"]["test"]["shortcut"] == 0.0
    frame = FrameId("val", "synth", 0, 1)
    assert (
        frame.image(synthetic_root)
        == synthetic_root / "leftImg8bit/val/synth/synth_000000_000001_leftImg8bit.png"
    )
    image = np.asarray(Image.open(frame.image(synthetic_root)))
    labels = np.asarray(Image.open(frame.label_ids(synthetic_root)))
    colour = np.asarray(Image.open(frame.color(synthetic_root)))
    assert image.shape == (*SIZE, 3) and labels.shape == SIZE
    assert np.array_equal(colour, cityscapes_palette()[labels])
    vehicle = json.loads(frame.vehicle(synthetic_root).read_text())
    scene = json.loads(frame.scene(synthetic_root).read_text())
    # Cityscapes' yaw rate is positive turning left, steering positive to the right
    assert vehicle["yawRate"] / vehicle["speed"] == pytest.approx(
        -scene["targets"]["steering"] * STEERING_SCALE
    )
    assert set(scene["targets"]) == {"steering", "obstacle"}


def test_reader_serves_the_truthset_api(synthetic_root: Path) -> None:
    assert detect_kind(synthetic_root).name == "synthetic"
    train = open_truthset(synthetic_root, "train")
    assert isinstance(train, SyntheticTruthSet) and len(train) == 16
    assert train.tasks == ("steering", "obstacle")
    assert train.parameters["seed"] == 3 and train.parameters["size"] == list(SIZE)
    assert set(train.class_table.ids) == {7, 8, 11, 17, 20, 21, 22, 23, 24, 26}
    sample = train[4]
    rerendered = render(train.scene(4))
    assert np.array_equal(sample.image, rerendered.image)
    assert np.array_equal(sample.labels, rerendered.labels)
    assert sample.targets == rerendered.targets
    assert sample.meta["frame"] == "synth_000000_000004" and Path(sample.meta["scene_file"]).exists()
    assert train.targets("steering")[4] == pytest.approx(sample.targets["steering"])
    assert train.targets("obstacle").tolist() == [train[i].targets["obstacle"] for i in range(len(train))]
    with pytest.raises(IndexError):
        train[16]


def test_reader_counterfactual_matches_the_stored_scene(synthetic_root: Path) -> None:
    truthset = open_truthset(synthetic_root, "train")
    assert isinstance(truthset, SyntheticTruthSet)
    same = truthset.counterfactual(2)
    assert np.array_equal(same.image, truthset[2].image)
    bent = truthset.counterfactual(2, curvature=0.0, heading=0.0, offset=0.0)
    assert bent.targets["steering"] == 0.0
    assert bent.meta["counterfactual"]["changes"] == {"curvature": 0.0, "heading": 0.0, "offset": 0.0}


def test_dataloader_with_two_workers(synthetic_root: Path) -> None:
    truthset = open_truthset(synthetic_root, "train")
    loader = DataLoader(truthset.torch_dataset(), batch_size=8, num_workers=2, shuffle=False)
    batches = list(loader)
    steering = torch.cat([b["targets"]["steering"] for b in batches]).numpy()
    assert np.allclose(steering, truthset.targets("steering"))
    first = batches[0]["image"]
    assert first.dtype == torch.float32 and float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(first[0], torch.from_numpy(truthset[0].image).permute(2, 0, 1).float() / 255.0)


def test_interrupted_generate_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = synthetic_writer.write_scene

    def failing(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(synthetic_writer, "write_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "set", count=10, seed=0, size=SIZE)
    assert list(tmp_path.iterdir()) == []


def test_existing_set_is_kept_unless_overwrite(tmp_path: Path) -> None:
    root = generate(tmp_path / "set", count=3, seed=0, size=SIZE)
    before = _checksums(root)
    with pytest.raises(TruthSetError, match="overwrite"):
        generate(root, count=3, seed=1, size=SIZE)
    assert _checksums(root) == before
    generate(root, count=3, seed=1, size=SIZE, overwrite=True)
    assert _checksums(root) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_reader_names_missing_files_and_unknown_splits(tmp_path: Path) -> None:
    root = generate(tmp_path / "set", count=3, seed=0, size=SIZE)
    with pytest.raises(TruthSetError, match="no split 'dev'"):
        SyntheticTruthSet(root, "dev")
    truthset = SyntheticTruthSet(root, "test")
    image = Path(truthset[0].meta["image_file"])
    image.unlink()
    with pytest.raises(TruthSetError, match=image.name):
        truthset[0]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--count", "2"], "--count"),
        (["--size", "96by192"], "--size"),
        (["--size", "8x16"], "--size"),
        (["--shortcut", "1.5"], "--shortcut"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_cli_rejects_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], named: str
) -> None:
    assert main(["generate", "--out", str(tmp_path / "set"), *argv]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1
    assert not (tmp_path / "set").exists()


def test_cli_generates_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    args = ["generate", "--out", str(out), "--count", "3", "--size", "32x64", "--seed", "1"]
    assert main(args) == 0
    assert str(out) in capsys.readouterr().out
    assert json.loads((out / MANIFEST).read_text())["parameters"]["size"] == [32, 64]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_library_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(GradSUMError, match="splits="):
        generate(tmp_path / "x", count=10, splits=(0.5, 0.5, 0.5))
    with pytest.raises(GradSUMError, match="shortcut="):
        generate(tmp_path / "x", count=10, shortcut=-0.1)
