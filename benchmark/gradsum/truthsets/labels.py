"""The Cityscapes label table (from cityscapesscripts) and per-truth-set class tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from cityscapesscripts.helpers import labels as cs_labels

from gradsum.errors import SpecError

#: Cityscapes label ids run 0..33; one bincount slot per id.
NUM_CITYSCAPES_IDS = 34
#: The id that "unlabeled" pixels (and unmapped source classes) take in the Cityscapes scheme.
UNLABELED_ID = 0


@dataclass(frozen=True)
class ClassInfo:
    """One semantic class of a truth set and where it lands in the Cityscapes scheme."""

    id: int
    name: str
    category: str
    color: tuple[int, int, int]
    ignore: bool
    train_id: int
    cityscapes_id: int


@dataclass(frozen=True)
class ClassTable:
    """The classes of a truth set, with a many-to-one mapping onto Cityscapes ids."""

    classes: tuple[ClassInfo, ...]
    name: str = "cityscapes"

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if len(ids) != len(set(ids)):
            raise SpecError(f"class table {self.name!r}: duplicate class ids")
        for c in self.classes:
            if not 0 <= c.cityscapes_id < NUM_CITYSCAPES_IDS:
                raise SpecError(
                    f"class table {self.name!r}: class {c.name!r} maps to Cityscapes id {c.cityscapes_id}, "
                    f"outside 0..{NUM_CITYSCAPES_IDS - 1}"
                )

    @cached_property
    def by_id(self) -> Mapping[int, ClassInfo]:
        """Classes keyed by their own id."""
        return {c.id: c for c in self.classes}

    @cached_property
    def by_name(self) -> Mapping[str, ClassInfo]:
        """Classes keyed by name."""
        return {c.name: c for c in self.classes}

    @property
    def ids(self) -> list[int]:
        """All class ids, in table order."""
        return [c.id for c in self.classes]

    @cached_property
    def lookup(self) -> np.ndarray:
        """A 65536-entry array mapping own ids to Cityscapes ids; unknown ids map to -1."""
        table = np.full(65536, -1, dtype=np.int16)
        for c in self.classes:
            table[c.id] = c.cityscapes_id
        return table

    def unknown_ids(self, ids: Iterable[int]) -> list[int]:
        """The ids in `ids` that the table does not know."""
        known = self.by_id
        return sorted({int(i) for i in ids} - set(known))

    def to_cityscapes(self, labels: np.ndarray) -> np.ndarray:
        """Map a label array of own ids onto Cityscapes ids (uint8); unknown ids must be checked first."""
        mapped = self.lookup[labels.astype(np.int64)]
        return np.where(mapped < 0, UNLABELED_ID, mapped).astype(np.uint8)

    def to_dict(self) -> list[dict[str, object]]:
        """A JSON-ready form of the table."""
        return [
            {
                "id": c.id,
                "name": c.name,
                "category": c.category,
                "color": list(c.color),
                "ignore": c.ignore,
                "train_id": c.train_id,
                "cityscapes_id": c.cityscapes_id,
            }
            for c in self.classes
        ]


def _cityscapes_table() -> ClassTable:
    classes = tuple(
        ClassInfo(
            id=label.id,
            name=label.name,
            category=label.category,
            color=(int(label.color[0]), int(label.color[1]), int(label.color[2])),
            ignore=bool(label.ignoreInEval),
            train_id=label.trainId,
            cityscapes_id=label.id,
        )
        for label in cs_labels.labels
        if 0 <= label.id < NUM_CITYSCAPES_IDS
    )
    return ClassTable(classes=classes, name="cityscapes")


#: The official table: ids 0..33 with names, categories, colours, trainIds and ignore flags.
CITYSCAPES = _cityscapes_table()


def cityscapes_class(name_or_id: str | int) -> ClassInfo:
    """One Cityscapes class by name or id."""
    if isinstance(name_or_id, str):
        try:
            return CITYSCAPES.by_name[name_or_id]
        except KeyError:
            raise SpecError(
                f"unknown Cityscapes class {name_or_id!r}; valid: {', '.join(CITYSCAPES.by_name)}"
            ) from None
    try:
        return CITYSCAPES.by_id[int(name_or_id)]
    except KeyError:
        raise SpecError(f"unknown Cityscapes id {name_or_id}; valid: 0..{NUM_CITYSCAPES_IDS - 1}") from None


def ignored_cityscapes_ids() -> list[int]:
    """Cityscapes ids that are void/ignored in evaluation (excluded from profiles)."""
    return [c.id for c in CITYSCAPES.classes if c.ignore]


def cityscapes_palette() -> np.ndarray:
    """A (34, 3) uint8 array of the Cityscapes colours, indexed by id."""
    palette = np.zeros((NUM_CITYSCAPES_IDS, 3), dtype=np.uint8)
    for c in CITYSCAPES.classes:
        palette[c.id] = c.color
    return palette


def subset(names: Sequence[str]) -> ClassTable:
    """A Cityscapes table restricted to `names` (used by the synthetic set)."""
    return ClassTable(classes=tuple(cityscapes_class(n) for n in names), name="cityscapes-subset")
