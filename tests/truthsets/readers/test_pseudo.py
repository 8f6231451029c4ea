"""The `pseudo` reader on hand-written pseudo-labelled sets: labels, confidences, targets (manifest first,
the vehicle proxy for a missing steering), the label source, and refusals naming the manifest field."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gradsum.errors import TruthSetError
from gradsum.truthsets import detect_kind, open_truthset
from gradsum.truthsets.layout import MANIFEST, FrameId
from gradsum.truthsets.readers.pseudo import (
    FrameRecord,
    PseudoManifest,
    PseudoTruthSet,
    SegmenterRecord,
    SplitRecord,
    confidence_path,
)

SEGMENTER = SegmenterRecord(
    "colour", "/models/seg", "ab" * 32, [7, 23], [2, 3], {"miou": 0.75, "iou": {"7": 0.8}}
)
#: road, sky and a void (below-threshold) pixel
LABELS = np.array([[7, 7, 23], [0, 23, 23]], dtype=np.uint8)
CONFIDENCE = np.array([[255, 204, 128], [100, 0, 51]], dtype=np.uint8)
A = FrameId("test", "frames", 0, 0)
B = FrameId("test", "frames", 1, 0)
C = FrameId("train", "frames", 2, 0)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_set(root: Path, targets: dict[FrameId, dict[str, float]], vehicles: bool = True) -> PseudoManifest:
    """A pseudo-labelled set of the frames in `targets`, each with `LABELS` and `CONFIDENCE`."""
    splits: dict[str, dict[str, FrameRecord]] = {}
    for frame, values in targets.items():
        _write(frame.image(root), np.full((2, 3, 3), frame.seq, dtype=np.uint8))
        _write(frame.label_ids(root), LABELS)
        _write(confidence_path(frame, root), CONFIDENCE)
        if vehicles:
            frame.vehicle(root).parent.mkdir(parents=True, exist_ok=True)
            frame.vehicle(root).write_text(json.dumps({"speed": 10.0, "yawRate": 0.5 * (frame.seq + 1)}))
        splits.setdefault(frame.split, {})[frame.stem] = FrameRecord(f"in/{frame.seq}.png", values)
    manifest = PseudoManifest(
        segmenter=SEGMENTER,
        threshold=0.4,
        mode="slide",
        batch_size=2,
        splits={name: SplitRecord(len(frames), 1 / 6, frames) for name, frames in splits.items()},
        source="/frames",
        skipped={},
        created="2026-12-07T12:00:00+00:00",
        gradsum_version="0.1.0",
    )
    (root / MANIFEST).write_text(json.dumps(manifest.to_dict()))
    return manifest


def test_labels_confidences_targets_and_label_source(tmp_path: Path) -> None:
    write_set(tmp_path, {A: {"obstacle": 1.0}, B: {"steering": 0.25, "obstacle": 0.0}, C: {}})
    truthset = open_truthset(tmp_path)
    assert isinstance(truthset, PseudoTruthSet)
    assert (truthset.kind, truthset.split, len(truthset), truthset.tasks) == ("pseudo", "test", 2, TASKS_BOTH)
    first, second = truthset[0], truthset[1]
    np.testing.assert_array_equal(first.labels, LABELS)
    np.testing.assert_array_equal(second.image, np.full((2, 3, 3), 1, dtype=np.uint8))
    # A carries no steering in the manifest: the vehicle proxy −yawRate/speed = −0.5/10; B's manifest value wins
    assert first.targets == {"steering": pytest.approx(-0.05), "obstacle": 1.0}
    assert second.targets == {"steering": 0.25, "obstacle": 0.0}
    np.testing.assert_allclose(truthset.targets("steering"), [-0.05, 0.25], rtol=1e-6)
    confidence = truthset.confidence(0)
    assert confidence.dtype == np.float32
    np.testing.assert_allclose(confidence, [[1.0, 0.8, 128 / 255], [100 / 255, 0.0, 0.2]], atol=1e-7)
    assert first.meta["source"] == "in/0.png"
    assert truthset.parameters["label_source"] == {
        "predicted": True,
        "architecture": "colour",
        "segmenter": "/models/seg",
        "sha256": "ab" * 32,
        "held_out_miou": 0.75,
        "threshold": 0.4,
        "mode": "slide",
    }
    assert truthset.describe()["parameters"]["label_source"]["predicted"] is True


TASKS_BOTH = ("steering", "obstacle")


def test_without_vehicle_files_only_the_targets_of_every_frame_count(tmp_path: Path) -> None:
    write_set(tmp_path, {A: {"obstacle": 1.0, "steering": 0.1}, B: {"obstacle": 0.0}}, vehicles=False)
    truthset = open_truthset(tmp_path, "test")
    assert truthset.tasks == ("obstacle",)
    np.testing.assert_array_equal(truthset.targets("obstacle"), [1.0, 0.0])


def test_the_pseudo_kind_wins_over_cityscapes_and_lists_its_splits(tmp_path: Path) -> None:
    write_set(tmp_path, {C: {}, replace(A, split="val"): {}, replace(B, split="extra"): {}})
    kind = detect_kind(tmp_path)
    assert kind.name == "pseudo"
    assert kind.splits(tmp_path, None) == ["train", "val", "extra"]
    # no test split: val is the held-out one opened by default
    assert kind.default_split(tmp_path, None) == "val"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m.pop("threshold"), "field 'threshold' is missing"),
        (lambda m: m["splits"]["test"].pop("frames"), "field 'splits.test.frames' is missing"),
        (lambda m: m.update(segmenter=["colour"]), r"field 'segmenter' is not an object \(list\)"),
        (lambda m: m.update(source="/a", extra=1), "malformed"),
        (lambda m: m.update(segmenter={"architecture": "x"}), "field 'segmenter.path' is missing"),
    ],
)
def test_a_broken_manifest_is_refused_naming_it(tmp_path: Path, edit: Any, message: str) -> None:
    write_set(tmp_path, {A: {}})
    record = json.loads((tmp_path / MANIFEST).read_text())
    edit(record)
    (tmp_path / MANIFEST).write_text(json.dumps(record))
    with pytest.raises(TruthSetError, match=message) as error:
        PseudoTruthSet(tmp_path, "test")
    assert str(tmp_path / MANIFEST) in str(error.value)


def test_an_unknown_split_lists_the_manifest_splits(tmp_path: Path) -> None:
    write_set(tmp_path, {A: {}, C: {}})
    with pytest.raises(TruthSetError, match="no split 'val'; valid: test, train"):
        open_truthset(tmp_path, "val")
