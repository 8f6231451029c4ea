"""The shortcut check's options, and what it needs of a truth set: a renderer that repaints the sky tint
and the tint splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gradsum.errors import SpecError, TruthSetError
from gradsum.truthsets import TruthSet, open_truthset, truthset_kind
from gradsum.truthsets.base import Sample
from gradsum.truthsets.labels import ClassTable
from gradsum.truthsets.synthetic.writer import AGREEING_SPLIT, DECORRELATED_SPLIT, TINT_SOURCE

#: The regenerate hint of the refusals.
DECORRELATED_HINT = "render it with truthset.generate.decorrelated: true or `gradsum generate --decorrelated`"


@runtime_checkable
class TintFlipping(Protocol):
    """A truth set whose renderer repaints the sky in the opposite tint (the synthetic one)."""

    def flip_tint(self, index: int) -> Sample: ...


@dataclass(frozen=True)
class ShortcutOptions:
    """The check's options (run config `evaluation.options.shortcut`)."""

    #: the class that carries the shortcut cue
    cue: str = "sky"
    #: the classes a method should look at instead (their mass shares are summed per image)
    foreground: tuple[str, ...] = ("road",)
    #: the tint split whose tint disagrees with the steering sign everywhere
    against: str = DECORRELATED_SPLIT
    #: the tint split whose tint agrees with the steering sign everywhere
    agreeing: str = AGREEING_SPLIT
    #: the first scenes of the tint splits the errors use (None: all)
    error_images: int | None = None

    def __post_init__(self) -> None:
        if self.error_images is not None and self.error_images < 1:
            raise SpecError(
                f"evaluation.options.shortcut: field 'error_images' needs at least 1, got {self.error_images}"
            )

    def check_classes(self, table: ClassTable) -> None:
        """Refuse a cue or foreground class the truth set does not have (its shares would read 0)."""
        unknown = [name for name in (self.cue, *self.foreground) if name not in table.by_name]
        if unknown:
            raise SpecError(
                f"options.shortcut: class(es) {', '.join(unknown)} not in the truth set; "
                f"valid: {', '.join(table.by_name)}"
            )


def tint_flipper(truthset: TruthSet) -> TintFlipping:
    """`truthset` when it can repaint the sky tint; else a `TruthSetError` naming its root."""
    if not isinstance(truthset, TintFlipping):
        raise TruthSetError(
            f"{truthset.root}: the shortcut check needs a synthetic truth set (whose renderer can repaint "
            f"the sky tint); this {truthset.kind} truth set has no flip_tint"
        )
    return truthset


def tint_split(truthset: TruthSet, split: str) -> TruthSet:
    """Split `split` of the truth set's folder; a set rendered without it is refused with the fix."""
    root = truthset.root
    if split not in truthset_kind(root, truthset.kind).splits(root, None):
        raise TruthSetError(
            f"{root}: no split {split!r}, which the shortcut check reads; {DECORRELATED_HINT}"
        )
    return open_truthset(root, split, kind=truthset.kind)


def error_splits(options: ShortcutOptions) -> tuple[str, str, str]:
    """The splits whose errors the check reads: against, agreeing and the tint splits' source (test)."""
    return options.against, options.agreeing, TINT_SOURCE
