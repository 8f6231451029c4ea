"""`check_truthset` collects every problem; `gradsum check` and `gradsum truthsets` exit codes and listings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import gradsum.cli
from gradsum.cli.commands import check as check_command
from gradsum.cli.commands import truthsets as truthsets_command
from gradsum.truthsets import KINDS, open_truthset
from gradsum.truthsets.check import (
    RARE_IMAGE_SHARE,
    VOID_HEAVY_SHARE,
    ClassGap,
    SplitCheck,
    check_truthset,
    find_truthsets,
)
from gradsum.truthsets.layout import FrameId
from gradsum.truthsets.spec import SPEC_FILE


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`gradsum` main with only the commands under test, so unrelated commands cannot break these tests."""
    monkeypatch.setattr(gradsum.cli, "_commands", lambda: [check_command.COMMAND, truthsets_command.COMMAND])
    return gradsum.cli.main


def _damage(root: Path) -> None:
    first, second, third = (
        FrameId("val", "aachen", 0, 19),
        FrameId("val", "bremen", 2, 19),
        FrameId("train", "zurich", 0, 19),
    )
    first.label_ids(root).unlink()
    second.image(root).write_bytes(b"garbage")
    third.vehicle(root).write_text(json.dumps({"yawRate": 0.0}))
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(FrameId("train", "zurich", 1, 19).label_ids(root))


def test_good_cityscapes_tree_is_usable_with_real_histogram(cityscapes_root: Path) -> None:
    report = check_truthset(cityscapes_root)
    assert report.usable and report.kind == "cityscapes" and report.all_problems == []
    assert {s.split: s.size for s in report.splits} == {"train": 2, "val": 2}
    val = next(s for s in report.splits if s.split == "val")
    labels = np.stack([sample.labels for sample in open_truthset(cityscapes_root, "val")])
    assert val.class_pixels["road"] == int((labels == 7).sum()) > 0
    assert val.class_pixels["car"] == int((labels == 26).sum()) > 0
    assert sum(val.class_pixels.values()) == labels.size and val.tasks == ("steering",)
    assert "usable: yes (0 problems)" in report.summary()


def test_every_problem_is_reported_with_its_file(cityscapes_root: Path) -> None:
    _damage(cityscapes_root)
    report = check_truthset(cityscapes_root)
    assert not report.usable
    problems = "\n".join(report.all_problems)
    assert len(report.all_problems) == 4, problems
    assert "aachen_000000_000019_gtFine_labelIds.png: label file is missing" in problems
    assert "bremen_000002_000019_leftImg8bit.png: image file is corrupt" in problems
    assert "zurich_000000_000019_vehicle.json: field 'speed' is missing" in problems
    assert "zurich_000001_000019_gtFine_labelIds.png: label size 3x3 differs" in problems
    assert check_truthset(cityscapes_root, split="val").splits[0].readable == 0


def test_empty_folder_and_unknown_kind_are_problems(tmp_path: Path) -> None:
    report = check_truthset(tmp_path)
    assert not report.usable and "not a truth set" in report.problems[0]
    report = check_truthset(tmp_path, kind="cityscape")
    assert (
        "unknown truth-set kind 'cityscape' for --kind (did you mean cityscapes, cityscapes-coarse?)"
        in report.problems[0]
    )


