"""Controlled label degradations for the label-quality study: coarse polygons, boundary error, categories.

Each degradation is a frozen dataclass in `DEGRADATIONS`, built by name with `degradation(name, **params)`,
that maps an (H, W) uint8 map of Cityscapes label ids to a degraded one of the same shape and dtype.
Unlabelled pixels take `UNLABELED_ID` (0), which profiles never count.

Regions are the pixels of every id but `UNLABELED_ID`, the ignored ids (ego vehicle, static, parking, ...)
included: an annotator's boundary error moves them as it moves any class, and profiles drop them anyway.
Distances are Euclidean, in pixels, between pixel centres (`scipy.ndimage.distance_transform_edt`); the
image edge is no class boundary, as annotators leave no void along the frame.

- `coarse(tolerance, band, min_area)`: Cityscapes' gtCoarse in miniature: each region outlined, its outline
  simplified, re-filled, and an unlabelled band along every boundary of the exact labels.
- `erode(k)` / `dilate(k)`: every class shrinks (into void) / grows (over its neighbours) by k px.
- `jitter(p, width)`: boundary noise; a pixel near an outline takes a random neighbour's class with
  probability p (gentler than a whole pixel of erosion or dilation, which at 96×192 erases thin classes).
- granularity: `category_labels` merges ids into Cityscapes' categories, each written as one class id
  (`CATEGORY_IDS`), so a profile over categories is scored like one over classes; it answers what a
  category profile hides, not how labels degrade, so it is no entry of `DEGRADATIONS`.
"""

from __future__ import annotations

import abc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from scipy import ndimage
from skimage import draw, measure

from gradsum.dataspec import build
from gradsum.errors import ShapeError, SpecError
from gradsum.registry import Registry
from gradsum.truthsets.labels import CITYSCAPES, UNLABELED_ID


class Degradation(abc.ABC):
    """A label degradation: `__call__(labels)` maps (H, W) uint8 Cityscapes ids to degraded ones."""

    #: the registry name (set by `register_degradation`)
    name: ClassVar[str] = ""

    @property
    @abc.abstractmethod
    def level(self) -> str:
        """A short name of the degradation and its setting for tables, e.g. 'erode_2'."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line saying what the degradation does, with its parameters."""

    @abc.abstractmethod
    def degrade(self, labels: np.ndarray) -> np.ndarray:
        """The degraded ids of a checked (H, W) uint8 label map."""

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """The degraded (H, W) uint8 ids of `labels`; anything but a 2-D uint8 array raises ShapeError."""
        if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.dtype != np.uint8:
            got = (
                f"{labels.dtype} {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
            )
            raise ShapeError(f"labels: expected an (H, W) uint8 array of Cityscapes ids, got {got}")
        return self.degrade(labels)


DEGRADATIONS: Registry[type[Degradation]] = Registry("label degradation")

D = TypeVar("D", bound=type[Degradation])


def register_degradation(name: str) -> Callable[[D], D]:
    """Class decorator: add a `Degradation` subclass to `DEGRADATIONS` as `name` (its `name` too)."""

    def add(cls: D) -> D:
        cls.name = name
        DEGRADATIONS.add(name, cls)
        return cls

    return add


def degradation(name: str, **params: Any) -> Degradation:
    """The degradation `name` with `params`; an unknown name lists the valid ones, and an unknown,
    mistyped or out-of-range parameter raises SpecError naming it."""
    cls = DEGRADATIONS.get(name, "degradation")
    return build(cls, params, f"degradation {name!r}")


def _positive(owner: str, field: str, value: float, minimum: float) -> None:
    if not value >= minimum:
        raise SpecError(f"degradation {owner!r}: field {field!r} must be at least {minimum:g}, got {value!r}")


