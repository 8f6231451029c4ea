"""A reader from outside the package, as docs/design.md's recipe writes one: its own module, one
`@register_reader`; once imported, `open_truthset`, `gradsum truthsets` and `gradsum check` know it."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import gradsum.cli
from gradsum.cli.commands import check as check_command
from gradsum.cli.commands import truthsets as truthsets_command
from gradsum.errors import TruthSetError
from gradsum.truthsets import KINDS, detect_kind, open_truthset

#: the user's module: a folder of `<split>.toy.npz` files, each with `images` and Cityscapes-id `labels`
TOY_READER = '''
from pathlib import Path

import numpy as np

from gradsum.errors import TruthSetError
from gradsum.truthsets import CITYSCAPES, Sample, SpecSource, TruthSet, register_reader

SUFFIX = ".toy.npz"


@register_reader("toy", description="arrays in <split>.toy.npz files (images, labels)", priority=30)
class ToyTruthSet(TruthSet):
    """One split of a toy folder: (N, H, W, 3) images and (N, H, W) Cityscapes ids in one .npz file."""

    def __init__(self, root: Path, split: str) -> None:
        super().__init__(root, split)
        path = root / f"{split}{SUFFIX}"
        if not path.is_file():
            raise TruthSetError(f"{path}: no such split file")
        with np.load(path) as arrays:
            self.images, self.labels = arrays["images"], arrays["labels"]

    @property
    def class_table(self):
        return CITYSCAPES

    @property
    def tasks(self) -> tuple[str, ...]:
        return ()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        return Sample(image=self.images[index], labels=self.labels[index], meta={"frame": f"toy{index}"})

    @staticmethod
    def detect(root: Path) -> bool:
        return any(root.glob(f"*{SUFFIX}"))

    @classmethod
    def open(cls, root: Path, split: str, spec: SpecSource) -> TruthSet:
        return cls(root, split)

    @staticmethod
    def default_split(root: Path, spec: SpecSource) -> str:
        return "test"

    @staticmethod
    def splits(root: Path, spec: SpecSource) -> list[str]:
        return sorted(path.name.removesuffix(SUFFIX) for path in root.glob(f"*{SUFFIX}"))
'''

#: two 2×3 frames: sky over road, and road over a car (Cityscapes ids 23, 7, 26)
LABELS = np.array([[[23, 23, 23], [7, 7, 7]], [[7, 7, 7], [26, 26, 7]]], dtype=np.uint8)


def _toy_folder(root: Path) -> Path:
    images = np.arange(LABELS.size * 3, dtype=np.uint8).reshape(*LABELS.shape, 3)
    root.mkdir(parents=True)
    for split in ("test", "train"):
        np.savez(root / f"{split}.toy.npz", images=images, labels=LABELS)
    return root


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The user's module, imported from a file outside the package; the kinds as they were afterwards."""
    monkeypatch.setattr(KINDS, "_entries", dict(KINDS._entries))  # undone when the test ends
    path = tmp_path / "toy_reader.py"
    path.write_text(TOY_READER)
    spec = importlib.util.spec_from_file_location("toy_reader", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], int]:
    """`gradsum` main with only the commands under test."""
    monkeypatch.setattr(gradsum.cli, "_commands", lambda: [check_command.COMMAND, truthsets_command.COMMAND])
    return gradsum.cli.main


def test_a_reader_from_outside_the_package_works_everywhere_a_built_in_one_does(
    toy: ModuleType, tmp_path: Path, cli: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    root = _toy_folder(tmp_path / "data" / "mine")
    assert detect_kind(root).name == "toy"
    truthset = open_truthset(root)
    assert isinstance(truthset, toy.ToyTruthSet)
    assert (truthset.kind, truthset.split, len(truthset)) == ("toy", "test", 2)
    np.testing.assert_array_equal(truthset.label_map(1), LABELS[1])
    assert open_truthset(root, "train", kind="toy").split == "train"

    assert cli(["truthsets", "--root", str(tmp_path / "data")]) == 0
    listed = capsys.readouterr().out
    assert "  toy          arrays in <split>.toy.npz files (images, labels)" in listed
    assert f"  {root}  [toy]  test 2, train 2" in listed

    assert cli(["check", str(root)]) == 0
    checked = capsys.readouterr().out.splitlines()
    assert checked[0] == f"{root} (toy)"
    # 12 pixels per split: 7 road (both images), 3 sky (the first), 2 car (the second)
    assert checked[1:6] == ["  test: 2 samples, 2 readable, targets: none", *_shares()]
    assert checked[-1] == "usable: yes (0 problems)"


def _shares() -> list[str]:
    header = f"    {'class':22s} {'pixels':>7s} {'images':>7s}"
    rows = [("road", 7 / 12, 1.0), ("sky", 3 / 12, 0.5), ("car", 2 / 12, 0.5)]
    return [header, *(f"    {name:22s} {share:7.2%} {images:7.2%}" for name, share, images in rows)]


def test_the_reader_is_gone_once_its_test_ends(tmp_path: Path) -> None:
    assert "toy" not in KINDS
    with pytest.raises(TruthSetError, match="not a truth set that any reader recognises"):
        detect_kind(_toy_folder(tmp_path / "mine"))


def test_a_reader_must_be_a_truth_set_class(toy: ModuleType) -> None:
    with pytest.raises(TypeError, match=r"@register_reader\('odd'\) decorates a TruthSet subclass"):
        toy.register_reader("odd", description="not a class")(object())
