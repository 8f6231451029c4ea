"""Label a folder of frames with a segmenter into a pseudo-labelled truth set (`gradsum label`).

The set is written in the layout the `pseudo` reader reads (`gradsum.truthsets.readers.pseudo`): frames as
RGB PNGs, the predicted labelIds, a confidence map per frame and a manifest written last, all in a staging
folder renamed into place at the end, so a failed or interrupted call leaves nothing at `out`.

Two kinds of source:
- a Cityscapes-layout folder (it has `leftImg8bit/`): frame names and splits are kept (`split` picks one),
  `vehicle/` files are copied, and a GradSUM synthetic set (`gradsum generate`, its `gtFine` may be gone)
  also hands over each frame's steering and obstacle targets from its scene records;
- any other folder: its .png/.jpg/.jpeg files, recursively in sorted order, become split `split` (default
  `test`), city `frames` (or the subfolder's name made safe), seq = the running index.

`targets` adds (or overrides) targets from a CSV: column `image` names the frame by its path relative to the
source folder or by its file stem, and one column per task of `gradsum.taxonomy.TASKS`.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import gradsum
from gradsum.contract import WEIGHTS
from gradsum.errors import CheckpointError, GradSUMError, TruthSetError
from gradsum.fileio import atomic_directory, atomic_write_json, sha256_file
from gradsum.labelling.segmenter import INFERENCE_MODES, Prediction, Segmenter, predict
from gradsum.labelling.segmenters import SEGMENTER_SPEC, SOURCE
from gradsum.progress import Heartbeat
from gradsum.taxonomy import TASKS
from gradsum.truthsets.encodings import read_rgb
from gradsum.truthsets.labels import UNLABELED_ID
from gradsum.truthsets.layout import MANIFEST, SPLITS, FrameId
from gradsum.truthsets.readers.cityscapes import IMAGE_FOLDER, CityscapesTruthSet, available_splits
from gradsum.truthsets.readers.pseudo import (
    ANNOTATION,
    CONFIDENCE_LEVELS,
    FrameRecord,
    PseudoManifest,
    SegmenterRecord,
    SplitRecord,
    confidence_path,
)
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic.writer import encode_png

log = logging.getLogger(__name__)

#: the image files a plain folder's frames are read from
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: the split and city of a plain folder's frames when none is named / they lie at its top
PLAIN_SPLIT = "test"
PLAIN_CITY = "frames"
#: the targets CSV's column naming the frame
IMAGE_COLUMN = "image"


@dataclass(frozen=True)
class SourceFrame:
    """One frame to label: its identity in the written set and its file in the source."""

    frame: FrameId
    path: Path
    #: `path` relative to the source folder (POSIX), as recorded in the manifest
    relative: str
    targets: dict[str, float] = field(default_factory=dict)


@dataclass
class _SplitCounts:
    frames: dict[str, FrameRecord] = field(default_factory=dict)
    pixels: int = 0
    void: int = 0


def label_frames(
    source: str | Path,
    segmenter: Segmenter,
    out: str | Path,
    *,
    threshold: float = 0.5,
    mode: str = "resize",
    batch_size: int = 8,
    split: str | None = None,
    targets: str | Path | None = None,
    skip_unreadable: bool = False,
    segmenter_path: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str | None = None,
) -> PseudoManifest:
    """Label every frame of `source` with `segmenter` and write the pseudo-labelled truth set `out`.

    Pixels whose confidence is below `threshold` become void (labelId 0). Unreadable frames raise one
    TruthSetError naming all of them (nothing is written), or with `skip_unreadable` are left out, logged
    and listed in the manifest's `skipped`. `segmenter_path`, the file or folder the segmenter was loaded
    from, is recorded with the sha256 of its weights.
    """
    if not 0.0 <= threshold <= 1.0:
        raise GradSUMError(f"threshold={threshold}: must lie in [0, 1] (--threshold)")
    if mode not in INFERENCE_MODES:
        raise GradSUMError(f"mode={mode!r} (--mode): unknown; valid: {', '.join(INFERENCE_MODES)}")
    if batch_size < 1:
        raise GradSUMError(f"batch_size={batch_size}: must be at least 1 (--batch-size)")
    root, target = Path(source), Path(out)
    if target.exists() and not overwrite:
        raise TruthSetError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    frames = list_frames(root, split)
    if targets is not None:
        frames = with_targets(frames, read_targets(Path(targets), frames))
    segmenter_record = describe_segmenter(segmenter, segmenter_path)
    with atomic_directory(target, overwrite=overwrite) as staging:
        splits, unreadable = _label_all(
            staging, root, frames, segmenter, threshold, mode, batch_size, device, progress, skip_unreadable
        )
        if unreadable and not skip_unreadable:
            raise TruthSetError(unreadable_message(root, unreadable))
        if unreadable:
            log.warning(
                "%s", unreadable_message(root, unreadable) + "; skipped them (listed in the manifest)"
            )
        if not splits:
            raise TruthSetError(f"{root}: no frame could be read, nothing to label")
        manifest = PseudoManifest(
            segmenter=segmenter_record,
            threshold=threshold,
            mode=mode,
            batch_size=batch_size,
            splits={
                name: SplitRecord(len(counts.frames), counts.void / counts.pixels, counts.frames)
                for name, counts in splits.items()
            },
            source=str(root.resolve()),
            skipped=unreadable,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            gradsum_version=gradsum.__version__,
        )
        # Written last: its presence marks a complete truth set.
        atomic_write_json(staging / MANIFEST, manifest.to_dict())
    counts = ", ".join(f"{name} {s.count}" for name, s in manifest.splits.items())
    log.info("pseudo-labelled truth set ready at %s (%s)", target, counts)
    return manifest


# -- the frames of a source ------------------------------------------------------------------------


def list_frames(root: Path, split: str | None = None) -> list[SourceFrame]:
    """The frames of a source folder, with the targets a synthetic source carries (see the module doc)."""
    if not root.is_dir():
        raise TruthSetError(f"{root}: no such folder of frames")
    frames = _cityscapes_frames(root, split) if (root / IMAGE_FOLDER).is_dir() else _plain_frames(root, split)
    if not frames:
        raise TruthSetError(f"{root}: no frames ({', '.join(IMAGE_SUFFIXES)} files) to label")
    return frames


def _cityscapes_frames(root: Path, split: str | None) -> list[SourceFrame]:
    found = available_splits(root)
    present = [s for s in SPLITS if s in found] + sorted(s for s in found if s not in SPLITS)
    if split is not None and split not in present:
        raise TruthSetError(
            f"{root / IMAGE_FOLDER}: no split {split!r} (--split); valid: {', '.join(present)}"
        )
    frames = []
    for name in [split] if split is not None else present:
        carried = _synthetic_targets(root, name) if SyntheticTruthSet.detect(root) else {}
        for frame in CityscapesTruthSet(root, name, drop_slow=False).frames:
            path = frame.image(root)
            relative = path.relative_to(root).as_posix()
            frames.append(SourceFrame(frame, path, relative, carried.get(frame, {})))
    return frames


def _synthetic_targets(root: Path, split: str) -> dict[FrameId, dict[str, float]]:
    """Each frame's targets as the synthetic reader reads them from its scene records."""
    truthset = SyntheticTruthSet(root, split)
    values = {task: truthset.targets(task) for task in truthset.tasks}
    return {
        truthset.frame(index): {task: float(values[task][index]) for task in truthset.tasks}
        for index in range(len(truthset))
    }


