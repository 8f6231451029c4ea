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
from gradsum.truthsets.check import check_truthset, find_truthsets
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
    assert "unknown truth-set kind 'cityscape' for --kind (did you mean cityscapes?)" in report.problems[0]


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
