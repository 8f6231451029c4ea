from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from gradsum.errors import ShapeError
from gradsum.report.overlays import ALPHA, CMAP, save_overlays

SIZE = (48, 96)


def _corner_map() -> np.ndarray:
    """Hot (1) in the top-left quarter, cold (0) elsewhere."""
    heat = np.zeros(SIZE, np.float32)
    heat[: SIZE[0] // 2, : SIZE[1] // 2] = 1.0
    return heat


def _decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def _blend(value: float, grey: int) -> np.ndarray:
    """The colour a map value must take over a grey frame: the colour map's, at the overlay's opacity."""
    rgb = np.asarray(matplotlib.colormaps[CMAP](value)[:3]) * 255
    return ALPHA * rgb + (1 - ALPHA) * grey


def _frame_of(pixels: np.ndarray) -> np.ndarray:
    """The drawn frame: the PNG is cropped to it and the title above it, so it is the full-width bottom."""
    width = pixels.shape[1]
    return pixels[-round(width * SIZE[0] / SIZE[1]) :]


def _middle(frame: np.ndarray, row: int, column: int) -> np.ndarray:
    """The middle half of quarter (row, column) of `frame`, clear of its edges, as one mean colour."""
    h, w = frame.shape[0] // 2, frame.shape[1] // 2
    block = frame[row * h : (row + 1) * h, column * w : (column + 1) * w]
    return block[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)


def test_the_hot_corner_takes_the_hot_colour_and_the_rest_the_cold(tmp_path: Path) -> None:
    grey = np.full((*SIZE, 3), 128, np.uint8)
    paths = save_overlays(tmp_path, [grey, grey], [_corner_map(), np.fliplr(_corner_map())], ["a", "b"])
    assert [p.name for p in paths] == ["overlay_000.png", "overlay_001.png"]
    first, second = _decoded(paths[0]), _decoded(paths[1])
    # larger than the frame (DPI / PIXELS_PER_INCH PNG pixels per frame pixel, less the margins), with
    # the title's strip above the frame
    assert first.shape[1] > SIZE[1] and first.shape[0] > first.shape[1] * SIZE[0] / SIZE[1]
    hot, cold = _blend(1.0, 128), _blend(0.0, 128)
    assert np.allclose(_middle(_frame_of(first), 0, 0), hot, atol=3)
    for quarter in ((0, 1), (1, 0), (1, 1)):
        assert np.allclose(_middle(_frame_of(first), *quarter), cold, atol=3)
    # the mirrored map is hot in the mirrored corner
    assert np.allclose(_middle(_frame_of(second), 0, 1), hot, atol=3)
    assert np.allclose(_middle(_frame_of(second), 0, 0), cold, atol=3)


def test_a_map_of_zeros_takes_the_cold_colour(tmp_path: Path) -> None:
    grey = np.full((*SIZE, 3), 128, np.uint8)
    (path,) = save_overlays(tmp_path, [grey], [np.zeros(SIZE, np.float32)], ["zeros"])
    assert np.allclose(_middle(_frame_of(_decoded(path)), 1, 1), _blend(0.0, 128), atol=3)


def test_the_session_backend_and_pyplot_are_left_alone(tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    grey = np.zeros((*SIZE, 3), np.uint8)
    save_overlays(tmp_path, [grey], [_corner_map()], ["x"])
    assert matplotlib.get_backend() == backend
    pyplot = __import__("sys").modules.get("matplotlib.pyplot")
    assert pyplot is None or not pyplot.get_fignums()


def test_a_map_of_another_size_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    grey = np.zeros((*SIZE, 3), np.uint8)
    with pytest.raises(ShapeError, match=r"overlay 'x': map of shape \(8, 8\)"):
        save_overlays(tmp_path, [grey], [np.zeros((8, 8))], ["x"])
    with pytest.raises(ShapeError, match="1 frames, 2 maps and 1 titles"):
        save_overlays(tmp_path, [grey], [_corner_map(), _corner_map()], ["x"])
    assert not list(tmp_path.iterdir())
