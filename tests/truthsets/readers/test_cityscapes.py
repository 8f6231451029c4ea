"""Cityscapes reader: polygons → labelIds → reader round trip, trainIds view, steering proxy, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from gradsum.errors import TruthSetError
from gradsum.truthsets import detect_kind, open_truthset
from gradsum.truthsets.layout import FrameId
from gradsum.truthsets.readers.cityscapes import CityscapesTruthSet, to_train_ids


def test_round_trip_polygons_to_class_ids(cityscapes_root: Path, trees: Any) -> None:
    truthset = open_truthset(cityscapes_root, "val")
    assert detect_kind(cityscapes_root).name == "cityscapes"
    assert isinstance(truthset, CityscapesTruthSet)
    sample = truthset[0]
    for (row, col), expected in trees.expected_pixels.items():
        assert sample.labels[row, col] == expected, (row, col)
    assert sample.labels.dtype == np.uint8
    np.testing.assert_array_equal(sample.image, trees.rgb_image(seed=19))
    assert sample.meta["frame"] == "aachen_000000_000019"


def test_train_ids_view_uses_the_official_table(cityscapes_root: Path) -> None:
    truthset = CityscapesTruthSet(cityscapes_root, "val")
    train = truthset.train_ids(0)
    # sky 10, road 0, car 13, person 11; unlabeled background would be 255
    assert [train[r, c] for r, c in [(1, 5), (5, 5), (5, 11), (5, 1)]] == [10, 0, 13, 11]
    assert to_train_ids(np.array([0, 4, 33], dtype=np.uint8)).tolist() == [255, 255, 18]


def test_steering_proxy_is_curvature_and_slow_frames_are_dropped(cityscapes_root: Path) -> None:
    truthset = CityscapesTruthSet(cityscapes_root, "val")
    assert [f.stem for f in truthset.frames] == ["aachen_000000_000019", "bremen_000002_000019"]
    assert truthset.tasks == ("steering",)
    # yawRate is positive turning left (ISO 8855), steering positive to the right: −yawRate / speed
    np.testing.assert_allclose(truthset.targets("steering"), [-0.5 / 10.0, 0.2 / 4.0])
    assert truthset[1].targets["steering"] == pytest.approx(0.05)


def test_slow_frames_kept_and_flagged_when_asked(cityscapes_root: Path) -> None:
    truthset = CityscapesTruthSet(cityscapes_root, "val", drop_slow=False)
    assert len(truthset) == 3
    slow = truthset[1]
    assert slow.meta["slow"] is True and truthset[0].meta["slow"] is False
    # speed 0.5 m/s is floored at min_speed = 1 m/s so the curvature stays finite
    assert slow.targets["steering"] == pytest.approx(-0.2)


def test_split_without_vehicle_files_has_no_task(cityscapes_root: Path) -> None:
    for frame in (FrameId("train", "zurich", 0, 19), FrameId("train", "zurich", 1, 19)):
        frame.vehicle(cityscapes_root).unlink()
    truthset = open_truthset(cityscapes_root, "train")
    assert truthset.tasks == () and truthset[1].targets == {}
    with pytest.raises(TruthSetError, match="task 'steering'"):
        truthset.targets("steering")


def test_one_missing_vehicle_file_fails_that_frame_naming_it(cityscapes_root: Path) -> None:
    FrameId("train", "zurich", 1, 19).vehicle(cityscapes_root).unlink()
    truthset = open_truthset(cityscapes_root, "train")
    assert truthset.tasks == ("steering",)
    # 5.0 m/s, yaw 0: curvature 0
    assert truthset[0].targets == {"steering": 0.0}
    message = r"vehicle/train/zurich/zurich_000001_000019_vehicle\.json: vehicle file is missing \(1 of 2"
    with pytest.raises(TruthSetError, match=message):
        truthset[1]
    with pytest.raises(TruthSetError, match=message):
        truthset.targets("steering")


def test_gt_coarse_and_data_loader(tmp_path: Path, trees: Any) -> None:
    root = tmp_path / "cs"
    for seq in range(2):
        trees.add_cityscapes_frame(root, FrameId("train_extra", "erfurt", seq, 19), annotation="gtCoarse")
    truthset = open_truthset(root, "train_extra")
    assert truthset.parameters["annotation"] == "gtCoarse"
    batch = next(iter(DataLoader(truthset.torch_dataset(), batch_size=2, num_workers=1)))
    assert batch["labels"][:, 5, 11].tolist() == [26, 26]
    assert float(batch["image"].max()) <= 1.0


def test_vehicle_file_without_speed_names_file_and_field(cityscapes_root: Path) -> None:
    frame = FrameId("val", "aachen", 0, 19)
    frame.vehicle(cityscapes_root).write_text(json.dumps({"yawRate": 0.1}))
    truthset = CityscapesTruthSet(cityscapes_root, "val")
    with pytest.raises(TruthSetError, match=r"aachen_000000_000019_vehicle\.json: field 'speed' is missing"):
        truthset[0]
    assert truthset[1].targets["steering"] == pytest.approx(0.05)


def _save(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f, r: f.label_ids(r).unlink(), r"_gtFine_labelIds\.png: label file is missing"),
        (lambda f, r: f.image(r).write_bytes(b"not a png"), r"_leftImg8bit\.png: image file is corrupt"),
        (lambda f, r: _save(f.label_ids(r), np.zeros((4, 4), np.uint8)), "label size 4x4 differs"),
        (lambda f, r: _save(f.label_ids(r), np.full((8, 16), 40, np.uint8)), r"label ids not in .*\[40\]"),
    ],
    ids=["missing-label", "corrupt-image", "size-mismatch", "unknown-id"],
)
def test_bad_frames_raise_with_file_name(cityscapes_root: Path, damage, message: str) -> None:
    frame = FrameId("val", "aachen", 0, 19)
    damage(frame, cityscapes_root)
    truthset = CityscapesTruthSet(cityscapes_root, "val")
    with pytest.raises(TruthSetError, match=message):
        truthset[0]


def test_empty_or_missing_split_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(TruthSetError, match=r"leftImg8bit/val: no \*_leftImg8bit\.png images"):
        CityscapesTruthSet(tmp_path, "val")
    with pytest.raises(TruthSetError, match=r"leftImg8bit/test: no such split folder \(splits found: val\)"):
        CityscapesTruthSet(tmp_path, "test")
    with pytest.raises(TruthSetError, match="annotation 'gtMedium'"):
        CityscapesTruthSet(tmp_path, "val", annotation="gtMedium")
