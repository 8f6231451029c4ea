"""`open_truthset(..., spec=)`, `default_split` and `require_labels`: built-in specs everywhere, a labelled
default split per kind, and unlabelled splits (Cityscapes' public test) refused up front."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import gradsum.cli
from gradsum.cli.commands import check as check_command
from gradsum.errors import GradSUMError, SpecError, TruthSetError
from gradsum.truthsets import ArrayTruthSet, default_split, open_truthset, require_labels
from gradsum.truthsets.check import check_truthset
from gradsum.truthsets.layout import FrameId
from gradsum.truthsets.spec import SPEC_FILE, builtin_specs
from gradsum.truthsets.synthetic import generate


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    """`gradsum` main with only `check`."""
    monkeypatch.setattr(gradsum.cli, "_commands", lambda: [check_command.COMMAND])
    return gradsum.cli.main


def _camvid_rgb(root: Path, split: str = "test") -> Path:
    for folder, array in [
        (root / split / "f.png", np.zeros((2, 2, 3), np.uint8)),
        (root / f"{split}_labels" / "f_L.png", np.full((2, 2, 3), (0, 0, 192), np.uint8)),  # Sidewalk
    ]:
        folder.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder)
    return root


def test_builtin_spec_by_name_or_file_and_default_split(tmp_path: Path) -> None:
    root = _camvid_rgb(tmp_path)
    spec_file = builtin_specs().get("camvid-rgb")
    for spec in ("camvid-rgb", spec_file, str(spec_file)):
        truthset = open_truthset(root, spec=spec)
        assert truthset.split == "test" and truthset[0].labels.tolist() == [[8, 8], [8, 8]]
    assert default_split(root, spec="camvid-rgb") == "test"
    assert default_split(root, spec="kitti") == "train"  # KITTI's only labelled split
    assert default_split(root, spec="camvid-original") == "all"


def test_unknown_spec_and_spec_with_another_kind_are_refused(tmp_path: Path) -> None:
    names = ", ".join(builtin_specs().names())
    with pytest.raises(SpecError, match=rf"did you mean camvid-rgb.*; valid: {re.escape(names)}"):
        open_truthset(tmp_path, "test", spec="camvid-rbg")
    with pytest.raises(TruthSetError, match="--spec 'kitti' with --kind 'cityscapes': only kind plugin"):
        open_truthset(tmp_path, "train", kind="cityscapes", spec="kitti")


def test_messages_name_the_spec_not_the_copied_file(tmp_path: Path) -> None:
    root = _camvid_rgb(tmp_path)
    shutil.copy(builtin_specs().get("camvid-rgb"), root / SPEC_FILE)
    Image.fromarray(np.full((2, 2, 3), (60, 40, 222), np.uint8)).save(root / "test_labels" / "f_L.png")
    with pytest.raises(
        TruthSetError, match=r"f_L\.png: colours not in class table 'camvid-rgb': \(60,40,222\)"
    ):
        open_truthset(root)[0]
    with pytest.raises(TruthSetError, match=r"split 'x' unknown to spec 'camvid-rgb' \(.*gradsum-truthset"):
        open_truthset(root, "x")


def test_check_with_spec_goes_through_open_truthset(
    tmp_path: Path, cli: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    root = _camvid_rgb(tmp_path, "val")
    assert cli(["check", str(root), "--spec", "camvid-rgb"]) == 0
    assert "val: 1 samples, 1 readable" in capsys.readouterr().out
    assert cli(["check", str(root), "--spec", "camvid-rbg"]) == 1
    assert "did you mean camvid-rgb" in capsys.readouterr().out


def _unlabelled_test_split(root: Path, trees: Any) -> Path:
    """A Cityscapes tree whose val is labelled and whose test labelIds are all 0, as in the public release."""
    trees.add_cityscapes_frame(root, FrameId("val", "lindau", 0, 19))
    for seq in range(3):
        frame = trees.add_cityscapes_frame(root, FrameId("test", "berlin", seq, 19))
        Image.fromarray(np.zeros((8, 16), np.uint8)).save(frame.label_ids(root))
    return root


def test_cityscapes_defaults_to_val_and_unlabelled_test_is_refused(tmp_path: Path, trees: Any) -> None:
    root = _unlabelled_test_split(tmp_path / "cs", trees)
    assert default_split(root) == "val" and open_truthset(root).split == "val"
    require_labels(open_truthset(root, "val"))
    test = open_truthset(root, "test")
    message = r"cs: split 'test' has no labels \(every label map probed is unlabeled/void, 3 read\); use --split val"
    with pytest.raises(TruthSetError, match=message):
        require_labels(test)
    with pytest.raises(TruthSetError, match=r"1 read\)"):
        require_labels(test, probe=1)
    # void-only ids other than 0 (ego vehicle 1, out of roi 3, license plate as unlabeled) count as no labels
    assert_no_labels = ArrayTruthSet(np.zeros((2, 2, 2, 3), np.uint8), np.array([[[1, 3]] * 2, [[0, 0]] * 2]))
    with pytest.raises(TruthSetError, match="split 'test' has no labels"):
        require_labels(assert_no_labels)
    require_labels(ArrayTruthSet(np.zeros((1, 1, 2, 3), np.uint8), np.array([[[0, 7]]])))
    with pytest.raises(GradSUMError, match="probe=0"):
        require_labels(test, probe=0)


def test_synthetic_default_split_is_test(tmp_path: Path) -> None:
    root = generate(tmp_path / "syn", count=3, size=(32, 64))
    assert default_split(root) == "test" and open_truthset(root).split == "test"
    require_labels(open_truthset(root))


def test_check_reports_the_unlabelled_split_as_not_usable(
    tmp_path: Path, trees: Any, cli: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    root = _unlabelled_test_split(tmp_path / "cs", trees)
    assert cli(["check", str(root), "--split", "test"]) == 1
    out = capsys.readouterr().out
    assert "NOT usable: " in out and "split 'test' has no labels" in out and "use --split val" in out
    assert "usable: no" in out
    # the whole tree stays usable through val; the summary still names test as not usable
    report = check_truthset(root)
    assert report.usable and [(s.split, s.usable) for s in report.splits] == [("val", True), ("test", False)]
    assert "split 'test' has no labels" in report.summary()
    assert report.to_dict()["splits"][1]["blocker"].endswith("use --split val")
