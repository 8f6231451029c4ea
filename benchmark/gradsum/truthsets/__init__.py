"""Truth sets: driving images with per-pixel Cityscapes classes, targets and metadata.

`open_truthset(path, split)` picks the reader from what is on disk; readers register themselves
in `KINDS` (see `gradsum truthsets`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gradsum.errors import TruthSetError
from gradsum.registry import Registry
from gradsum.truthsets.base import (
    STEERING_SIGN,
    TASKS,
    ArrayTruthSet,
    CauseDeclaration,
    Sample,
    TorchTruthSet,
    TruthSet,
    steering_from_yaw_rate,
)
from gradsum.truthsets.labels import CITYSCAPES, ClassInfo, ClassTable


@dataclass(frozen=True)
class TruthSetKind:
    """A reader of one on-disk kind of truth set."""

    name: str
    description: str
    #: True when the folder looks like this kind; kinds are tried in `priority` order
    detect: Callable[[Path], bool]
    open: Callable[[Path, str], TruthSet]
    priority: int = 100


KINDS: Registry[TruthSetKind] = Registry("truth-set kind")


def register_kind(kind: TruthSetKind) -> TruthSetKind:
    """Add a reader to `KINDS`."""
    KINDS.add(kind.name, kind)
    return kind


def detect_kind(path: str | Path) -> TruthSetKind:
    """The reader for the folder at `path`."""
    root = Path(path)
    if not root.is_dir():
        raise TruthSetError(f"{root}: no such truth-set folder")
    for _, kind in sorted(KINDS.items(), key=lambda item: item[1].priority):
        if kind.detect(root):
            return kind
    raise TruthSetError(
        f"{root}: not a truth set (no manifest.json, no leftImg8bit/ folder, no gradsum-truthset.yaml spec); "
        f"known kinds: {', '.join(KINDS.names())}"
    )


def open_truthset(path: str | Path, split: str = "test", kind: str | None = None) -> TruthSet:
    """Open one split of the truth set at `path` with the reader that fits it (or `kind`)."""
    reader = KINDS.get(kind, "--kind") if kind else detect_kind(path)
    return reader.open(Path(path), split)


__all__ = [
    "CITYSCAPES",
    "KINDS",
    "STEERING_SIGN",
    "TASKS",
    "ArrayTruthSet",
    "CauseDeclaration",
    "ClassInfo",
    "ClassTable",
    "Sample",
    "TorchTruthSet",
    "TruthSet",
    "TruthSetKind",
    "detect_kind",
    "open_truthset",
    "register_kind",
    "steering_from_yaw_rate",
]

# Readers register themselves on import (one line per reader module).
from gradsum.truthsets import cityscapes as _cityscapes  # noqa: E402, F401
from gradsum.truthsets import plugin as _plugin  # noqa: E402, F401
from gradsum.truthsets import synthetic as _synthetic  # noqa: E402, F401
