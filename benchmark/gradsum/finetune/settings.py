"""Fine-tuning settings: one frozen dataclass shared by the Python API, the run config, the CLI and the card.

This module stays light (no torch at import) because `gradsum finetune`'s options are built from it.
A config's `finetune` block is read into it by `dataspec.build`; `FinetuneSettings.to_dict` (`asdict`) is
what a fine-tuned model's card records; `gradsum finetune` generates one option per field, its help from
the field's `help` metadata and its default from the field. Command-line text becomes a field's value in
`FinetuneSettings.from_text`, the one place that text is parsed.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from gradsum.errors import SpecError

#: the metadata key of a field's one-line description (the CLI option's help)
HELP = "help"


@dataclass(frozen=True)
class LossWeights:
    """The loss weights; the defaults are RobustViT's (λ_bg 2, λ_fg 0.3, relevance 0.8, prediction 0.2)."""

    background: float = 2.0
    foreground: float = 0.3
    relevance: float = 0.8
    keep: float = 0.2

    def __str__(self) -> str:
        """The four weights in field order, comma-separated: the text `parse` reads back."""
        return ",".join(f"{getattr(self, f.name):g}" for f in fields(self))

    @classmethod
    def parse(cls, text: str, source: str = "weights") -> LossWeights:
        """Four comma-separated non-negative numbers in field order, e.g. "2,0.3,0.8,0.2"."""
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            values = []
        if len(values) != len(fields(cls)) or not all(_non_negative(v) for v in values):
            names = ",".join(f.name for f in fields(cls))
            raise SpecError(f"{source}: {text!r} is not four non-negative numbers {names} (e.g. {cls()})")
        return cls(*values)

    def check(self, where: str = "weights") -> None:
        """Raise `SpecError` naming `where` and the weight when one is negative or not finite."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not _non_negative(value):
                raise SpecError(f"{where}.{f.name}: must be a non-negative number, got {value}")


def _non_negative(value: float) -> bool:
    return math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class FinetuneSettings:
    """How a model is fine-tuned: foreground classes, loss weights, scenes, and the AdamW schedule."""

    foreground: tuple[str, ...] = field(
        metadata={HELP: "Cityscapes classes the relevance is pushed onto (comma-separated, e.g. road,car)"}
    )
    weights: LossWeights = field(
        default_factory=LossWeights,
        metadata={HELP: "loss weights background,foreground,relevance,keep as in RobustViT"},
    )
    samples: int = field(
        default=50, metadata={HELP: "K: scenes of the split fine-tuned on, drawn by the seed"}
    )
    lr: float = field(default=1e-5, metadata={HELP: "AdamW learning rate"})
    steps: int = field(default=100, metadata={HELP: "optimiser steps"})
    batch_size: int = field(default=8, metadata={HELP: "scenes per step"})
    split: str = field(default="train", metadata={HELP: "truth-set split the scenes come from"})
    seed: int = field(default=0, metadata={HELP: "seed of the scenes drawn and of the batch order"})

    def check(self, name: Callable[[str], str] = str) -> None:
        """Raise `SpecError` at the first bad value, naming its field as `name(field)` spells it (a config's
        dotted path, a command-line option)."""
        # imported here: the truth-set package loads torch, and `gradsum --help` builds options from this
        from gradsum.truthsets.labels import cityscapes_class

        if not self.foreground:
            raise SpecError(f"{name('foreground')}: name at least one Cityscapes class (e.g. road)")
        for label in self.foreground:
            try:
                cityscapes_class(label)
            except SpecError as error:
                raise SpecError(f"{name('foreground')}: {error}") from None
        self.weights.check(name("weights"))
        for count in ("samples", "steps", "batch_size"):
            if getattr(self, count) < 1:
                raise SpecError(f"{name(count)}: must be 1 or more, got {getattr(self, count)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SpecError(f"{name('lr')}: must be a positive number, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the card's record) that `dataspec.build` reads back into equal settings."""
        data = asdict(self)
        data["foreground"] = list(self.foreground)
        return data

    @classmethod
    def from_text(cls, texts: Mapping[str, str], name: Callable[[str], str] = str) -> FinetuneSettings:
        """Settings from command-line text per field (absent fields keep their defaults); text that is not
        of its field's type raises `SpecError` naming the field as `name(field)` spells it."""
        hints = typing.get_type_hints(cls)
        return cls(**{key: read_text(hints[key], text, name(key)) for key, text in texts.items()})


def _number(kind: type[int] | type[float], what: str) -> Callable[[str, str], Any]:
    def read(text: str, where: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            raise SpecError(f"{where}: {text!r} is not {what}") from None

    return read


def _names(text: str, _where: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


#: a field's type → how its value is read from command-line text (`(text, where) → value`)
TEXT_READERS: dict[Any, Callable[[str, str], Any]] = {
    int: _number(int, "an integer"),
    float: _number(float, "a number"),
    str: lambda text, _where: text,
    tuple[str, ...]: _names,
    LossWeights: LossWeights.parse,
}


def read_text(hint: Any, text: str, where: str) -> Any:
    """The value of a field of type `hint` given as command-line `text`; errors name `where`."""
    return TEXT_READERS[hint](text, where)


def text_of(value: Any) -> str:
    """A field value as command-line text (the form `read_text` reads back), e.g. for a default in help."""
    if isinstance(value, tuple):
        return ",".join(str(part) for part in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def field_default(f: Field[Any]) -> Any:
    """A field's default value (built by its factory where it has one); `MISSING` when it has none."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default