def _plain_frames(root: Path, split: str | None) -> list[SourceFrame]:
    name = PLAIN_SPLIT if split is None else split
    files = sorted(
        (path.relative_to(root).as_posix(), path)
        for path in root.rglob("*")
        # hidden folders hold no frames (.git, a staging folder of an `out` inside the source)
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    return [
        SourceFrame(FrameId(name, safe_city(Path(relative).parent), seq, 0), path, relative)
        for seq, (relative, path) in enumerate(files)
    ]


def safe_city(folder: Path) -> str:
    """A Cityscapes city name for a subfolder: runs of characters other than letters and digits become
    '-' (a '_' would split the name); the top of the source is `PLAIN_CITY`."""
    return re.sub(r"[^A-Za-z0-9]+", "-", folder.as_posix()).strip("-") or PLAIN_CITY


# -- targets from a CSV ----------------------------------------------------------------------------


def read_targets(path: Path, frames: Sequence[SourceFrame]) -> dict[str, dict[str, float]]:
    """Frame (relative path) → its targets from the CSV at `path`; an unknown column or image, a frame
    named twice or missing, or a value that is not a finite number raises TruthSetError naming it."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns, rows = list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise TruthSetError(f"{path}: unreadable targets CSV ({error})") from None
    if IMAGE_COLUMN not in columns:
        raise TruthSetError(
            f"{path}: no column {IMAGE_COLUMN!r} naming each frame (columns: {', '.join(columns)})"
        )
    tasks = [c for c in columns if c != IMAGE_COLUMN]
    unknown = [c for c in tasks if c not in TASKS]
    if unknown:
        raise TruthSetError(f"{path}: column {unknown[0]!r} is not a task; valid: {', '.join(TASKS)}")
    names = _frame_names(frames)
    found: dict[str, dict[str, float]] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        relative = names.get(row[IMAGE_COLUMN] or "")
        if relative is None:
            raise TruthSetError(
                f"{path}: row {line}: image {row[IMAGE_COLUMN]!r} is not a frame of the source"
            )
        if relative in found:
            raise TruthSetError(f"{path}: row {line}: image {row[IMAGE_COLUMN]!r} is named twice")
        found[relative] = {task: _number(path, line, task, row[task]) for task in tasks}
    missing = [f.relative for f in frames if f.relative not in found]
    if missing:
        raise TruthSetError(f"{path}: no row for {len(missing)} frame(s), e.g. {', '.join(missing[:3])}")
    return found


def _frame_names(frames: Sequence[SourceFrame]) -> dict[str, str]:
    """Every name a CSV row may give a frame (its relative path, or its stem where no other frame shares
    it) → its relative path."""
    stems: dict[str, list[str]] = {}
    for frame in frames:
        stems.setdefault(Path(frame.relative).stem, []).append(frame.relative)
    unique = {stem: relatives[0] for stem, relatives in stems.items() if len(relatives) == 1}
    return {**unique, **{f.relative: f.relative for f in frames}}


def _number(path: Path, line: int, column: str, text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise TruthSetError(f"{path}: row {line}, column {column!r}: {text!r} is not a finite number")
    return value


def with_targets(frames: Sequence[SourceFrame], targets: dict[str, dict[str, float]]) -> list[SourceFrame]:
    """The frames with the CSV's targets added (a CSV value replaces one the source carried)."""
    return [SourceFrame(f.frame, f.path, f.relative, {**f.targets, **targets[f.relative]}) for f in frames]


# -- labelling -------------------------------------------------------------------------------------


def describe_segmenter(segmenter: Segmenter, path: str | Path | None) -> SegmenterRecord:
    """The manifest's record of the segmenter: its weights' sha256 when it was loaded from `path`."""
    return SegmenterRecord(
        architecture=segmenter.architecture,
        path=None if path is None else str(Path(path).resolve()),
        sha256=None if path is None else sha256_file(weights_path(segmenter, Path(path))),
        classes=list(segmenter.classes),
        input_size=list(segmenter.input_size),
        held_out=dict(segmenter.held_out),
    )


def weights_path(segmenter: Segmenter, path: Path) -> Path:
    """The weights file of a segmenter loaded from `path`: a segmenter folder's weights, else the checkpoint
    its `segmenter.yaml` names (which the card's `source` records)."""
    if (path / WEIGHTS).is_file():
        return path / WEIGHTS
    source = segmenter.card.get(SOURCE)
    if isinstance(source, Mapping) and "weights" in source:
        return Path(source["weights"])
    raise CheckpointError(f"{path}: no {WEIGHTS} and no checkpoint named by a {SEGMENTER_SPEC}")


def _label_all(
    staging: Path,
    root: Path,
    frames: Sequence[SourceFrame],
    segmenter: Segmenter,
    threshold: float,
    mode: str,
    batch_size: int,
    device: str | None,
    progress: bool,
    skip_unreadable: bool,
) -> tuple[dict[str, _SplitCounts], dict[str, str]]:
    """Label and write the frames `batch_size` at a time; returns the per-split counts and the unreadable
    frames (relative path → why). Unless they are skipped, nothing more is predicted after the first
    unreadable frame, but every frame is still read, so that one error can name them all."""
    splits: dict[str, _SplitCounts] = {}
    unreadable: dict[str, str] = {}
    heartbeat = Heartbeat("labelling", len(frames), unit="frames")
    bar = tqdm(total=len(frames), desc="label", unit="frame", disable=None if progress else True)
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]
        read = []
        for frame in chunk:
            try:
                read.append((frame, read_rgb(frame.path)))
            except TruthSetError as error:
                unreadable[frame.relative] = str(error)
        if read and (skip_unreadable or not unreadable):
            images = [image for _, image in read]
            predictions = predict(segmenter, images, mode=mode, batch_size=batch_size, device=device)
            for (frame, image), prediction in zip(read, predictions, strict=True):
                _write_frame(staging, root, frame, image, prediction, threshold, splits)
        bar.update(len(chunk))
        heartbeat.add(len(chunk))
    bar.close()
    return splits, unreadable


