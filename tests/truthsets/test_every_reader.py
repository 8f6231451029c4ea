"""The reader contract, over every registered truth-set kind: on a tiny generated folder of its kind a
reader is detected, opens its default split, reports its length and splits, and serves (H, W, 3) uint8
images with (H, W) uint8 Cityscapes label ids equal to the files it read.

A new reader adds one row to `FIXTURES`; `test_every_reader_has_a_fixture` fails until it does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradsum.truthsets import KINDS, detect_kind, open_truthset
from gradsum.truthsets.labels import CITYSCAPES
from gradsum.truthsets.layout import MANIFEST, FrameId
from gradsum.truthsets.readers.pseudo import (
    FrameRecord,
    PseudoManifest,
    SegmenterRecord,
    SplitRecord,
    confidence_path,
)
from gradsum.truthsets.spec import SPEC_FILE
from gradsum.truthsets.synthetic import generate
from gradsum.truthsets.synthetic.writer import frame_id


@dataclass(frozen=True)
class Fixture:
    """A tiny folder of one kind and what its reader must report on it."""

    root: Path
    default_split: str
    #: the reader's split names, in its order
    splits: list[str]
    #: samples in the default split
    length: int
    image: np.ndarray  # sample 0's image, as stored
    labels: np.ndarray  # sample 0's Cityscapes ids, as worked out by hand or read from the stored file


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _cityscapes(tmp_path: Path, request: pytest.FixtureRequest) -> Fixture:
    """The `cityscapes_root` tree (conftest; val keeps 2 of its 3 frames, one is too slow) and a test frame."""
    root = request.getfixturevalue("cityscapes_root")
    request.getfixturevalue("trees").add_cityscapes_frame(root, FrameId("test", "berlin", 0, 19))
    frame = FrameId("val", "aachen", 0, 19)
    return Fixture(
        root,
        "val",
        ["train", "val", "test"],
        2,
        _png(frame.image(root)),
        _png(frame.label_ids(root)),  # cityscapesscripts' own rendering of the polygons
    )


def _cityscapes_coarse(tmp_path: Path, request: pytest.FixtureRequest) -> Fixture:
    """Only coarse annotations (gtCoarse/, conftest's polygons) for train, train_extra and two val frames."""
    root = tmp_path / "cityscapes-coarse"
    add = request.getfixturevalue("trees").add_cityscapes_frame
    frames = [
        FrameId(s, "erfurt", n, 19) for s, n in [("train", 0), ("train_extra", 0), ("val", 0), ("val", 1)]
    ]
    for frame in frames:
        add(root, frame, annotation="gtCoarse")
    frame = frames[2]
    return Fixture(
        root,
        "val",
        ["train", "train_extra", "val"],
        2,
        _png(frame.image(root)),
        _png(frame.label_ids(root, "gtCoarse")),
    )


#: own ids 0..2 of the plug-in fixture and the Cityscapes ids its spec maps them to by hand
PLUGIN_LABELS = np.array([[2, 2, 2], [1, 0, 1]], dtype=np.uint8)
PLUGIN_AS_CITYSCAPES = np.array([[23, 23, 23], [7, 0, 7]], dtype=np.uint8)  # sky, road, unlabeled


def _plugin(tmp_path: Path, request: pytest.FixtureRequest) -> Fixture:
    """Images and own-id labels in per-split folders, described by the folder's own spec."""
    root = tmp_path / "plugin"
    image = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    for split, stems in {"train": ["a", "b"], "test": ["c"]}.items():
        for stem in stems:
            for folder, array in [("images", image), ("labels", PLUGIN_LABELS)]:
                (root / folder / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / folder / split / f"{stem}.png")
    spec = {
        "name": "tiny",
        "images": "images/{split}/*.png",
        "labels": "labels/{split}/{stem}.png",
        "encoding": "id8",
        "splits": ["train", "test"],
        "classes": [
            {"id": 0, "name": "void", "cityscapes": "unlabeled"},
            {"id": 1, "name": "street", "cityscapes": "road"},
            {"id": 2, "name": "heaven", "cityscapes": "sky"},
        ],
    }
    (root / SPEC_FILE).write_text(json.dumps(spec))
    return Fixture(root, "test", ["train", "test"], 1, image, PLUGIN_AS_CITYSCAPES)


def _synthetic(tmp_path: Path, request: pytest.FixtureRequest) -> Fixture:
    """Ten rendered scenes: 8 train, 1 val, 1 test."""
    root = generate(tmp_path / "synthetic", count=10, seed=0, size=(32, 64))
    frame = frame_id("test", 0)
    return Fixture(
        root, "test", ["train", "val", "test"], 1, _png(frame.image(root)), _png(frame.label_ids(root))
    )


def _pseudo(tmp_path: Path, request: pytest.FixtureRequest) -> Fixture:
    """A hand-written pseudo-labelled set: one test frame (road, sky and a void pixel) and one train frame."""
    root = tmp_path / "pseudo"
    image = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    labels = np.array([[7, 7, 23], [0, 23, 23]], dtype=np.uint8)
    splits = {}
    for frame in (FrameId("test", "frames", 0, 0), FrameId("train", "frames", 1, 0)):
        for path, array in [(frame.image(root), image), (frame.label_ids(root), labels)]:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
        Image.fromarray(np.full((2, 3), 255, dtype=np.uint8)).save(confidence_path(frame, root))
        splits[frame.split] = SplitRecord(1, 0.0, {frame.stem: FrameRecord(f"{frame.seq}.png")})
    segmenter = SegmenterRecord("colour", None, None, [7, 23], [2, 3], {})
    manifest = PseudoManifest(segmenter, 0.5, "resize", 1, splits, "/frames", {}, "2026-12-07", "0")
    (root / MANIFEST).write_text(json.dumps(manifest.to_dict()))
    return Fixture(root, "test", ["train", "test"], 1, image, labels)


#: kind → the builder of its tiny folder
FIXTURES: dict[str, Callable[[Path, pytest.FixtureRequest], Fixture]] = {
    "cityscapes": _cityscapes,
    "cityscapes-coarse": _cityscapes_coarse,
    "plugin": _plugin,
    "pseudo": _pseudo,
    "synthetic": _synthetic,
}


def test_every_reader_has_a_fixture() -> None:
    assert sorted(FIXTURES) == KINDS.names()


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_reader_contract(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    fixture = FIXTURES[kind](tmp_path, request)
    reader = KINDS.get(kind)
    assert detect_kind(fixture.root) is reader
    assert reader.splits(fixture.root, None) == fixture.splits
    assert reader.default_split(fixture.root, None) == fixture.default_split in fixture.splits

    truthset = open_truthset(fixture.root)
    assert (truthset.kind, truthset.split, len(truthset)) == (kind, fixture.default_split, fixture.length)
    sample = truthset[0]
    height, width = fixture.labels.shape
    assert sample.image.shape == (height, width, 3) and sample.image.dtype == np.uint8
    assert sample.labels.shape == (height, width) and sample.labels.dtype == np.uint8
    np.testing.assert_array_equal(sample.image, fixture.image)
    np.testing.assert_array_equal(sample.labels, fixture.labels)
    assert set(np.unique(sample.labels).tolist()) <= set(CITYSCAPES.by_id)
    np.testing.assert_array_equal(truthset.label_map(0), fixture.labels)
    for split in fixture.splits:
        assert open_truthset(fixture.root, split).split == split
