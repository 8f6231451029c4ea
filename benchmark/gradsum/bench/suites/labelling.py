"""Labelling throughput: frames per second, and per core, of a segmenter at 96×192 and at 1024×2048.

One segmenter of the default architecture (`gradsum train-segmenter`'s) labels rendered synthetic frames:

- through `predict` in memory: 96×192 frames in `resize` mode (the segmenter's own size), and 1024×2048
  frames in `resize` mode (downsampled to the segmenter's input size, logits upsampled back) and in `slide`
  mode (windows of the input size over the full frame, a third overlapping);
- through the whole `gradsum label` path (`label_frames`): PNGs read from a folder, predicted, and the
  labelIds and confidence PNGs written, at both sizes: what a user sees.

Frames per core is frames per second ÷ `torch.get_num_threads()` (on a CPU; none on a GPU). Each time is the
fewest seconds over the repeats after the warm-up calls; slide mode and the labelling path at 1024×2048
take seconds per frame, so they run few frames, timed once after one call has warmed them. The segmenter is a
trained folder when one is given (GRADSUM_BENCH_SEGMENTER) or found under the study's segmenter folder,
else the architecture with seeded random weights: the JSON says which; weights do not change the speed.
Peak memory is this process's resident high-water mark over each measurement (`scale.PeakResident`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradsum.bench import BenchSuite, timeit
from gradsum.bench.suites.scale import PeakResident
from gradsum.contract import CARD
from gradsum.errors import GradSUMError
from gradsum.labelling.segmenter import Segmenter, predict, window_starts
from gradsum.labelling.segmenters import DEFAULT_ARCHITECTURE, build_segmenter, load_segmenter
from gradsum.labelling.writer import label_frames
from gradsum.pipeline.config import PseudoLabelConfig
from gradsum.registry import Registry
from gradsum.truthsets.labels import CITYSCAPES
from gradsum.truthsets.synthetic import render, sample_scene
from gradsum.truthsets.synthetic.writer import encode_png

#: a segmenter to measure (a folder or a segmenter.yaml); unset: one found under SEGMENTERS_DIR, or untrained
SEGMENTER_ENV = "GRADSUM_BENCH_SEGMENTER"
#: where trained segmenters are looked for: the label-quality study's folder
SEGMENTERS_DIR = PseudoLabelConfig().folder
#: the issue's two frame sizes: the segmenter's (and the default models') input size, and Cityscapes'
INPUT_SIZE = (96, 192)
FULL_FRAME = (1024, 2048)
#: seed of the rendered frames and of an untrained segmenter's weights
SEED = 0
MIB = 1024


@dataclass(frozen=True)
class Measure:
    """One throughput measurement: which path labels how many frames of what size, in which mode."""

    name: str
    #: a key of PATHS
    path: str
    size: tuple[int, int]
    mode: str
    frames: int
    #: timed calls (the fewest seconds kept), after `warmup` untimed ones
    repeats: int
    warmup: int


@dataclass(frozen=True)
class Scale:
    """The measurements and the batch size of every call."""

    measures: tuple[Measure, ...]
    batch_size: int


def _scale(
    small: int, large: tuple[int, int], large_frames: int, slide_frames: int, repeats: int, warmup: int
) -> Scale:
    """The five measurements: `repeats` timed calls after `warmup` for all but the two slowest (one each)."""
    return Scale(
        measures=(
            Measure("predict_small_resize", "predict", INPUT_SIZE, "resize", small, repeats, warmup),
            Measure("predict_large_resize", "predict", large, "resize", large_frames, repeats, warmup),
            Measure("predict_large_slide", "predict", large, "slide", slide_frames, 1, 1),
            Measure("label_small", "label_frames", INPUT_SIZE, "resize", small, repeats, warmup),
            Measure("label_large", "label_frames", large, "resize", slide_frames, 1, 1),
        ),
        batch_size=8,
    )


#: 1024×2048 in slide mode is 256 windows a frame: two frames; the first calls of a shape run slowest (a
#: CPU's kernels are picked and memory is grown then), so two warm-up calls
FULL = _scale(small=32, large=FULL_FRAME, large_frames=4, slide_frames=2, repeats=3, warmup=2)
#: a "large" frame of 2 × 2 segmenter sizes: 9 windows in slide mode
QUICK = _scale(small=4, large=(192, 384), large_frames=1, slide_frames=1, repeats=1, warmup=1)


def cityscapes_classes() -> tuple[int, ...]:
    """The Cityscapes ids evaluated (not void): an untrained segmenter's output channels."""
    return tuple(c.id for c in CITYSCAPES.classes if not c.ignore)


