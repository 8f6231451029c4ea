"""Reader of the official Cityscapes layout (`leftImg8bit`, `gtFine`/`gtCoarse`, optional `vehicle`).

Steering proxy: Cityscapes records no steering angle, so the `steering` target is the path curvature
−yawRate / speed (1/m) from `vehicle/.../*_vehicle.json`: Cityscapes' yaw rate is positive when turning
left (ISO 8855), the steering target positive when steering right (`base.STEERING_SIGN`). Below
`min_speed` (1 m/s) the ratio is noise, so such slow frames are dropped by default; with
`drop_slow=False` they stay, flagged `meta["slow"] = True`, and their curvature uses `min_speed`
in place of the speed so it stays finite. A split whose frames have no vehicle files carries no target;
once any frame of a split has one, every frame must: a missing one fails that frame, naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradsum.errors import TruthSetError
from gradsum.fileio import read_json_object
from gradsum.truthsets.base import LABELLED_SPLIT, Sample, TruthSet, steering_from_yaw_rate
from gradsum.truthsets.encodings import ENCODINGS, check_sizes, decode_labels, read_png, read_rgb
from gradsum.truthsets.folders import exists, is_folder, list_folder
from gradsum.truthsets.kinds import SpecSource, register_reader
from gradsum.truthsets.labels import CITYSCAPES, ClassTable
from gradsum.truthsets.layout import SPLITS, FrameId, parse_image_name

log = logging.getLogger(__name__)

#: the fine annotations, and the coarse ones (train, val and the 19,998 frames of train_extra)
FINE, COARSE = "gtFine", "gtCoarse"
ANNOTATIONS = (FINE, COARSE)
IMAGE_FOLDER = "leftImg8bit"
#: trainId of classes left out of the 19 evaluated ones
IGNORE_TRAIN_ID = 255


@dataclass(frozen=True)
class Vehicle:
    """The CAN-bus values of one frame that the steering proxy needs."""

    speed: float  # m/s
    yaw_rate: float  # rad/s, positive = turning left

    def steering(self, min_speed: float) -> float:
        """The steering target: −yawRate / speed with the speed floored at `min_speed`."""
        return steering_from_yaw_rate(self.yaw_rate, self.speed, min_speed)


def read_vehicle(path: Path) -> Vehicle:
    """Parse a `_vehicle.json`; a missing field or a non-number raises TruthSetError naming it."""
    record = read_json_object(path, TruthSetError, "vehicle file")
    values = {}
    for field in ("speed", "yawRate"):
        value = record.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            problem = "missing" if value is None else f"not a finite number ({value!r})"
            raise TruthSetError(f"{path}: field {field!r} is {problem}")
        values[field] = float(value)
    return Vehicle(speed=values["speed"], yaw_rate=values["yawRate"])


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes labelIds → trainIds (0..18, 255 for ignored classes), via cityscapesscripts' table."""
    table = np.full(256, IGNORE_TRAIN_ID, dtype=np.uint8)
    for c in CITYSCAPES.classes:
        if 0 <= c.train_id < IGNORE_TRAIN_ID:
            table[c.id] = c.train_id
    return table[label_ids]


def available_splits(root: Path) -> list[str]:
    """Split folders under `leftImg8bit/`."""
    folder = Path(root) / IMAGE_FOLDER
    return [entry.name for entry in list_folder(folder) if entry.is_dir()] if is_folder(folder) else []


