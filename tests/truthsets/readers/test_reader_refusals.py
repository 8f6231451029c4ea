"""Bad truth-set input: each case gives one TruthSetError naming the file (or folder) and what is wrong,
from the reader and from `gradsum check` (a non-zero exit); odd but valid paths work for every reader."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import gradsum.cli
from gradsum.cli.commands import check as check_command
from gradsum.errors import TruthSetError
from gradsum.truthsets import open_truthset
from gradsum.truthsets.layout import FrameId
from gradsum.truthsets.spec import SPEC_FILE
from gradsum.truthsets.synthetic import generate

FRAME = FrameId("val", "aachen", 0, 19)
#: the other val frame that survives the slow-frame filter (see conftest's `cityscapes_root`)
OTHER = FrameId("val", "bremen", 2, 19)
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    """`gradsum` main with only `check`, so unrelated commands cannot break these tests."""
    monkeypatch.setattr(gradsum.cli, "_commands", lambda: [check_command.COMMAND])
    return gradsum.cli.main


def _save(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


#: damage to FRAME of a good tree → (the file it names, what the message must say)
DAMAGE: dict[str, tuple[Callable[[Path], object], Callable[[Path], Path], str]] = {
    "truncated-label": (
        lambda r: _truncate(FRAME.label_ids(r)),
        FRAME.label_ids,
        "label file is corrupt or unreadable",
    ),
    "zero-byte-image": (
        lambda r: FRAME.image(r).write_bytes(b""),
        FRAME.image,
        r"image file is empty \(0 bytes\)",
    ),
    "wrong-size-label": (
        lambda r: _save(FRAME.label_ids(r), np.zeros((4, 4), np.uint8)),
        FRAME.label_ids,
        r"label size 4x4 differs from image aachen_000000_000019_leftImg8bit\.png size 16x8",
    ),
    "unknown-ids": (
        lambda r: _save(FRAME.label_ids(r), np.full((8, 16), 40, np.uint8)),
        FRAME.label_ids,
        r"label ids not in class table 'cityscapes': \[40\]",
    ),
    "grey-image": (
        lambda r: _save(FRAME.image(r), np.zeros((8, 16), np.uint8)),
        FRAME.image,
        r"image mode 'L' \(greyscale\), expected 8-bit RGB",
    ),
    "alpha-image": (
        lambda r: _save(FRAME.image(r), np.zeros((8, 16, 4), np.uint8)),
        FRAME.image,
        r"image mode 'RGBA' \(RGB with alpha\), expected 8-bit RGB",
    ),
    "missing-vehicle": (
        lambda r: FRAME.vehicle(r).unlink(),
        FRAME.vehicle,
        r"vehicle file is missing \(2 of 3 frames of split 'val' have theirs\)",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_bad_cityscapes_frame_is_one_error_from_reader_and_check(
    cityscapes_root: Path, cli: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    damage, named, what = DAMAGE[case]
    damage(cityscapes_root)
    message = rf"{re.escape(str(named(cityscapes_root)))}: {what}"
    truthset = open_truthset(cityscapes_root, "val")
    with pytest.raises(TruthSetError, match=message):
        truthset[0]
    assert truthset[1].meta["frame"] == OTHER.stem  # the other frame still reads
    assert cli(["check", str(cityscapes_root), "--split", "val"]) == 1
    out = capsys.readouterr().out
    assert "usable: no (1 problems)" in out
    assert len(re.findall(message, out)) == 1, out


def test_bad_plugin_image_and_label_name_the_file(
    tmp_path: Path, cli: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / SPEC_FILE).write_text(
        json.dumps(
            {
                "name": "mine",
                "images": "im/*.png",
                "labels": "lb/{stem}.png",
                "encoding": "id8",
                "classes": "cityscapes",
            }
        )
    )
    for stem in ("a", "b", "c"):
        (tmp_path / "im").mkdir(exist_ok=True)
        (tmp_path / "lb").mkdir(exist_ok=True)
        _save(tmp_path / "im" / f"{stem}.png", np.zeros((2, 3, 3), np.uint8))
        _save(tmp_path / "lb" / f"{stem}.png", np.full((2, 3), 7, np.uint8))
    _save(tmp_path / "im" / "a.png", np.zeros((2, 3, 2), np.uint8))  # grey with alpha
    (tmp_path / "lb" / "b.png").write_bytes(b"")
    truthset = open_truthset(tmp_path)
    assert truthset.split == "all" and truthset[2].labels.tolist() == [[7, 7, 7], [7, 7, 7]]
    grey = rf"{re.escape(str(tmp_path / 'im' / 'a.png'))}: image mode 'LA' \(greyscale with alpha\)"
    empty = rf"{re.escape(str(tmp_path / 'lb' / 'b.png'))}: label file is empty \(0 bytes\)"
    for index, message in [(0, grey), (1, empty)]:
        with pytest.raises(TruthSetError, match=message):
            truthset[index]
    assert cli(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "usable: no (2 problems)" in out and re.search(grey, out) and re.search(empty, out)


def test_empty_split_is_one_error(
    cityscapes_root: Path, tmp_path: Path, cli: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    for frame in (FrameId("val", "aachen", 0, 19), FrameId("val", "aachen", 1, 19), OTHER):
        frame.image(cityscapes_root).unlink()
    message = r"leftImg8bit/val: no \*_leftImg8bit\.png images"
    with pytest.raises(TruthSetError, match=message):
        open_truthset(cityscapes_root, "val")
    assert cli(["check", str(cityscapes_root), "--split", "val"]) == 1
    assert len(re.findall(message, capsys.readouterr().out)) == 1
    (tmp_path / "plug" / "im").mkdir(parents=True)
    (tmp_path / "plug" / SPEC_FILE).write_text(
        "name: mine\nimages: 'im/*.png'\nlabels: 'lb/{stem}.png'\nencoding: id8\nclasses: cityscapes\n"
    )
    with pytest.raises(TruthSetError, match=r"no images match 'im/\*\.png' \(field 'images' of spec 'mine'"):
        open_truthset(tmp_path / "plug")


@pytest.mark.skipif(IS_ROOT, reason="root ignores folder permissions")
def test_unreadable_folder_is_named(
    cityscapes_root: Path, tmp_path: Path, cli: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    city = cityscapes_root / "leftImg8bit" / "val" / "aachen"
    city.chmod(0)
    try:
        message = rf"{re.escape(str(city))}: not readable \(Permission denied\)"
        with pytest.raises(TruthSetError, match=message):
            open_truthset(cityscapes_root, "val")
        assert cli(["check", str(cityscapes_root), "--split", "val"]) == 1
        assert len(re.findall(message, capsys.readouterr().out)) == 1
        cityscapes_root.chmod(0)
        with pytest.raises(TruthSetError, match=rf"{re.escape(str(cityscapes_root))}: not readable"):
            open_truthset(cityscapes_root, "val")
    finally:
        cityscapes_root.chmod(0o755)
        city.chmod(0o755)
    images = tmp_path / "kitti" / "training" / "image_2"
    _mkpng(images / "0.png", np.zeros((2, 3, 3), np.uint8))
    images.chmod(0)
    try:
        with pytest.raises(
            TruthSetError, match=rf"{re.escape(str(images))}: not readable \(Permission denied\)"
        ):
            open_truthset(tmp_path / "kitti", spec="kitti")
    finally:
        images.chmod(0o755)


ODD = "mes données é"


def test_paths_with_spaces_and_non_ascii_work_for_every_reader(tmp_path: Path, trees: Any) -> None:
    cityscapes = tmp_path / ODD / "cityscapes"
    trees.add_cityscapes_frame(cityscapes, FrameId("val", "münchen", 0, 19), {"speed": 5.0, "yawRate": 0.5})
    sample = open_truthset(cityscapes)[0]
    assert sample.meta["city"] == "münchen" and sample.targets["steering"] == pytest.approx(-0.1)
    for (row, col), expected in trees.expected_pixels.items():
        assert sample.labels[row, col] == expected

    plugin = tmp_path / ODD / "kitti set"
    _mkpng(plugin / "training" / "image_2" / "0 é.png", np.zeros((2, 3, 3), np.uint8))
    _mkpng(plugin / "training" / "semantic" / "0 é.png", np.full((2, 3), 26, np.uint8))
    assert open_truthset(plugin, spec="kitti")[0].labels.tolist() == [[26] * 3] * 2

    synthetic = generate(tmp_path / ODD / "synthétique", count=3, size=(32, 64))
    truthset = open_truthset(synthetic)
    assert truthset.split == "test" and truthset[0].image.shape == (32, 64, 3)


def _mkpng(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(path, array)
