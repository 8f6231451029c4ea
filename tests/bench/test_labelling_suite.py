"""The labelling suite: which segmenter it measures, its window counts by hand, and the quick suite's JSON
through the CLI.

Timings are only checked to be positive and finite, and against one another (frames per second is the
frames ÷ the seconds), never against a clock.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from gradsum.bench.suites import labelling
from gradsum.cli import main
from gradsum.errors import CheckpointError, UnknownNameError
from gradsum.labelling.segmenters import DEFAULT_ARCHITECTURE, build_segmenter, save_segmenter

ROAD, SKY = 7, 23
#: every field a measurement declares
FIELDS = {
    "path",
    "frame_size",
    "mode",
    "frames",
    "batch_size",
    "repeats",
    "warmup",
    "windows_per_frame",
    "seconds",
    "frames_per_second",
    "frames_per_second_per_core",
    "peak_resident_mib",
    "peak_method",
}


def _saved(folder: Path, size: tuple[int, int], architecture: str = DEFAULT_ARCHITECTURE) -> Path:
    torch.manual_seed(0)
    save_segmenter(build_segmenter(architecture, (ROAD, SKY), size), folder)
    return folder


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The quick suite through `gradsum bench`, on a two-class segmenter given by the environment."""
    root = tmp_path_factory.mktemp("labelling_suite")
    segmenter = _saved(root / "segmenter", labelling.INPUT_SIZE)
    out = root / "bench.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(labelling.SEGMENTER_ENV, str(segmenter))
        assert main(["bench", "--suite", "labelling", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    return json.loads(out.read_text())["suites"]["labelling"], segmenter


def test_quick_suite_measures_every_declared_run(quick: tuple[dict[str, Any], Path]) -> None:
    figures, segmenter = quick
    assert figures["segmenter"] == {
        "architecture": DEFAULT_ARCHITECTURE,
        "classes": 2,
        "input_size": list(labelling.INPUT_SIZE),
        "weights": f"trained: {segmenter} ({labelling.SEGMENTER_ENV})",
    }
    assert figures["threads"] == torch.get_num_threads()
    scale = labelling.QUICK
    # the JSON is written with sorted keys
    assert sorted(figures["measures"]) == sorted(m.name for m in scale.measures)
    for measure in scale.measures:
        row = figures["measures"][measure.name]
        assert set(row) == FIELDS
        assert (row["path"], row["frame_size"], row["mode"]) == (
            measure.path,
            list(measure.size),
            measure.mode,
        )
        assert (row["frames"], row["batch_size"], row["repeats"], row["warmup"]) == (
            measure.frames,
            scale.batch_size,
            measure.repeats,
            measure.warmup,
        )
        for value in (row["seconds"], row["frames_per_second"], row["peak_resident_mib"]):
            assert math.isfinite(value) and value > 0
        assert row["frames_per_second"] == pytest.approx(row["frames"] / row["seconds"])
        assert row["frames_per_second_per_core"] == pytest.approx(
            row["frames_per_second"] / figures["threads"]
        )
        assert row["peak_method"]


def test_quick_suite_covers_both_sizes_modes_and_paths(quick: tuple[dict[str, Any], Path]) -> None:
    rows = quick[0]["measures"].values()
    assert {(r["path"], r["mode"]) for r in rows} == {
        ("predict", "resize"),
        ("predict", "slide"),
        ("label_frames", "resize"),
    }
    assert {tuple(r["frame_size"]) for r in rows} == {labelling.INPUT_SIZE, (192, 384)}
    # 96×192 windows over 192×384: rows at 0, 64, 96 and columns at 0, 128, 192 (a stride of 2/3 window)
    assert [r["windows_per_frame"] for r in rows if r["mode"] == "slide"] == [9]
    assert all(r["windows_per_frame"] is None for r in rows if r["mode"] == "resize")


def test_the_full_scale_measures_the_issue_sizes() -> None:
    sizes = {(m.path, m.mode): m.size for m in labelling.FULL.measures if m.size != labelling.INPUT_SIZE}
    assert sizes == {
        ("predict", "resize"): (1024, 2048),
        ("predict", "slide"): (1024, 2048),
        ("label_frames", "resize"): (1024, 2048),
    }
    # 16 window rows (stride 64, the last flush at 928) × 16 columns (stride 128, the last at 1856)
    slide = next(m for m in labelling.FULL.measures if m.mode == "slide")
    assert labelling.slide_windows(slide, labelling.INPUT_SIZE) == 256
    # a frame smaller than a window is resized by predict: no windows
    assert labelling.slide_windows(slide, (2048, 2048)) is None


def test_without_a_trained_folder_the_segmenter_is_untrained_and_says_why(tmp_path: Path) -> None:
    segmenter, weights = labelling.suite_segmenter(None, tmp_path / "segmenters")
    assert (segmenter.architecture, segmenter.input_size) == (DEFAULT_ARCHITECTURE, labelling.INPUT_SIZE)
    # the 19 classes Cityscapes evaluates
    assert len(segmenter.classes) == 19 and ROAD in segmenter.classes and 0 not in segmenter.classes
    assert weights == (
        f"untrained: {DEFAULT_ARCHITECTURE} with random weights (seed 0); no {DEFAULT_ARCHITECTURE} "
        f"segmenter folder under {tmp_path / 'segmenters'}"
    )


def test_a_trained_folder_at_the_input_size_is_found_and_others_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "segmenters"
    _saved(folder / f"{DEFAULT_ARCHITECTURE}_15steps", (32, 64))
    corrupt = _saved(folder / f"{DEFAULT_ARCHITECTURE}_20steps", labelling.INPUT_SIZE)
    (corrupt / "model.safetensors").write_bytes(b"not safetensors")
    segmenter, weights = labelling.suite_segmenter(None, folder)
    assert weights.startswith("untrained: ")
    assert f"{folder / f'{DEFAULT_ARCHITECTURE}_15steps'} is {DEFAULT_ARCHITECTURE} at (32, 64)" in weights
    assert f"{corrupt} not loaded: " in weights
    found = _saved(folder / f"{DEFAULT_ARCHITECTURE}_40steps", labelling.INPUT_SIZE)
    segmenter, weights = labelling.suite_segmenter(None, folder)
    assert weights == f"trained: {found}" and segmenter.classes == (ROAD, SKY)


def test_a_given_segmenter_that_does_not_load_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=str(tmp_path / "missing")):
        labelling.suite_segmenter(str(tmp_path / "missing"), tmp_path)


def test_unknown_names_are_refused_with_the_valid_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(UnknownNameError, match="valid: label_frames, predict"):
        labelling.PATHS.get("predcit", "path")
    out = tmp_path / "bench.json"
    assert main(["bench", "--suite", "labeling", "--out", str(out)]) == 2
    assert "did you mean labelling" in capsys.readouterr().err
    assert not out.exists()
