"""The registry of truth-set readers: each reader class in `gradsum.truthsets.readers` registers its
on-disk kind in `KINDS` with `@register_reader`, and `open_truthset` picks the reader that fits a folder
(or the one named, or the spec-reading one).

The readers import this module; `gradsum.truthsets` imports the readers package (which imports every
module in it, so importing the package registers every kind) and re-exports the names below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from gradsum.errors import TruthSetError
from gradsum.registry import Registry
from gradsum.truthsets.base import TruthSet
from gradsum.truthsets.folders import is_folder, list_folder

#: a plug-in spec: a built-in spec name or a spec file (None: the folder's own spec, or no spec)
SpecSource = str | Path | None


@dataclass(frozen=True)
class TruthSetKind:
    """A reader of one on-disk kind of truth set, as `@register_reader` records it from the reader's class."""

    name: str
    description: str
    #: True when the folder looks like this kind; kinds are tried in `priority` order
    detect: Callable[[Path], bool]
    #: opens one split of a folder (with a plug-in spec where the kind `reads_spec`)
    open: Callable[[Path, str, SpecSource], TruthSet]
    #: the split opened when none is named: one that has labels
    default_split: Callable[[Path, SpecSource], str]
    #: split names worth trying (what `gradsum check` tries when no split is named)
    splits: Callable[[Path, SpecSource], list[str]]
    priority: int
    #: True for the kind that reads declarative specs, the one `spec=` arguments go to
    reads_spec: bool


KINDS: Registry[TruthSetKind] = Registry("truth-set kind")


class Reader(Protocol):
    """What `@register_reader` needs of a `TruthSet` subclass: its kind's four functions of a folder,
    as classmethods or staticmethods (the class itself opens one split)."""

    def detect(self, root: Path) -> bool: ...

    def open(self, root: Path, split: str, spec: SpecSource) -> TruthSet: ...

    def default_split(self, root: Path, spec: SpecSource) -> str: ...

    def splits(self, root: Path, spec: SpecSource) -> list[str]: ...


R = TypeVar("R", bound=Reader)


def register_reader(
    name: str, *, description: str, priority: int = 100, reads_spec: bool = False
) -> Callable[[R], R]:
    """Class decorator: register a `TruthSet` subclass as the reader of kind `name` in `KINDS`.

    The class supplies `detect`, `open`, `default_split` and `splits` (see `TruthSetKind`); kinds are
    tried in `priority` order, lowest first; `reads_spec` marks the kind that `spec=` arguments go to.
    The class's `kind` becomes `name`, so the kind is named once.
    """

    def add(reader: R) -> R:
        if not (isinstance(reader, type) and issubclass(reader, TruthSet)):
            raise TypeError(f"@register_reader({name!r}) decorates a TruthSet subclass, not {reader!r}")
        reader.kind = name
        KINDS.add(
            name,
            TruthSetKind(
                name=name,
                description=description,
                detect=reader.detect,
                open=reader.open,
                default_split=reader.default_split,
                splits=reader.splits,
                priority=priority,
                reads_spec=reads_spec,
            ),
        )
        return reader

    return add


def detect_kind(path: str | Path) -> TruthSetKind:
    """The reader for the folder at `path`."""
    root = Path(path)
    if not is_folder(root):
        raise TruthSetError(f"{root}: no such truth-set folder")
    list_folder(root)  # an unreadable folder is named as such, not as "not a truth set"
    kinds = sorted((kind for _, kind in KINDS.items()), key=lambda kind: kind.priority)
    for kind in kinds:
        if kind.detect(root):
            return kind
    known = "; ".join(f"{kind.name}: {kind.description}" for kind in kinds)
    raise TruthSetError(f"{root}: not a truth set that any reader recognises (known kinds, {known})")


def truthset_kind(path: str | Path, kind: str | None = None, spec: SpecSource = None) -> TruthSetKind:
    """The reader for `path`: the kind named, else the spec-reading kind when `spec` is given, else detected."""
    if spec is None:
        return KINDS.get(kind, "--kind") if kind else detect_kind(path)
    readers = [k for _, k in KINDS.items() if k.reads_spec]
    reader = KINDS.get(kind, "--kind") if kind else readers[0]
    if not reader.reads_spec:
        raise TruthSetError(
            f"--spec {str(spec)!r} with --kind {reader.name!r}: only kind "
            f"{', '.join(k.name for k in readers)} reads a spec; drop --kind"
        )
    return reader


def default_split(path: str | Path, kind: str | None = None, spec: SpecSource = None) -> str:
    """The split a command opens when none is named: one with labels (Cityscapes' public test has none)."""
    return truthset_kind(path, kind, spec).default_split(Path(path), spec)


def open_truthset(
    path: str | Path, split: str | None = None, kind: str | None = None, spec: SpecSource = None
) -> TruthSet:
    """Open one split of the truth set at `path` with the reader that fits it (or `kind`).

    `spec` is a plug-in spec (a built-in spec name such as 'camvid-rgb', or a spec file) for folders
    without their own `gradsum-truthset.yaml`; `split=None` opens the kind's `default_split`.
    """
    root = Path(path)
    reader = truthset_kind(root, kind, spec)
    return reader.open(root, reader.default_split(root, spec) if split is None else split, spec)
