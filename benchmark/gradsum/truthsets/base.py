"""The truth-set interface every stage reads: images, Cityscapes class maps, targets, metadata."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gradsum.errors import GradSUMError, TruthSetError
from gradsum.taxonomy import TASKS
from gradsum.truthsets.labels import NUM_CITYSCAPES_IDS, ClassTable, ignored_cityscapes_ids

#: The one sign convention of the `steering` target in every reader (and every trained model): positive =
#: steer right. Vehicle logs follow ISO 8855 (x forward, y left, z up: yaw rate positive = turning left),
#: so readers convert them with `steering_from_yaw_rate`.
STEERING_SIGN = "positive = steer right"


def steering_from_yaw_rate(yaw_rate: float, speed: float, min_speed: float) -> float:
    """Path curvature (1/m) in the steering convention from an ISO 8855 yaw rate (rad/s, + = left) and
    speed (m/s): −yawRate / speed, with the speed floored at `min_speed` so slow frames stay finite."""
    return -yaw_rate / max(speed, min_speed)


@dataclass(frozen=True)
class CauseDeclaration:
    """Which classes a truth set states are causal for a task, and which it states are independent of it.

    Classes in neither tuple are undeclared (e.g. correlated with the target without causing it).
    """

    causal: tuple[str, ...]
    independent: tuple[str, ...]


@dataclass
class Sample:
    """One frame: RGB image, per-pixel Cityscapes ids, optional targets and metadata.

    `labels` are always Cityscapes label ids (uint8, 0..33) so that profiles from different
    truth sets compare class by class; `raw_labels` keeps the truth set's own ids.
    """

    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) uint8, Cityscapes ids
    targets: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    raw_labels: np.ndarray | None = None
    #: (H, W) int32 Cityscapes instance ids (class id · 1000 + k on thing instances, the class id
    #: elsewhere), where the truth set has them
    instances: np.ndarray | None = None


class TruthSet(abc.ABC):
    """A split of a truth set: indexable, iterable, with a class table and known tasks."""

    #: short identifier of the reader kind ("synthetic", "cityscapes", "plugin", ...)
    kind: str = ""

    def __init__(self, root: Path, split: str) -> None:
        self.root = Path(root)
        self.split = split

    @property
    @abc.abstractmethod
    def class_table(self) -> ClassTable:
        """The truth set's own classes with their mapping onto Cityscapes ids."""

    @property
    @abc.abstractmethod
    def tasks(self) -> tuple[str, ...]:
        """The targets every sample carries (a subset of `TASKS`)."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    @property
    def parameters(self) -> Mapping[str, Any]:
        """Generation or source parameters recorded with results and model cards."""
        return {}

    @property
    def causes(self) -> Mapping[str, CauseDeclaration]:
        """Task → the classes this truth set declares causal and independent (none by default)."""
        return {}

    def cause_mask(self, index: int, task: str) -> np.ndarray | None:
        """(H, W) bool: the pixels that cause sample `index`'s `task` target; None when none are known."""
        return None

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]

    def label_map(self, index: int) -> np.ndarray:
        """(H, W) uint8 Cityscapes ids of sample `index`, without decoding its image where the reader can."""
        return self[index].labels

    def image(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of sample `index`, without decoding its labels where the reader can."""
        return self[index].image

    def targets(self, task: str) -> np.ndarray:
        """All samples' values of `task`, without decoding images where the reader can avoid it."""
        return np.array([self[i].targets[task] for i in range(len(self))], dtype=np.float32)

    def torch_dataset(self, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> TorchTruthSet:
        """A torch `Dataset` over this split (works with `DataLoader` workers)."""
        return TorchTruthSet(self, transform)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: kind, root, split, size, tasks, parameters."""
        return {
            "kind": self.kind,
            "root": str(self.root),
            "split": self.split,
            "size": len(self),
            "tasks": list(self.tasks),
            "parameters": dict(self.parameters),
        }


#: The split a user is pointed to when the one named has no labels (Cityscapes' val has them, test not).
LABELLED_SPLIT = "val"


def labelled_pixels(counts: np.ndarray) -> int:
    """Pixels of classes profiles count (not void or ignored) in a histogram over Cityscapes ids."""
    counted = np.ones(NUM_CITYSCAPES_IDS, dtype=bool)
    counted[ignored_cityscapes_ids()] = False
    return int(counts[:NUM_CITYSCAPES_IDS][counted].sum())


def has_labels(labels: np.ndarray) -> bool:
    """True when some pixel of a Cityscapes id map holds a class profiles count."""
    return labelled_pixels(np.bincount(labels.ravel(), minlength=NUM_CITYSCAPES_IDS)) > 0


def no_labels_message(root: Path, split: str, probed: int) -> str:
    """Why a split cannot be profiled: every label map read holds only void or ignored ids."""
    hint = f"use --split {LABELLED_SPLIT}" if split != LABELLED_SPLIT else "use a split with labels"
    return (
        f"{root}: split {split!r} has no labels (every label map probed is unlabeled/void, {probed} read); "
        f"{hint}"
    )


def require_labels(truthset: TruthSet, probe: int = 8) -> None:
    """Raise TruthSetError when `probe` label maps spread over the split hold only void or ignored ids.

    Cheap (labels only, no images): run it before attribution so an unlabelled split (Cityscapes'
    public `test`) fails up front instead of after attributing every image.
    """
    if len(truthset) == 0:
        raise TruthSetError(f"{truthset.root}: split {truthset.split!r} is empty (0 samples)")
    if probe < 1:
        raise GradSUMError(f"probe={probe}: must be at least 1")
    indices = np.unique(np.linspace(0, len(truthset) - 1, num=min(probe, len(truthset))).round().astype(int))
    if not any(has_labels(truthset.label_map(int(i))) for i in indices):
        raise TruthSetError(no_labels_message(truthset.root, truthset.split, len(indices)))


def sample_id(meta: Mapping[str, Any], index: int) -> str:
    """A stable id for a sample: the Cityscapes frame stem, else the image file's stem, else its index."""
    if "frame" in meta:
        return str(meta["frame"])
    for key in ("image", "image_file"):
        if key in meta:
            return Path(str(meta[key])).stem
    return str(index)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float32 in [0, 1]: the input convention of every GradSUM model."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


class TorchTruthSet(Dataset[dict[str, Any]]):
    """Items are dicts: `image` (3,H,W) float in [0,1], `labels` (H,W) int64, `targets`, `index`."""

    def __init__(self, truthset: TruthSet, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.truthset = truthset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.truthset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.truthset[index]
        image = image_to_tensor(sample.image)
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "labels": torch.from_numpy(sample.labels.astype(np.int64)),
            "targets": {k: torch.tensor(v, dtype=torch.float32) for k, v in sample.targets.items()},
            "index": index,
        }


class ArrayTruthSet(TruthSet):
    """An in-memory truth set (tests, notebooks, a user's own arrays)."""

    kind = "array"

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        targets: Mapping[str, np.ndarray] | None = None,
        class_table: ClassTable | None = None,
        split: str = "test",
    ) -> None:
        from gradsum.truthsets.labels import CITYSCAPES

        super().__init__(Path("<memory>"), split)
        if images.shape[:3] != labels.shape[:3]:
            raise TruthSetError(
                f"array truth set: images {images.shape} and labels {labels.shape} differ in size"
            )
        self._images = images
        self._labels = labels
        self._targets = {k: np.asarray(v, dtype=np.float32) for k, v in (targets or {}).items()}
        self._table = class_table or CITYSCAPES

    @property
    def class_table(self) -> ClassTable:
        return self._table

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t in TASKS if t in self._targets)

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return Sample(
            image=self._images[index],
            labels=self._table.to_cityscapes(self._labels[index]),
            targets={k: float(v[index]) for k, v in self._targets.items()},
            meta={"index": index},
            raw_labels=self._labels[index],
        )

    def targets(self, task: str) -> np.ndarray:
        return self._targets[task]
