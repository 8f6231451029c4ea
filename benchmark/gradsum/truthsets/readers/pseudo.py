"""The `pseudo` reader: a truth set whose labels a segmenter predicted (`gradsum label`).

Layout: the Cityscapes one (`leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`, the predicted labelIds in
`gtFine/{split}/{city}/{stem}_gtFine_labelIds.png`, optional `vehicle/` files copied from the source), plus
per frame `gtFine/.../{stem}_gtFine_confidence.png`: the segmenter's probability of the class it chose, stored
as uint8 round(255 · confidence). Pixels whose confidence fell below the set's threshold hold labelId 0
(unlabeled), so profiles never count them; the confidence file keeps their raw value.

The `manifest.json` (kind `pseudo`, written last by `gradsum.labelling.writer`) is the one home of the
frames (stem → source file and targets, per split), the segmenter that predicted the labels and its settings.
A frame's targets come from the manifest; `steering` falls back on its vehicle file (the Cityscapes proxy)
where the manifest carries none. `parameters["label_source"]` says that the labels are predicted, by what,
with what held-out mIoU, threshold and inference mode, so results manifests and reports can say so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from gradsum.errors import TruthSetError
from gradsum.fileio import read_json_object
from gradsum.taxonomy import TASKS
from gradsum.truthsets.encodings import read_png
from gradsum.truthsets.kinds import SpecSource, register_reader
from gradsum.truthsets.layout import MANIFEST, SPLITS, FrameId, parse_image_name
from gradsum.truthsets.readers.cityscapes import FINE, IMAGE_FOLDER, CityscapesTruthSet

T = TypeVar("T")

PSEUDO_KIND = "pseudo"
#: 1: the first layout
FORMAT_VERSION = 1
#: the annotation folder predicted labels and confidences go to (the Cityscapes reader reads its labelIds)
ANNOTATION = FINE
#: `{stem}_{CONFIDENCE_SUFFIX}` in the annotation folder: uint8 round(CONFIDENCE_LEVELS · confidence)
CONFIDENCE_SUFFIX = f"{ANNOTATION}_confidence.png"
CONFIDENCE_LEVELS = 255
#: the key of the held-out mean IoU among a segmenter's `held_out` metrics
HELD_OUT_MIOU = "miou"  # as `gradsum.labelling.metrics.MIOU` writes it (that floor is above this one)
#: the split opened when none is named: every split is labelled, so the held-out ones come first
DEFAULT_SPLITS = ("test", "val", "train")


def confidence_path(frame: FrameId, root: Path) -> Path:
    """Where frame `frame`'s confidence map lies under `root`."""
    return frame.path(root, ANNOTATION, CONFIDENCE_SUFFIX)


@dataclass(frozen=True)
class SegmenterRecord:
    """What predicted the labels: enough to find, verify and judge it."""

    architecture: str
    #: the segmenter's file or folder as given to `gradsum label` (None when built in memory)
    path: str | None
    #: sha256 of its weights file (None when built in memory)
    sha256: str | None
    #: the Cityscapes labelId of each output channel
    classes: list[int]
    input_size: list[int]
    #: its card's metrics on its held-out split (`HELD_OUT_MIOU`, IoU per class, ...)
    held_out: dict[str, Any]


@dataclass(frozen=True)
class FrameRecord:
    """One labelled frame: where it came from and the targets it carries."""

    #: the frame's file relative to the source folder
    source: str
    targets: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitRecord:
    count: int
    #: the share of the split's pixels made void because their confidence fell below the threshold
    void_share: float
    #: stem → the frame's record
    frames: dict[str, FrameRecord]


@dataclass(frozen=True)
class PseudoManifest:
    """The `manifest.json` of a pseudo-labelled truth set."""

    segmenter: SegmenterRecord
    #: pixels with confidence below it are void (labelId 0)
    threshold: float
    #: `gradsum.labelling.segmenter.INFERENCE_MODES`: how frames were fitted to the segmenter
    mode: str
    batch_size: int
    splits: dict[str, SplitRecord]
    #: the folder of frames that was labelled
    source: str
    #: source files that could not be read (`skip_unreadable`), relative to `source`, with the reason
    skipped: dict[str, str]
    #: ISO 8601 UTC time of writing
    created: str
    gradsum_version: str
    kind: str = PSEUDO_KIND
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, root: Path) -> PseudoManifest:
        """The manifest at `root`; a wrong kind or version, or a missing or malformed field, raises naming it."""
        path = root / MANIFEST
        record = read_json_object(path, TruthSetError, "truth-set manifest")
        if record.get("kind") != PSEUDO_KIND:
            raise TruthSetError(f"{path}: field 'kind' is {record.get('kind')!r}, not {PSEUDO_KIND!r}")
        if record.get("format_version") != FORMAT_VERSION:
            raise TruthSetError(
                f"{path}: format_version {record.get('format_version')!r}; this reader reads {FORMAT_VERSION}: "
                f"label the frames again (gradsum label --overwrite)"
            )
        try:
            splits = {
                name: _build(
                    SplitRecord,
                    {
                        **_object(split, f"splits.{name}", path),
                        "frames": {
                            stem: _build(FrameRecord, frame, f"splits.{name}.frames.{stem}", path)
                            for stem, frame in _object(
                                split.get("frames"), f"splits.{name}.frames", path
                            ).items()
                        },
                    },
                    f"splits.{name}",
                    path,
                )
                for name, split in _object(record.get("splits"), "splits", path).items()
            }
            segmenter = _build(SegmenterRecord, record.get("segmenter"), "segmenter", path)
            return _build(cls, {**record, "segmenter": segmenter, "splits": splits}, "", path)
        except (TypeError, ValueError) as error:
            raise TruthSetError(f"{path}: malformed ({error})") from None

    def label_source(self) -> dict[str, Any]:
        """Where the labels came from, as recorded with results: predicted, by what, how good, how set."""
        return {
            "predicted": True,
            "architecture": self.segmenter.architecture,
            "segmenter": self.segmenter.path,
            "sha256": self.segmenter.sha256,
            "held_out_miou": self.segmenter.held_out.get(HELD_OUT_MIOU),
            "threshold": self.threshold,
            "mode": self.mode,
        }