def suite_segmenter(explicit: str | None, folder: Path) -> tuple[Segmenter, str]:
    """The segmenter measured and which weights it has: `explicit` (a path) when given, else the first folder
    under `folder` of the default architecture at INPUT_SIZE that loads, else seeded random weights."""
    if explicit is not None:
        return load_segmenter(explicit), f"trained: {explicit} ({SEGMENTER_ENV})"
    reasons = []
    candidates = sorted(p for p in folder.glob(f"{DEFAULT_ARCHITECTURE}*") if (p / CARD).is_file())
    for candidate in candidates:
        try:
            segmenter = load_segmenter(candidate)
        except GradSUMError as error:
            reasons.append(f"{candidate} not loaded: {error}")
            continue
        if segmenter.architecture == DEFAULT_ARCHITECTURE and segmenter.input_size == INPUT_SIZE:
            return segmenter, f"trained: {candidate}"
        reasons.append(f"{candidate} is {segmenter.architecture} at {segmenter.input_size}")
    reason = "; ".join(reasons) or f"no {DEFAULT_ARCHITECTURE} segmenter folder under {folder}"
    torch.manual_seed(SEED)
    segmenter = build_segmenter(DEFAULT_ARCHITECTURE, cityscapes_classes(), INPUT_SIZE)
    return segmenter, f"untrained: {DEFAULT_ARCHITECTURE} with random weights (seed {SEED}); {reason}"


def rendered_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """`count` rendered synthetic scenes at `size`, (H, W, 3) uint8."""
    rng = np.random.default_rng(SEED)
    return [render(sample_scene(rng, size)).image for _ in range(count)]


@dataclass(frozen=True)
class Setting:
    """What every measurement shares."""

    segmenter: Segmenter
    batch_size: int
    device: str
    #: a scratch folder for the labelling path's frames and truth sets
    workspace: Path


#: how a measurement's frames are labelled: (frames, measure, setting) → the call to time
PATHS: Registry[Callable[[list[np.ndarray], Measure, Setting], Callable[[], object]]] = Registry(
    "labelling path"
)


@PATHS.register("predict")
def _predict(frames: list[np.ndarray], measure: Measure, setting: Setting) -> Callable[[], object]:
    def call() -> object:
        return predict(
            setting.segmenter, frames, mode=measure.mode, batch_size=setting.batch_size, device=setting.device
        )

    return call


@PATHS.register("label_frames")
def _label_frames(frames: list[np.ndarray], measure: Measure, setting: Setting) -> Callable[[], object]:
    """`label_frames` over a folder of the frames as PNGs, each call replacing the last call's truth set."""
    source = setting.workspace / measure.name / "frames"
    source.mkdir(parents=True)
    for index, frame in enumerate(frames):
        (source / f"frame_{index:03d}.png").write_bytes(encode_png(frame))

    def call() -> object:
        return label_frames(
            source,
            setting.segmenter,
            setting.workspace / measure.name / "labelled",
            mode=measure.mode,
            batch_size=setting.batch_size,
            overwrite=True,
            progress=False,
            device=setting.device,
        )

    return call


def slide_windows(measure: Measure, input_size: tuple[int, int]) -> int | None:
    """Windows `predict` runs over each frame in slide mode; None in resize mode or where the frame is
    smaller than a window (`predict` then resizes it)."""
    if measure.mode != "slide" or any(f < w for f, w in zip(measure.size, input_size, strict=True)):
        return None
    rows, columns = (len(window_starts(f, w)) for f, w in zip(measure.size, input_size, strict=True))
    return rows * columns


def measure_throughput(measure: Measure, setting: Setting) -> dict[str, Any]:
    """One measurement's frames per second (and per core on a CPU) and peak resident memory."""
    frames = rendered_frames(measure.frames, measure.size)
    call = PATHS.get(measure.path, "path")(frames, measure, setting)
    with PeakResident() as peak:
        seconds = timeit(call, repeats=measure.repeats, warmup=measure.warmup)
    threads = torch.get_num_threads()
    per_second = measure.frames / seconds
    return {
        "path": measure.path,
        "frame_size": list(measure.size),
        "mode": measure.mode,
        "frames": measure.frames,
        "batch_size": setting.batch_size,
        "repeats": measure.repeats,
        "warmup": measure.warmup,
        "windows_per_frame": slide_windows(measure, setting.segmenter.input_size),
        "seconds": seconds,
        "frames_per_second": per_second,
        "frames_per_second_per_core": per_second / threads if setting.device == "cpu" else None,
        "peak_resident_mib": peak.kib / MIB,
        "peak_method": peak.method,
    }


def run_scale(scale: Scale, device: str) -> dict[str, Any]:
    """The suite at `scale` on `device`."""
    segmenter, weights = suite_segmenter(os.environ.get(SEGMENTER_ENV), Path(SEGMENTERS_DIR))
    with tempfile.TemporaryDirectory() as scratch:
        setting = Setting(segmenter, scale.batch_size, device, Path(scratch))
        measures = {m.name: measure_throughput(m, setting) for m in scale.measures}
    return {
        "segmenter": {
            "architecture": segmenter.architecture,
            "classes": len(segmenter.classes),
            "input_size": list(segmenter.input_size),
            "weights": weights,
        },
        "threads": torch.get_num_threads(),
        "per_core": "frames per second ÷ threads (torch.get_num_threads()); none on a GPU",
        "timing": "fewest seconds over `repeats` calls after `warmup` untimed calls",
        "measures": measures,
    }


def run(quick: bool, device: str) -> dict[str, Any]:
    """Quick: 4 frames at 96×192 and one at 192×384; full: 32 at 96×192, 4 (2 in slide mode) at 1024×2048."""
    return run_scale(QUICK if quick else FULL, device)


SUITE = BenchSuite(
    "labelling",
    "segmenter labelling throughput (frames/s and per core) at 96×192 and 1024×2048: predict and gradsum label",
    run,
)