def _write_frame(
    staging: Path,
    root: Path,
    source: SourceFrame,
    image: np.ndarray,
    prediction: Prediction,
    threshold: float,
    splits: dict[str, _SplitCounts],
) -> None:
    """Write one frame's image, thresholded labels, confidence and vehicle file; count its void pixels."""
    frame = source.frame
    below = prediction.confidence < threshold
    labels = np.where(below, UNLABELED_ID, prediction.labels).astype(np.uint8)
    confidence = np.rint(prediction.confidence * CONFIDENCE_LEVELS).astype(np.uint8)
    files = {
        frame.image(staging): encode_png(image),
        frame.label_ids(staging, ANNOTATION): encode_png(labels),
        confidence_path(frame, staging): encode_png(confidence),
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    vehicle = frame.vehicle(root)
    if vehicle.is_file():
        frame.vehicle(staging).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vehicle, frame.vehicle(staging))
    counts = splits.setdefault(frame.split, _SplitCounts())
    counts.frames[frame.stem] = FrameRecord(source.relative, dict(source.targets))
    counts.pixels += below.size
    counts.void += int(below.sum())


def unreadable_message(root: Path, unreadable: dict[str, str]) -> str:
    """One message naming every unreadable frame with the reason (each reason names its file)."""
    return f"{root}: {len(unreadable)} frame(s) cannot be read: {'; '.join(unreadable.values())}"
