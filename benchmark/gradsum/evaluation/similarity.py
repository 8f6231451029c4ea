"""How alike two sets of maps are: Adebayo et al.'s four map measures and GradSUM's profile Spearman.

Map measures take two (B, H, W) arrays and return one value per image (1 = identical):

- `spearman_abs`: Spearman rank correlation of |map|, the paper's headline measure (Pearson of scipy's
  average ranks, which is what `scipy.stats.spearmanr` computes, batched);
- `spearman`: Spearman rank correlation of the signed maps (diverging maps keep their sign);
- `ssim`: structural similarity (scikit-image) of the maps scaled by their max |value| (the paper's
  diverging normalisation m / max|m|), so both lie in [-1, 1] and `data_range` is that interval's width;
- `hog`: Pearson correlation of the HOG descriptors (scikit-image, `HOG_PARAMETERS`) of the same scaled maps.

A constant map (the uniform null explainer, or a map that randomisation flattened) ranks nothing, so
rank and Pearson correlations are undefined for it. Two constant maps are taken as identical (1), a
constant map against a varying one as sharing no structure (0). The sanity check's calibrated drop takes
two constant maps as sharing no ordering either (`ORDERING`, 0): two randomised copies that both flatten a
map have not kept a common structure, and counting them as identical would put the floor at the ceiling.

`profile_spearman` compares what GradSUM reports: the Spearman correlation over classes between the
class profiles (per-class means of the GradSUM score over the images) of the two sets of maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

from gradsum.aggregation import class_scores, spearman_ci
from gradsum.errors import GradSUMError
from gradsum.registry import Registry

#: name → per-image similarity of two (B, H, W) map arrays
SIMILARITIES: Registry[MapSimilarity] = Registry("map similarity")

#: the similarity the table names for the profile-level Spearman (not a per-image map measure)
PROFILE_SPEARMAN = "profile_spearman"

#: values of maps scaled by max |m| lie in [-1, 1]; SSIM's data_range is the width of that interval
SSIM_DATA_RANGE = 2.0

#: HOG of the scaled maps: 16-pixel cells (attribution maps are smooth, often upsampled from a coarse
#: grid, so 8-pixel cells mostly describe interpolation), 2×2-cell blocks, 9 unsigned orientations
HOG_PARAMETERS: dict[str, Any] = {"orientations": 9, "pixels_per_cell": (16, 16), "cells_per_block": (2, 2)}


@dataclass(frozen=True)
class MapSimilarity:
    """A per-image similarity in two steps, so the original maps are described once for every variant.

    `describe` turns float64 maps (B, H, W) into per-image descriptors (B, ...); `compare` turns two
    descriptor arrays into one value per image. Calling it on two map arrays does both.
    """

    describe: Callable[[np.ndarray], np.ndarray]
    compare: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = _pairs(a, b)
        return self.compare(self.describe(a), self.describe(b))


def _pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 3 or a.shape != b.shape:
        raise GradSUMError(f"maps: expected two (B, H, W) arrays of one shape, got {a.shape} and {b.shape}")
    return a, b


#: what two constant maps score: identical (the map measures) or sharing no ordering (the sanity drop)
IDENTICAL, ORDERING = 1.0, 0.0


def row_correlation(x: np.ndarray, y: np.ndarray, both_constant: float = IDENTICAL) -> np.ndarray:
    """Pearson correlation of matching rows of (B, ...) arrays, with this module's constant-map convention
    (`both_constant`: the value of two constant rows)."""
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    # a constant row is found exactly by its range; its centred values may carry rounding residue
    x_constant, y_constant = np.ptp(x, axis=1) == 0, np.ptp(y, axis=1) == 0
    x, y = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    r = np.where(x_constant | y_constant, np.where(x_constant & y_constant, both_constant, 0.0), r)
    return np.clip(r, -1.0, 1.0)


def ranks(maps: np.ndarray) -> np.ndarray:
    """Per-image ranks of the pixels (ties averaged, scipy's rankdata): Spearman is Pearson on these."""
    return np.asarray(stats.rankdata(maps.reshape(len(maps), -1), axis=1))


def scaled(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its max |value| (Adebayo's diverging normalisation); a zero map stays zero."""
    peak = np.abs(maps).max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def _ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array(
        [float(structural_similarity(x, y, data_range=SSIM_DATA_RANGE)) for x, y in zip(a, b, strict=True)]
    )


def hog_descriptors(maps: np.ndarray) -> np.ndarray:
    """(B, D) HOG feature vectors of the maps scaled to [-1, 1], with `HOG_PARAMETERS`."""
    return np.stack([hog(image, feature_vector=True, **HOG_PARAMETERS) for image in scaled(maps)])


def absolute_ranks(maps: np.ndarray) -> np.ndarray:
    """Per-image ranks of |map|."""
    return ranks(np.abs(maps))


SIMILARITIES.add("spearman_abs", MapSimilarity(absolute_ranks, row_correlation))
SIMILARITIES.add("spearman", MapSimilarity(ranks, row_correlation))
SIMILARITIES.add("ssim", MapSimilarity(scaled, _ssim))
SIMILARITIES.add("hog", MapSimilarity(hog_descriptors, row_correlation))


def ordering_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image Pearson of two rank descriptors (`ranks`, `absolute_ranks`), constant maps sharing no
    ordering (`ORDERING`): the similarity of the sanity check's calibrated drop."""
    return row_correlation(a, b, both_constant=ORDERING)


def normalised_drop(randomised: np.ndarray, floor: np.ndarray, ceiling: np.ndarray) -> float:
    """(mean(ceiling − randomised)) / (mean(ceiling − floor)) over the images where all three are defined.

    1: the maps of the randomised model are as unlike the trained model's as two unrelated random models'
    maps are unlike each other; 0: they changed no more than under retraining with another seed. NaN where
    the ceiling does not lie above the floor on average (the measure cannot tell a trained model from a
    destroyed one) or no image is defined.
    """
    values = np.stack([np.asarray(v, dtype=np.float64) for v in (randomised, floor, ceiling)])
    defined = np.isfinite(values).all(axis=0)
    r, f, c = values[:, defined]
    span = float(np.mean(c - f)) if defined.any() else float("nan")
    if not span > 0:
        return float("nan")
    return float(np.mean(c - r)) / span


def image_class_scores(maps: torch.Tensor, labels: torch.Tensor, resolution: str = "label") -> np.ndarray:
    """(B, C) GradSUM scores of a batch (NaN where a class is absent): the rows a profile averages."""
    return class_scores(maps, labels, resolution=resolution).score.cpu().numpy()


def class_profile(scores: np.ndarray) -> np.ndarray:
    """Per-class mean over the images that contain the class, (N, C) → (C,); NaN for absent classes."""
    present = np.isfinite(scores)
    counts = present.sum(axis=0)
    sums = np.where(present, scores, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)


def profile_spearman(
    scores_a: np.ndarray, scores_b: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Spearman over the classes both profiles hold, with its Fisher-z CI (`aggregation.spearman_ci`).

    `scores_a` and `scores_b` are (N, C) per-image class scores of the same images. Constant profiles
    (a uniform map scores every class alike) follow this module's convention, the interval being that
    value alone.
    """
    if scores_a.shape != scores_b.shape:
        raise GradSUMError(
            f"scores: the two score tables differ in shape, {scores_a.shape} vs {scores_b.shape}"
        )
    a, b = class_profile(scores_a), class_profile(scores_b)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size >= 2 and (np.ptp(a) == 0 or np.ptp(b) == 0):
        rho = float(row_correlation(a[None], b[None])[0])
        return rho, rho, rho
    return spearman_ci(a, b, confidence)
