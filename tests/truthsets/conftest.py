"""Tiny truth-set trees built on the fly: Cityscapes from polygon JSON via cityscapesscripts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

from gradsum.truthsets.layout import FrameId

WIDTH, HEIGHT = 16, 8

#: drawn in order, later polygons overwrite: sky on top, road below, a car on the road, a person at the left
POLYGONS = [
    {"label": "sky", "polygon": [[0, 0], [15, 0], [15, 3], [0, 3]]},
    {"label": "road", "polygon": [[0, 4], [15, 4], [15, 7], [0, 7]]},
    {"label": "cargroup", "polygon": [[10, 5], [13, 5], [13, 6], [10, 6]]},
    {"label": "person", "polygon": [[1, 5], [2, 5], [2, 6], [1, 6]]},
    {"label": "license plate", "polygon": [[11, 5], [12, 5], [12, 6], [11, 6]]},
]

#: (row, col) → Cityscapes id the round-trip must produce
EXPECTED_PIXELS = {(1, 5): 23, (5, 5): 7, (5, 11): 26, (5, 1): 24, (7, 8): 7}


def write_png(path: Path, array: np.ndarray) -> Path:
    """Save an array as PNG, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb_image(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """A small random RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def add_cityscapes_frame(
    root: Path,
    frame: FrameId,
    vehicle: dict[str, float] | None = None,
    annotation: str = "gtFine",
    polygons: list[dict[str, object]] | None = None,
) -> FrameId:
    """Write one frame in the official layout: image, polygons, labelIds (by cityscapesscripts), vehicle."""
    polygon_path = frame.polygons(root, annotation)
    polygon_path.parent.mkdir(parents=True, exist_ok=True)
    record = {"imgWidth": WIDTH, "imgHeight": HEIGHT, "objects": polygons or POLYGONS}
    polygon_path.write_text(json.dumps(record))
    annotation_record = Annotation()
    annotation_record.fromJsonFile(str(polygon_path))
    label_image = createLabelImage(annotation_record, "ids")
    label_path = frame.label_ids(root, annotation)
    label_image.save(label_path)
    write_png(frame.image(root), rgb_image(seed=frame.frame))
    if vehicle is not None:
        frame.vehicle(root).parent.mkdir(parents=True, exist_ok=True)
        frame.vehicle(root).write_text(json.dumps({"gpsHeading": 90.0, **vehicle}))
    return frame


class Trees:
    """The builders above, handed to tests as the `trees` fixture (test modules cannot import conftest)."""

    expected_pixels = EXPECTED_PIXELS
    write_png = staticmethod(write_png)
    rgb_image = staticmethod(rgb_image)
    add_cityscapes_frame = staticmethod(add_cityscapes_frame)


@pytest.fixture
def trees() -> type[Trees]:
    """Builders of tiny truth-set trees."""
    return Trees


@pytest.fixture
def cityscapes_root(tmp_path: Path) -> Path:
    """val: three frames (one slow); train: two frames."""
    root = tmp_path / "cityscapes"
    add_cityscapes_frame(root, FrameId("val", "aachen", 0, 19), {"speed": 10.0, "yawRate": 0.5})
    add_cityscapes_frame(root, FrameId("val", "aachen", 1, 19), {"speed": 0.5, "yawRate": 0.2})
    add_cityscapes_frame(root, FrameId("val", "bremen", 2, 19), {"speed": 4.0, "yawRate": -0.2})
    add_cityscapes_frame(root, FrameId("train", "zurich", 0, 19), {"speed": 5.0, "yawRate": 0.0})
    add_cityscapes_frame(root, FrameId("train", "zurich", 1, 19), {"speed": 3.0, "yawRate": 0.3})
    return root