def test_check_exit_codes(
    cityscapes_root: Path, tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["check", str(cityscapes_root), "--split", "val"]) == 0
    assert "val: 2 samples, 2 readable, targets: steering" in capsys.readouterr().out
    assert cli(["check", str(cityscapes_root), "--split", "nope"]) == 1
    assert "no such split folder" in capsys.readouterr().out
    _damage(cityscapes_root)
    assert cli(["check", str(cityscapes_root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] is False and len(report["problems"]) == 4
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / SPEC_FILE).write_text("name: x\nimages: '*.png'\n")
    assert cli(["check", str(tmp_path / "bad")]) == 1
    assert "field 'labels' is missing" in capsys.readouterr().out


def test_check_with_builtin_spec(tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(
        _mkdir(tmp_path / "training" / "image_2") / "000000_10.png"
    )
    Image.fromarray(np.full((4, 6), 7, np.uint8)).save(
        _mkdir(tmp_path / "training" / "semantic") / "000000_10.png"
    )
    assert cli(["check", str(tmp_path), "--spec", "kitti"]) == 0
    assert "road" in capsys.readouterr().out
    assert cli(["check", str(tmp_path), "--spec", "kitti", "--split", "test"]) == 1


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_truthsets_lists_kinds_specs_and_found_sets(
    cityscapes_root: Path, tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes").mkdir()
    assert cli(["truthsets", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in [*KINDS.names(), "kitti", "bdd100k", "camvid"]:
        assert f"  {name} " in out
    assert f"{cityscapes_root}  [cityscapes]  train 2, val 2" in out
    assert [(f.path.name, f.kind) for f in find_truthsets(tmp_path)] == [("cityscapes", "cityscapes")]


# Hand-drawn 8x16 labelIds maps (128 pixels each) of the statistics tree below, by Cityscapes id:
# 0 unlabeled (void), 7 road, 23 sky, 28 bus.
SKY, ROAD, BUS, UNLABELED = 23, 7, 28, 0


def _rows(*bands: tuple[int, int]) -> np.ndarray:
    """An 8x16 map stacked from (id, rows) bands, top to bottom."""
    return np.concatenate([np.full((rows, 16), cid, np.uint8) for cid, rows in bands])


#: split → frame → labels; train holds the only bus, and a frame 75 % void
STATISTICS_TREE = {
    "train": {
        FrameId("train", "zurich", 0, 19): _rows((SKY, 4), (ROAD, 4)),
        FrameId("train", "zurich", 1, 19): _rows((UNLABELED, 6), (BUS, 2)),
    },
    "val": {
        FrameId("val", "aachen", 0, 19): _rows((SKY, 4), (ROAD, 4)),
        FrameId("val", "aachen", 1, 19): _rows((UNLABELED, 2), (SKY, 2), (ROAD, 4)),
    },
}


@pytest.fixture
def statistics_root(tmp_path: Path, trees: Any) -> Path:
    root = tmp_path / "stats"
    for frames in STATISTICS_TREE.values():
        for frame, labels in frames.items():
            trees.add_cityscapes_frame(root, frame, {"speed": 10.0, "yawRate": 0.1})
            trees.write_png(frame.label_ids(root), labels)
    return root


def test_label_statistics_match_the_hand_drawn_maps(statistics_root: Path) -> None:
    report = check_truthset(statistics_root)
    assert report.usable and report.all_problems == []
    train, val = (next(s for s in report.splits if s.split == name) for name in ("train", "val"))
    # train: 64 sky + 64 road | 96 unlabeled + 32 bus, of 256 pixels
    assert train.pixel_shares == {"unlabeled": 0.375, "road": 0.25, "sky": 0.25, "bus": 0.125}
    assert train.image_frequencies == {"unlabeled": 0.5, "road": 0.5, "sky": 0.5, "bus": 0.5}
    assert train.void_share == 0.375 and train.void_median == 0.375 and train.void_max == 0.75
    heavy = str(FrameId("train", "zurich", 1, 19).label_ids(statistics_root))
    assert train.void_heavy == [heavy] and VOID_HEAVY_SHARE < 0.75
    # val: 64 sky + 64 road | 32 unlabeled + 32 sky + 64 road
    assert val.pixel_shares == {"unlabeled": 0.125, "road": 0.5, "sky": 0.375}
    assert val.image_frequencies == {"unlabeled": 0.5, "road": 1.0, "sky": 1.0}
    assert val.void_share == 0.125 and val.void_median == 0.125 and val.void_max == 0.25
    assert val.void_heavy == [] and val.rare_classes == [] == train.rare_classes
    # unlabeled is in train only too, but void: not a gap
    assert report.class_gaps == [ClassGap("bus", {"train": 1}, ("val",))]
    assert report.warnings == [
        "train: 1 of 2 images are over 50% void: zurich_000001_000019_gtFine_labelIds.png",
        "class 'bus' is in 1 train image(s) and in no val image",
    ]


def test_label_statistics_in_summary_and_json(
    statistics_root: Path, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["check", str(statistics_root)]) == 0  # warnings leave the set usable
    out = capsys.readouterr().out
    assert "    bus                     12.50%  50.00%" in out
    assert (
        "    void 37.50% of pixels; per image median 37.50%, max 75.00%; over 50% void in 1 of 2 images"
        in out
    )
    assert "warnings: 2\n" in out and "  - class 'bus' is in 1 train image(s) and in no val image" in out
    assert cli(["check", str(statistics_root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    train = next(s for s in report["splits"] if s["split"] == "train")
    assert train["class_images"] == {"unlabeled": 1, "road": 1, "sky": 1, "bus": 1}
    assert train["pixel_share"]["bus"] == 0.125 and train["image_frequency"]["bus"] == 0.5
    assert train["void"]["share"] == 0.375 and train["void"]["image_max"] == 0.75
    assert train["void"]["heavy_images"][0].endswith("zurich_000001_000019_gtFine_labelIds.png")
    assert report["class_gaps"] == [{"class": "bus", "images": {"train": 1}, "missing": ["val"]}]
    assert len(report["warnings"]) == 2


def test_rare_classes_are_flagged_below_the_cutoff_and_void_ones_never() -> None:
    readable = 200  # one image in 200 is 0.5 %, under the 1 % cut-off; two are exactly 1 %, not under
    split = SplitCheck(
        "train",
        readable,
        (),
        readable=readable,
        class_images={"bus": 1, "train": 2, "road": 200, "unlabeled": 1},
    )
    assert 1 / readable < RARE_IMAGE_SHARE == 2 / readable
    assert split.rare_classes == ["bus"]
    assert split.warnings == ["train: class 'bus' is rare: in 1 of 200 images (under 1%)"]


def test_split_without_labels_gets_no_warnings_and_no_gaps(tmp_path: Path, trees: Any) -> None:
    root = tmp_path / "cs"
    trees.add_cityscapes_frame(root, FrameId("val", "aachen", 0, 19), {"speed": 10.0, "yawRate": 0.1})
    blank = trees.add_cityscapes_frame(
        root, FrameId("test", "berlin", 0, 19), {"speed": 10.0, "yawRate": 0.1}
    )
    trees.write_png(blank.label_ids(root), np.zeros((8, 16), np.uint8))
    report = check_truthset(root)
    test = next(s for s in report.splits if s.split == "test")
    assert test.blocker is not None and test.void_share == 1.0 and test.void_max == 1.0
    assert test.warnings == [] and report.class_gaps == [] and report.warnings == []