@register_reader(
    "cityscapes",
    description="official Cityscapes layout: leftImg8bit/, gtFine/ or gtCoarse/, optional vehicle/",
    priority=50,
)
class CityscapesTruthSet(TruthSet):
    """One split of a Cityscapes-layout folder; `labels` are labelIds, `train_ids(i)` the trainId view."""

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        annotation: str = "gtFine",
        min_speed: float = 1.0,
        drop_slow: bool = True,
    ) -> None:
        super().__init__(Path(root), split)
        if annotation not in ANNOTATIONS:
            raise TruthSetError(f"annotation {annotation!r}: expected one of {', '.join(ANNOTATIONS)}")
        if not min_speed > 0:
            raise TruthSetError(f"min_speed {min_speed!r}: must be positive (it divides the yaw rate)")
        self.annotation = annotation
        self.min_speed = float(min_speed)
        self.drop_slow = drop_slow
        self._vehicles: dict[FrameId, Vehicle] = {}
        # a bad or missing vehicle file fails its own sample (and shows in `gradsum check`), not the split
        self._vehicle_errors: dict[FrameId, str] = {}
        found = self._find_frames()
        if not found:
            raise TruthSetError(f"{self.root / IMAGE_FOLDER / split}: no *_leftImg8bit.png images")
        self._load_vehicles(found)
        self.frames: list[FrameId] = [f for f in found if self._keep(f)]
        if len(self.frames) < len(found):
            dropped = len(found) - len(self.frames)
            log.info("%s/%s: dropped %d frames slower than %.2f m/s", root, split, dropped, self.min_speed)

    # -- overridable steps -------------------------------------------------------------------------

    def _find_frames(self) -> list[FrameId]:
        """Every frame of the split, sorted; raises when the split folder does not exist."""
        folder = self.root / IMAGE_FOLDER / self.split
        if not is_folder(folder):
            splits = ", ".join(available_splits(self.root)) or "none"
            raise TruthSetError(f"{folder}: no such split folder (splits found: {splits})")
        frames = []
        for city in (entry for entry in list_folder(folder) if entry.is_dir()):
            for image in list_folder(Path(city.path)):
                if image.name.endswith("_leftImg8bit.png"):
                    frames.append(parse_image_name(Path(image.path), self.split))
        return sorted(frames)

    def _load_vehicles(self, frames: list[FrameId]) -> None:
        missing = []
        for frame in frames:
            path = frame.vehicle(self.root)
            if not exists(path):
                missing.append(frame)
                continue
            try:
                self._vehicles[frame] = read_vehicle(path)
            except TruthSetError as error:
                self._vehicle_errors[frame] = str(error)
        if len(missing) < len(frames):
            # some frames have vehicle files: the split carries steering, and a frame without one is broken
            having = len(frames) - len(missing)
            for frame in missing:
                self._vehicle_errors[frame] = (
                    f"{frame.vehicle(self.root)}: vehicle file is missing "
                    f"({having} of {len(frames)} frames of split {self.split!r} have theirs)"
                )

    def _keep(self, frame: FrameId) -> bool:
        return not (self.drop_slow and self._is_slow(frame))

    def _is_slow(self, frame: FrameId) -> bool:
        vehicle = self._vehicles.get(frame)
        return vehicle is not None and vehicle.speed < self.min_speed

    def _vehicle(self, frame: FrameId) -> Vehicle | None:
        if frame in self._vehicle_errors:
            # a fresh error per call: re-raising one instance would chain every earlier traceback
            raise TruthSetError(self._vehicle_errors[frame])
        return self._vehicles.get(frame)

    def _image(self, frame: FrameId) -> np.ndarray:
        return read_rgb(frame.image(self.root))

    def _labels(self, frame: FrameId) -> np.ndarray:
        """labelIds of the frame (uint8); ids outside the Cityscapes table raise TruthSetError."""
        path = frame.label_ids(self.root, self.annotation)
        return decode_labels(path, ENCODINGS.get("id8"), self.class_table).astype(np.uint8)

    def _instances(self, frame: FrameId) -> np.ndarray | None:
        """The frame's `instanceIds` map (int32) when the annotation folder has one."""
        path = frame.instance_ids(self.root, self.annotation)
        return read_png(path, "instance").astype(np.int32) if exists(path) else None

    def _targets(self, frame: FrameId) -> dict[str, float]:
        vehicle = self._vehicle(frame)
        return {} if vehicle is None else {"steering": vehicle.steering(self.min_speed)}

    def _meta(self, frame: FrameId) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "frame": frame.stem,
            "city": frame.city,
            "image": str(frame.image(self.root)),
            "label": str(frame.label_ids(self.root, self.annotation)),
        }
        vehicle = self._vehicle(frame)
        if vehicle is not None:
            meta.update(speed=vehicle.speed, yawRate=vehicle.yaw_rate, slow=vehicle.speed < self.min_speed)
        return meta

    # -- TruthSet interface ------------------------------------------------------------------------

    @property
    def class_table(self) -> ClassTable:
        return CITYSCAPES

    @property
    def tasks(self) -> tuple[str, ...]:
        return ("steering",) if self._vehicles or self._vehicle_errors else ()

    @property
    def parameters(self) -> Mapping[str, Any]:
        return {"annotation": self.annotation, "min_speed": self.min_speed, "drop_slow": self.drop_slow}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Sample:
        frame = self.frames[index]
        image = self._image(frame)
        labels = self._labels(frame)
        check_sizes(image, labels, frame.image(self.root), frame.label_ids(self.root, self.annotation))
        targets, meta = self._targets(frame), self._meta(frame)
        return Sample(
            image=image,
            labels=labels,
            targets=targets,
            meta=meta,
            raw_labels=labels,
            instances=self._instances(frame),
        )

    def targets(self, task: str) -> np.ndarray:
        if task not in self.tasks:
            raise TruthSetError(f"task {task!r}: {self.root}/{self.split} carries only {list(self.tasks)}")
        return np.array([self._targets(f)[task] for f in self.frames], dtype=np.float32)

    def label_map(self, index: int) -> np.ndarray:
        return self._labels(self.frames[index])

    def train_ids(self, index: int) -> np.ndarray:
        """The trainId view (0..18, 255 = ignore) of sample `index`'s labels."""
        return to_train_ids(self._labels(self.frames[index]))

    # -- the kind: which folders it reads, and how -------------------------------------------------

    @staticmethod
    def detect(root: Path) -> bool:
        return is_folder(root / IMAGE_FOLDER)

    @classmethod
    def open(cls, root: Path, split: str, spec: SpecSource) -> TruthSet:
        # a folder with only coarse annotations (train_extra) opens without naming the annotation
        annotation = next((a for a in ANNOTATIONS if is_folder(root / a / split)), "gtFine")
        return cls(root, split, annotation=annotation)

    @staticmethod
    def default_split(root: Path, spec: SpecSource) -> str:
        # the public test split's labelIds are all 0 (unlabeled): val is the labelled held-out split
        return LABELLED_SPLIT

    @staticmethod
    def splits(root: Path, spec: SpecSource) -> list[str]:
        return list(SPLITS) + [s for s in available_splits(root) if s not in SPLITS]