def _object(value: Any, what: str, path: Path) -> dict[str, Any]:
    """`value` when it is a JSON object; else TruthSetError naming the field `what` and the file."""
    if not isinstance(value, dict):
        problem = "missing" if value is None else f"not an object ({type(value).__name__})"
        raise TruthSetError(f"{path}: field {what!r} is {problem}")
    return value


def _build(cls: type[T], value: Any, what: str, path: Path) -> T:
    """`cls` from the manifest object `value` at field `what`; a missing field raises naming it and the file."""
    record = _object(value, what or "(top level)", path)
    for item in fields(cls):  # type: ignore[arg-type]
        if item.name not in record and item.default is MISSING and item.default_factory is MISSING:
            raise TruthSetError(f"{path}: field {'.'.join(filter(None, (what, item.name)))!r} is missing")
    return cls(**record)


@register_reader(
    PSEUDO_KIND,
    description=f"labels predicted by a segmenter: a {MANIFEST} of kind {PSEUDO_KIND} (gradsum label)",
    priority=5,
)
class PseudoTruthSet(CityscapesTruthSet):
    """One split of a pseudo-labelled set: the Cityscapes reader over the manifest's frames, with their
    targets, confidences and the label source."""

    def __init__(self, root: str | Path, split: str) -> None:
        self.manifest = PseudoManifest.read(Path(root))
        if split not in self.manifest.splits:
            raise TruthSetError(
                f"{Path(root) / MANIFEST}: no split {split!r}; valid: {', '.join(self.manifest.splits)}"
            )
        self._records = self.manifest.splits[split].frames
        super().__init__(root, split, annotation=ANNOTATION)

    def _find_frames(self) -> list[FrameId]:
        """The manifest's frames of the split, sorted."""
        return sorted(
            parse_image_name(Path(f"{stem}_{IMAGE_FOLDER}.png"), self.split) for stem in self._records
        )

    def _targets(self, frame: FrameId) -> dict[str, float]:
        # the manifest's targets are the source's own; the vehicle proxy only fills in a missing steering
        return {**super()._targets(frame), **self._records[frame.stem].targets}

    def _meta(self, frame: FrameId) -> dict[str, Any]:
        return {
            **super()._meta(frame),
            "source": self._records[frame.stem].source,
            "confidence": str(confidence_path(frame, self.root)),
        }

    @property
    def tasks(self) -> tuple[str, ...]:
        # a task of the manifest counts where every frame carries it (the reader opens no empty split)
        shared = set.intersection(*(set(r.targets) for r in self._records.values()))
        carried = set(super().tasks) | shared
        return tuple(task for task in TASKS if task in carried)

    @property
    def parameters(self) -> Mapping[str, Any]:
        return {**super().parameters, "label_source": self.manifest.label_source()}

    def confidence(self, index: int) -> np.ndarray:
        """(H, W) float32 in [0, 1]: the segmenter's confidence in sample `index`'s labels, to 1/255."""
        raw = read_png(confidence_path(self.frames[index], self.root), "confidence")
        return raw.astype(np.float32) / CONFIDENCE_LEVELS

    # -- the kind ----------------------------------------------------------------------------------

    @staticmethod
    def detect(root: Path) -> bool:
        try:
            return bool(json.loads((root / MANIFEST).read_text(encoding="utf-8")).get("kind") == PSEUDO_KIND)
        except (OSError, ValueError, AttributeError):
            return False

    @classmethod
    def open(cls, root: Path, split: str, spec: SpecSource) -> PseudoTruthSet:
        return cls(root, split)

    @staticmethod
    def default_split(root: Path, spec: SpecSource) -> str:
        splits = PseudoTruthSet.splits(root, spec)
        return next((s for s in DEFAULT_SPLITS if s in splits), splits[0])

    @staticmethod
    def splits(root: Path, spec: SpecSource) -> list[str]:
        """The manifest's splits, train/val/test first."""
        labelled = PseudoManifest.read(root).splits
        return [s for s in SPLITS if s in labelled] + sorted(s for s in labelled if s not in SPLITS)
