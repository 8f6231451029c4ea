"""Cityscapes' coarse annotations as their own kind: chosen by name where gtFine also exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradsum.cli import main
from gradsum.errors import UnknownNameError
from gradsum.truthsets import KINDS, detect_kind, open_truthset
from gradsum.truthsets.layout import FrameId
from gradsum.truthsets.readers.cityscapes import CityscapesCoarseTruthSet, CityscapesTruthSet

#: coarse polygons of the same frames: road and sky only, with an unlabelled gap between them
COARSE_POLYGONS = [
    {"label": "sky", "polygon": [[0, 0], [15, 0], [15, 2], [0, 2]]},
    {"label": "road", "polygon": [[0, 5], [15, 5], [15, 7], [0, 7]]},
]
#: what cityscapesscripts renders from them: rows 0-2 sky (23), 3-4 unlabeled (0), 5-7 road (7)
COARSE_IDS = np.repeat(np.array([23, 23, 23, 0, 0, 7, 7, 7], dtype=np.uint8)[:, None], 16, axis=1)
FRAMES = [FrameId("val", "aachen", 0, 19), FrameId("val", "bremen", 1, 19)]


@pytest.fixture
def both(tmp_path: Path, trees: Any) -> Path:
    """val frames with gtFine (conftest's polygons) and gtCoarse; train_extra with gtCoarse only."""
    root = tmp_path / "cityscapes"
    for frame in FRAMES:
        trees.add_cityscapes_frame(root, frame)
        trees.add_cityscapes_frame(root, frame, annotation="gtCoarse", polygons=COARSE_POLYGONS)
    trees.add_cityscapes_frame(
        root, FrameId("train_extra", "erfurt", 0, 19), annotation="gtCoarse", polygons=COARSE_POLYGONS
    )
    return root


def test_named_kind_reads_the_coarse_ids_of_the_same_frames(both: Path, trees: Any) -> None:
    fine = open_truthset(both, "val")
    coarse = open_truthset(both, "val", kind="cityscapes-coarse")
    assert (fine.kind, coarse.kind) == ("cityscapes", "cityscapes-coarse")
    assert isinstance(coarse, CityscapesCoarseTruthSet) and isinstance(coarse, CityscapesTruthSet)
    assert coarse.parameters["annotation"] == "gtCoarse" and fine.parameters["annotation"] == "gtFine"
    assert len(coarse) == len(fine) == len(FRAMES)
    for index, frame in enumerate(FRAMES):
        sample = coarse[index]
        assert sample.meta["frame"] == fine[index].meta["frame"] == frame.stem
        np.testing.assert_array_equal(sample.image, fine[index].image)
        np.testing.assert_array_equal(sample.labels, COARSE_IDS)
        np.testing.assert_array_equal(coarse.label_map(index), COARSE_IDS)
        assert sample.meta["label"].endswith(f"{frame.stem}_gtCoarse_labelIds.png")
        for (row, col), class_id in trees.expected_pixels.items():
            assert fine[index].labels[row, col] == class_id
    # the default split, as for the fine kind, is val
    assert open_truthset(both, kind="cityscapes-coarse").split == "val"
    assert len(open_truthset(both, "train_extra", kind="cityscapes-coarse")) == 1


def test_detection_is_unchanged_where_gtfine_exists(both: Path, tmp_path: Path, trees: Any) -> None:
    assert detect_kind(both).name == "cityscapes"
    only_fine = tmp_path / "fine"
    trees.add_cityscapes_frame(only_fine, FRAMES[0])
    assert detect_kind(only_fine).name == "cityscapes"
    only_coarse = tmp_path / "coarse"
    trees.add_cityscapes_frame(only_coarse, FRAMES[0], annotation="gtCoarse", polygons=COARSE_POLYGONS)
    assert detect_kind(only_coarse).name == "cityscapes-coarse"
    # the fine kind, named, still opens a coarse-only folder (its own fallback)
    assert open_truthset(only_coarse, "val", kind="cityscapes").parameters["annotation"] == "gtCoarse"


def test_splits_are_the_coarse_ones(both: Path) -> None:
    kind = KINDS.get("cityscapes-coarse")
    assert kind.splits(both, None) == ["train", "train_extra", "val"]
    assert kind.default_split(both, None) == "val"


def test_gradsum_check_takes_the_kind(both: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(both), "--kind", "cityscapes-coarse", "--split", "val", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "cityscapes-coarse"
    # two frames of COARSE_IDS: 3 rows × 16 of sky, of road, and 2 rows unlabelled
    assert report["splits"][0]["class_pixels"] == {"unlabeled": 64, "road": 96, "sky": 96}
    assert main(["check", str(both), "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "cityscapes"
    with pytest.raises(
        UnknownNameError, match=r"unknown truth-set kind 'cityscapes-corse'.*cityscapes-coarse"
    ):
        open_truthset(both, "val", kind="cityscapes-corse")