#: the splits Cityscapes annotates coarsely
COARSE_SPLITS = ("train", "train_extra", "val")


@register_reader(
    "cityscapes-coarse",
    description=f"official Cityscapes layout read with its coarse annotations ({COARSE}/), also where gtFine/ "
    f"exists (--kind cityscapes-coarse)",
    # before `cityscapes`, which also detects a folder with only coarse annotations
    priority=49,
)
class CityscapesCoarseTruthSet(CityscapesTruthSet):
    """One split of a Cityscapes-layout folder with its `gtCoarse` labelIds, whether or not `gtFine` exists.

    Detected only on a folder that has coarse annotations and no fine ones, so a folder with both still
    opens as `cityscapes` (gtFine) unless `--kind cityscapes-coarse` (or a config's `truthset.kind`)
    names this kind; the same frames then profile under both annotations.
    """

    def __init__(
        self, root: str | Path, split: str = "val", min_speed: float = 1.0, drop_slow: bool = True
    ) -> None:
        super().__init__(root, split, annotation=COARSE, min_speed=min_speed, drop_slow=drop_slow)

    @staticmethod
    def detect(root: Path) -> bool:
        return is_folder(root / IMAGE_FOLDER) and is_folder(root / COARSE) and not is_folder(root / FINE)

    @classmethod
    def open(cls, root: Path, split: str, spec: SpecSource) -> TruthSet:
        return cls(root, split)

    @staticmethod
    def splits(root: Path, spec: SpecSource) -> list[str]:
        # the public test split has no coarse annotations; other split folders count when gtCoarse has them
        found = [s for s in available_splits(root) if s not in COARSE_SPLITS and is_folder(root / COARSE / s)]
        return [*COARSE_SPLITS, *found]