def _regions(labels: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(id, mask) of every id present but `UNLABELED_ID`, in id order."""
    for class_id in np.unique(labels):
        if class_id != UNLABELED_ID:
            yield int(class_id), labels == class_id


def near_boundary(labels: np.ndarray, distance: float) -> np.ndarray:
    """(H, W) bool: the pixels within `distance` px of a pixel of another id (void included)."""
    near = np.zeros(labels.shape, dtype=bool)
    for class_id in np.unique(labels):
        own = labels == class_id
        # edt of a mask: each True pixel's distance to the nearest False one (the nearest other id)
        near |= own & (ndimage.distance_transform_edt(own) <= distance)
    return near


@register_degradation("erode")
@dataclass(frozen=True)
class Erode(Degradation):
    """Every class shrinks by `k` px: a pixel within `k` px of another id (void included) becomes void."""

    k: int

    def __post_init__(self) -> None:
        _positive(self.name, "k", self.k, 1)

    @property
    def level(self) -> str:
        return f"erode_{self.k}"

    def describe(self) -> str:
        return f"every class eroded by {self.k} px; the pixels it loses become unlabelled"

    def degrade(self, labels: np.ndarray) -> np.ndarray:
        out = labels.copy()
        out[near_boundary(labels, self.k) & (labels != UNLABELED_ID)] = UNLABELED_ID
        return out


@register_degradation("dilate")
@dataclass(frozen=True)
class Dilate(Degradation):
    """Every class grows by `k` px, over void and over other classes alike.

    Conflicts: a pixel takes the smallest class (fewest pixels in the image; lower id on a tie) among its
    own and those within `k` px of it, so thin things (poles, signs, people) grow into their large
    surroundings, the direction in which a boundary error moves most of a small class's mass. Equivalently
    each class, dilated, is painted in order of decreasing area. Void pixels farther than `k` px from every
    class stay void.
    """

    k: int

    def __post_init__(self) -> None:
        _positive(self.name, "k", self.k, 1)

    @property
    def level(self) -> str:
        return f"dilate_{self.k}"

    def describe(self) -> str:
        return f"every class dilated by {self.k} px; where classes meet, the smaller one wins"

    def degrade(self, labels: np.ndarray) -> np.ndarray:
        out = labels.copy()
        regions = sorted(_regions(labels), key=lambda region: (-int(region[1].sum()), -region[0]))
        for class_id, mask in regions:
            # edt of the complement: every pixel's distance to the nearest pixel of the class
            out[ndimage.distance_transform_edt(~mask) <= self.k] = class_id
        return out


@register_degradation("jitter")
@dataclass(frozen=True)
class Jitter(Degradation):
    """Boundary noise: each pixel within `width` px of another id takes, with probability `p`, the id of a
    pixel drawn uniformly from the (2·width + 1)² square around it (itself included, clipped at the frame).

    An annotator's hand wandering along outlines, unbiased in direction: no class grows or shrinks on
    average, and nothing becomes void, so it degrades labels more gently than a whole pixel of erosion or
    dilation. The draw is seeded by `seed` and the label map's bytes: a map always degrades the same way.
    """

    p: float
    width: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        _positive(self.name, "p", self.p, 0)
        if self.p > 1:
            raise SpecError(f"degradation {self.name!r}: field 'p' must be at most 1, got {self.p!r}")
        _positive(self.name, "width", self.width, 1)

    @property
    def level(self) -> str:
        return f"jitter_p{self.p:g}_w{self.width}"

    def describe(self) -> str:
        return (
            f"boundary noise: a pixel within {self.width} px of another class takes a random neighbour's "
            f"class (within {self.width} px) with probability {self.p:g}"
        )

    def degrade(self, labels: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(labels.tobytes())])
        rows, cols = np.nonzero(near_boundary(labels, self.width) & (rng.random(labels.shape) < self.p))
        shift = rng.integers(-self.width, self.width + 1, size=(2, rows.size))
        height, width = labels.shape
        out = labels.copy()
        out[rows, cols] = labels[
            np.clip(rows + shift[0], 0, height - 1), np.clip(cols + shift[1], 0, width - 1)
        ]
        return out


@register_degradation("coarse")
@dataclass(frozen=True)
class Coarse(Degradation):
    """Polygons in the manner of Cityscapes' gtCoarse, from exact labels.

    Each 4-connected region of each class (`scipy.ndimage.label`) has its holes filled, is outlined
    (`skimage.measure.find_contours`), simplified to a polygon within `tolerance` px of its outline
    (`skimage.measure.approximate_polygon`) and re-filled (`skimage.draw.polygon`); regions are painted in
    order of decreasing area, so small ones stay on top of the large ones around them, as later polygons
    do in Cityscapes. Regions of fewer than `min_area` pixels (default 2·band²) are skipped, as annotators
    skip them: their pixels become void. Last, every pixel within `band` px of a class boundary of the
    exact labels becomes void: the unlabelled band coarse annotations leave along boundaries.
    """

    tolerance: float
    band: int
    #: regions smaller than this many pixels are dropped to void (None: 2·band²)
    min_area: int | None = None

    def __post_init__(self) -> None:
        _positive(self.name, "tolerance", self.tolerance, 0)
        _positive(self.name, "band", self.band, 0)
        if self.min_area is not None:
            _positive(self.name, "min_area", self.min_area, 0)

    @property
    def minimum_area(self) -> int:
        """The smallest region painted, in pixels."""
        return 2 * self.band * self.band if self.min_area is None else self.min_area

    @property
    def level(self) -> str:
        return f"coarse_t{self.tolerance:g}_b{self.band}"

    def describe(self) -> str:
        return (
            f"coarse polygons: outlines simplified within {self.tolerance:g} px, a {self.band} px unlabelled "
            f"band along boundaries, regions under {self.minimum_area} px dropped"
        )

    def degrade(self, labels: np.ndarray) -> np.ndarray:
        kept: list[tuple[int, int, np.ndarray, tuple[slice, slice]]] = []
        dropped = np.zeros(labels.shape, dtype=bool)
        for class_id, mask in _regions(labels):
            components, _ = ndimage.label(mask)
            for number, box in enumerate(ndimage.find_objects(components), start=1):
                component = components[box] == number
                area = int(component.sum())
                if area < self.minimum_area:
                    dropped[box] |= component
                else:
                    kept.append((area, class_id, component, box))
        out = np.full(labels.shape, UNLABELED_ID, dtype=np.uint8)
        for _, class_id, component, box in sorted(kept, key=lambda region: -region[0]):
            out[self._polygon(component, box, labels.shape)] = class_id
        out[dropped | near_boundary(labels, self.band)] = UNLABELED_ID
        return out

    def _polygon(self, component: np.ndarray, box: tuple[slice, slice], shape: tuple[int, ...]) -> np.ndarray:
        """(H, W) bool: the simplified polygon(s) of one region, given as a mask inside its bounding box."""
        # padded by one so that a region touching the box (or the image) edge still has a closed outline
        padded = np.pad(ndimage.binary_fill_holes(component), 1).astype(np.float32)
        filled = np.zeros(shape[:2], dtype=bool)
        origin = np.array([box[0].start - 1, box[1].start - 1], dtype=np.float64)
        for contour in measure.find_contours(padded, 0.5):
            polygon = measure.approximate_polygon(contour, self.tolerance) + origin
            rows, cols = draw.polygon(polygon[:, 0], polygon[:, 1], shape=shape[:2])
            filled[rows, cols] = True
        return filled


def _category_representatives() -> dict[str, int]:
    """Each evaluated Cityscapes category's first evaluated class id (void has none)."""
    chosen: dict[str, int] = {}
    for info in CITYSCAPES.classes:
        if not info.ignore:
            chosen.setdefault(info.category, info.id)
    return chosen


#: Cityscapes category → the class id that stands for it in a category label map, so that the class-score
#: code scores each category as GradSUM scores a class (its map sum ÷ its pixel count).
CATEGORY_IDS: dict[str, int] = _category_representatives()


def _category_lookup() -> np.ndarray:
    # ids outside the Cityscapes table keep 255, which category_labels refuses
    lookup = np.full(256, 255, dtype=np.uint8)
    for info in CITYSCAPES.classes:
        lookup[info.id] = UNLABELED_ID if info.ignore else CATEGORY_IDS[info.category]
    return lookup


_CATEGORY_LOOKUP = _category_lookup()


def category_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 Cityscapes ids merged into Cityscapes' 7 evaluated categories (flat, construction,
    object, nature, sky, human, vehicle), each pixel given its category's `CATEGORY_IDS` class id; void and
    ignored classes become unlabelled."""
    if not isinstance(labels, np.ndarray) or labels.dtype != np.uint8:
        got = labels.dtype if isinstance(labels, np.ndarray) else type(labels).__name__
        raise ShapeError(f"labels: expected a uint8 array of Cityscapes ids, got {got}")
    merged = _CATEGORY_LOOKUP[labels]
    if (merged == 255).any():
        unknown = sorted(int(i) for i in np.unique(labels[merged == 255]))
        raise SpecError(
            f"labels: ids {unknown} are not Cityscapes label ids (0..{len(CITYSCAPES.classes) - 1})"
        )
    return merged
