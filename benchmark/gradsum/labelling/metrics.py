"""How well predicted labels match the truth: a confusion matrix over Cityscapes ids, IoU per class, mIoU,
pixel accuracy.

Pixels whose true id is void (ignored in Cityscapes evaluation, `ignored_cityscapes_ids`, 'unlabeled'
among them) are left out, as in the Cityscapes benchmark; a prediction of a void id on a labelled pixel
counts as wrong. mIoU averages over the classes present in the truth, so a class the held-out frames never
show neither helps nor hurts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradsum.errors import ShapeError
from gradsum.truthsets.labels import NUM_CITYSCAPES_IDS, cityscapes_class, ignored_cityscapes_ids

#: The key of the mean IoU in `SegmentationScores.to_dict` (a segmenter card's held-out figures).
MIOU = "miou"
#: True ids that no metric counts.
VOID_IDS = frozenset(ignored_cityscapes_ids())


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(34, 34) int64 pixel counts, rows the true Cityscapes id, columns the predicted one; void truth left out."""
    if truth.shape != predicted.shape:
        raise ShapeError(f"truth {truth.shape} and predicted {predicted.shape} label maps differ in shape")
    for name, labels in (("truth", truth), ("predicted", predicted)):
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CITYSCAPES_IDS):
            raise ShapeError(f"{name}: label ids must lie in 0..{NUM_CITYSCAPES_IDS - 1}")
    true_ids = truth.astype(np.int64).ravel()
    kept = ~np.isin(true_ids, list(VOID_IDS))
    pairs = true_ids[kept] * NUM_CITYSCAPES_IDS + predicted.astype(np.int64).ravel()[kept]
    counts = np.bincount(pairs, minlength=NUM_CITYSCAPES_IDS**2)
    return counts.reshape(NUM_CITYSCAPES_IDS, NUM_CITYSCAPES_IDS)


def total_confusion(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The confusion matrix of many (truth, predicted) frames: their pixels pooled."""
    total = np.zeros((NUM_CITYSCAPES_IDS, NUM_CITYSCAPES_IDS), dtype=np.int64)
    for truth, predicted in pairs:
        total += confusion_matrix(truth, predicted)
    return total


@dataclass(frozen=True)
class SegmentationScores:
    """IoU of each Cityscapes id present in the truth, their mean, and the share of pixels labelled right."""

    iou: dict[int, float]
    miou: float
    pixel_accuracy: float
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, classes by Cityscapes name (what a segmenter card holds)."""
        return {
            MIOU: self.miou,
            "iou": {cityscapes_class(i).name: value for i, value in self.iou.items()},
            "pixel_accuracy": self.pixel_accuracy,
            "pixels": self.pixels,
        }


def scores(confusion: np.ndarray) -> SegmentationScores:
    """IoU = TP / (TP + FP + FN) per class present in the truth, mIoU over those, and pixel accuracy."""
    true_positive = np.diag(confusion).astype(np.float64)
    in_truth = confusion.sum(axis=1)
    in_prediction = confusion.sum(axis=0)
    present = [i for i in range(NUM_CITYSCAPES_IDS) if in_truth[i] > 0]
    iou = {i: float(true_positive[i] / (in_truth[i] + in_prediction[i] - true_positive[i])) for i in present}
    pixels = int(confusion.sum())
    return SegmentationScores(
        iou=iou,
        miou=float(np.mean(list(iou.values()))) if iou else float("nan"),
        pixel_accuracy=float(true_positive.sum() / pixels) if pixels else float("nan"),
        pixels=pixels,
    )
