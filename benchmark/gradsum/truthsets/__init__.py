"""Truth sets: driving images with per-pixel Cityscapes classes, targets and metadata.

`open_truthset(path, split, kind, spec)` picks the reader from what is on disk (or a plug-in spec);
the readers (`gradsum.truthsets.readers`) register themselves in `KINDS` with `@register_reader`
(`gradsum.truthsets.kinds`, see `gradsum truthsets`) when this package imports them. `require_labels` refuses a split without labels (Cityscapes' public test split)
before any work is spent on it. `degrade` holds the label degradations of the label-quality study
(`DEGRADATIONS`, Cityscapes' categories) and `RelabelledTruthSet` serves a truth set under other labels.
"""

from __future__ import annotations

from gradsum.truthsets import readers as _readers  # noqa: F401
from gradsum.truthsets.base import (
    STEERING_SIGN,
    TASKS,
    ArrayTruthSet,
    CauseDeclaration,
    Sample,
    TorchTruthSet,
    TruthSet,
    require_labels,
    steering_from_yaw_rate,
)
from gradsum.truthsets.degrade import (
    CATEGORY_IDS,
    DEGRADATIONS,
    Degradation,
    category_labels,
    degradation,
)
from gradsum.truthsets.kinds import (
    KINDS,
    SpecSource,
    TruthSetKind,
    default_split,
    detect_kind,
    open_truthset,
    register_reader,
    truthset_kind,
)
from gradsum.truthsets.labels import CITYSCAPES, ClassInfo, ClassTable
from gradsum.truthsets.relabelled import RelabelledTruthSet

__all__ = [
    "CATEGORY_IDS",
    "CITYSCAPES",
    "DEGRADATIONS",
    "KINDS",
    "STEERING_SIGN",
    "TASKS",
    "ArrayTruthSet",
    "CauseDeclaration",
    "ClassInfo",
    "ClassTable",
    "Degradation",
    "RelabelledTruthSet",
    "Sample",
    "SpecSource",
    "TorchTruthSet",
    "TruthSet",
    "TruthSetKind",
    "category_labels",
    "default_split",
    "degradation",
    "detect_kind",
    "open_truthset",
    "register_reader",
    "require_labels",
    "steering_from_yaw_rate",
    "truthset_kind",
]
