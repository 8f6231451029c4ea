"""Erasing one class from an image: in-domain by the truth set's own re-rendering, else by a fill.

A truth set that can re-render a scene without a class (the synthetic set's `erase`) erases in-domain.
Real truth sets have no renderer, so the class's pixels are filled by one of `ERASERS` (mean colour,
heavy blur, OpenCV inpainting): the model then sees an image unlike any it was trained on, and every
figure measured on it is flagged out-of-domain.

A truth set that can also re-render a class with only its texture changed (the synthetic set's
`placebo`) gives the erasure a placebo: the output change that merely repainting the class's pixels
causes, which the causal referee subtracts before calling a class material. Real truth sets have none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from gradsum.errors import GradSUMError
from gradsum.registry import Registry
from gradsum.truthsets import TruthSet
from gradsum.truthsets.base import Sample
from gradsum.truthsets.labels import cityscapes_class

#: (image uint8 (H, W, 3), mask bool (H, W)) → image with the masked pixels replaced, the rest unchanged.
Filler = Callable[[np.ndarray, np.ndarray], np.ndarray]

ERASERS: Registry[Filler] = Registry("eraser")

#: Erasure by the truth set's own renderer (the image stays in the training distribution).
IN_DOMAIN = "in"
#: Erasure by a fill (the image leaves the training distribution).
OUT_OF_DOMAIN = "out"
#: The filler used when a run names none.
DEFAULT_FILLER = "inpaint"
#: Gaussian sigma of the `blur` filler as a fraction of the image's longer side: wide enough that no
#: shape or texture of the class survives, so only its region's colour context is left.
BLUR_SIGMA_FRACTION = 0.05
#: Neighbourhood radius in pixels of OpenCV's Telea inpainting (the `inpaint` filler).
INPAINT_RADIUS = 5


@runtime_checkable
class InDomainEraser(Protocol):
    """A truth set that re-renders a sample without one class (the synthetic set)."""

    #: class name → how it is erased ("removed" | "repainted"); the classes it can erase
    ERASURE: Mapping[str, str]

    def erase(self, index: int, cls: str, donor: int | None = None) -> Sample: ...


@runtime_checkable
class InDomainPlacebo(Protocol):
    """A truth set that re-renders a sample with only one class's texture redrawn (the synthetic set)."""

    def placebo(self, index: int, cls: str) -> Sample: ...


def _check(image: np.ndarray, mask: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise GradSUMError(f"image: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if mask.dtype != np.bool_ or mask.shape != image.shape[:2]:
        raise GradSUMError(f"mask: expected bool {image.shape[:2]}, got {mask.dtype} {mask.shape}")


def _paste(image: np.ndarray, mask: np.ndarray, fill: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[mask] = fill[mask] if fill.ndim == 3 else fill
    return out


def mean_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The masked pixels set to the image's mean colour outside the mask.

    The mean outside, not the class's own mean: the class's own colour would keep the very evidence the
    erasure takes away. A mask covering the whole image has no outside, and takes the image mean.
    """
    _check(image, mask)
    source = image[~mask] if (~mask).any() else image.reshape(-1, 3)
    colour = np.round(source.mean(axis=0)).astype(np.uint8)
    return _paste(image, mask, colour)


def blur_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The masked pixels replaced by a heavy Gaussian blur of the whole image (`BLUR_SIGMA_FRACTION`)."""
    _check(image, mask)
    sigma = BLUR_SIGMA_FRACTION * max(image.shape[:2])
    # ksize (0, 0): OpenCV sizes the kernel from sigma (about ±3 sigma).
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return _paste(image, mask, blurred)


def inpaint_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The masked pixels inpainted by OpenCV's Telea method with radius `INPAINT_RADIUS`."""
    _check(image, mask)
    painted = cv2.inpaint(
        np.ascontiguousarray(image), mask.astype(np.uint8) * 255, INPAINT_RADIUS, cv2.INPAINT_TELEA
    )
    # cv2.inpaint keeps the unmasked pixels; pasting makes that a guarantee rather than an observation.
    return _paste(image, mask, painted)


ERASERS.add("mean", mean_fill)
ERASERS.add("blur", blur_fill)
ERASERS.add("inpaint", inpaint_fill)


def erasable_classes(truthset: TruthSet) -> frozenset[str] | None:
    """The classes the truth set can erase in-domain; None when any class can be filled instead."""
    return frozenset(truthset.ERASURE) if isinstance(truthset, InDomainEraser) else None


def erased_sample(
    truthset: TruthSet, index: int, cls: str, filler: str, sample: Sample | None = None
) -> tuple[np.ndarray, str]:
    """Sample `index` without class `cls` (a Cityscapes name) and its domain ("in" | "out").

    The truth set's own `erase` when it has one, else filler `filler` of `ERASERS` on the class's pixels;
    `sample` (the truth set's sample `index`) saves reading it again.
    """
    fill = ERASERS.get(filler, "filler")
    if isinstance(truthset, InDomainEraser):
        if cls not in truthset.ERASURE:
            raise GradSUMError(
                f"cls={cls!r}: {truthset.root} cannot erase it; valid: {', '.join(sorted(truthset.ERASURE))}"
            )
        return truthset.erase(index, cls).image, IN_DOMAIN
    original = sample if sample is not None else truthset[index]
    mask = original.labels == cityscapes_class(cls).id
    if not mask.any():
        raise GradSUMError(f"cls={cls!r}: absent from sample {index} of {truthset.root}, nothing to erase")
    return fill(original.image, mask), OUT_OF_DOMAIN


def placebo_sample(truthset: TruthSet, index: int, cls: str) -> np.ndarray | None:
    """Image `index` with class `cls`'s texture redrawn in-domain; None when the truth set cannot render
    one (real truth sets: a fill of the class's own pixels would be an erasure, not a placebo)."""
    if not isinstance(truthset, InDomainPlacebo):
        return None
    return truthset.placebo(index, cls).image
