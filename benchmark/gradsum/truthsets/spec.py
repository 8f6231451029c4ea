"""The declarative truth-set spec: where a folder's images and labels are, how labels are encoded, and
how its classes map onto Cityscapes, so every plug-in set yields Cityscapes ids (`datasets/README.md`).

A spec is `gradsum-truthset.yaml` in the folder, a spec file, or a built-in name (the shipped
`specs/*.yaml`); the `plugin` reader (`readers/plugin.py`) opens folders with it.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradsum.dataspec import load_yaml, shipped
from gradsum.errors import SpecError
from gradsum.registry import Registry
from gradsum.taxonomy import TASKS
from gradsum.truthsets.base import LABELLED_SPLIT, CauseDeclaration
from gradsum.truthsets.camvid import camvid32_table
from gradsum.truthsets.encodings import ENCODINGS, Encoding
from gradsum.truthsets.folders import exists
from gradsum.truthsets.labels import CITYSCAPES, ClassInfo, ClassTable, cityscapes_class
from gradsum.truthsets.layout import SPLITS

SPEC_FILE = "gradsum-truthset.yaml"
SPECS_FOLDER = Path(__file__).parent / "specs"
#: split name used when the images pattern has no `{split}`: the folder is one split
WHOLE_FOLDER = "all"

_REQUIRED = ("name", "images", "labels", "encoding", "classes")
_OPTIONAL = ("description", "mapping", "splits", "targets", "causes")
#: the roles a `causes` entry may declare, in CauseDeclaration's field order
_CAUSE_ROLES = ("causal", "independent")
_CLASS_FIELDS = ("id", "name", "color", "cityscapes", "ignore")
#: placeholders a `labels` pattern may use, derived from each image path
_LABEL_PLACEHOLDERS = ("split", "stem", "name", "parent")

#: class tables a spec can name instead of listing classes
TABLES: Registry[Callable[[], ClassTable]] = Registry("class table")
TABLES.add("cityscapes", lambda: CITYSCAPES)
TABLES.add("camvid32", camvid32_table)


@TABLES.register("cityscapes-trainids")
def _train_id_table() -> ClassTable:
    """Pixels store Cityscapes trainIds 0..18 (255 = ignore), as BDD100K masks do."""
    classes = [
        ClassInfo(c.train_id, c.name, c.category, c.color, c.ignore, c.train_id, c.id)
        for c in CITYSCAPES.classes
        if 0 <= c.train_id < 255
    ]
    unlabeled = CITYSCAPES.by_name["unlabeled"]
    classes.append(ClassInfo(255, "unlabeled", unlabeled.category, unlabeled.color, True, 255, unlabeled.id))
    return ClassTable(tuple(classes), name="cityscapes-trainids")


@dataclass(frozen=True)
class LabelRule:
    """Where an image's label file is: a pattern with placeholders, or text replacements on its path."""

    pattern: str | None = None
    replace: tuple[tuple[str, str], ...] = ()

    def path(self, root: Path, image: Path, split_folder: str) -> Path:
        """The label file of `image` (a path under `root`)."""
        relative = image.relative_to(root)
        if self.pattern is not None:
            parent = relative.parent.as_posix()
            return root / self.pattern.format(
                split=split_folder, stem=image.stem, name=image.name, parent=parent
            )
        text = relative.as_posix()
        for old, new in self.replace:
            text = text.replace(old, new)
        return root / text


@dataclass(frozen=True)
class TruthSetSpec:
    """A parsed, validated plug-in spec."""

    name: str
    source: Path
    images: str
    labels: LabelRule
    encoding: Encoding
    classes: ClassTable
    splits: Mapping[str, str]
    targets: str | None = None
    description: str = ""
    #: task → the Cityscapes classes the spec declares causal and independent (field `causes`)
    causes: Mapping[str, CauseDeclaration] = field(default_factory=dict)

    @property
    def split_names(self) -> list[str]:
        """The split names this spec accepts."""
        return list(self.splits) if "{split}" in self.images else [WHOLE_FOLDER]

    @property
    def default_split(self) -> str:
        """The split opened when none is named: test, else val, else the spec's first split."""
        names = self.split_names
        return next((s for s in ("test", LABELLED_SPLIT) if s in names), names[0])

    @property
    def label(self) -> str:
        """How messages name the spec: its name and file (a copied spec keeps its name)."""
        return f"spec {self.name!r} ({self.source})"


def builtin_specs() -> Registry[Path]:
    """The shipped spec files by name (`gradsum/truthsets/specs/*.yaml`)."""
    return shipped(SPECS_FOLDER, "built-in truth-set spec")


def load_spec(spec: str | Path) -> TruthSetSpec:
    """Parse a spec file, or a built-in spec by name; a missing or wrong field raises SpecError naming it."""
    builtins = builtin_specs()
    path = builtins.get(str(spec)) if str(spec) in builtins else Path(spec)
    if not (exists(path) and path.is_file()):
        raise SpecError(f"{path}: no such spec file, and {builtins.unknown_message(str(spec), '--spec')}")
    return _SpecParser(path).parse(load_yaml(path))


@dataclass
class _SpecParser:
    path: Path

    def error(self, name: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: field {name!r} {problem}")

    def parse(self, record: dict[str, Any]) -> TruthSetSpec:
        for key in record:
            if key not in _REQUIRED + _OPTIONAL:
                raise self.error(str(key), f"is unknown; valid fields: {', '.join(_REQUIRED + _OPTIONAL)}")
        for key in _REQUIRED:
            if key not in record:
                raise self.error(key, "is missing")
        images = self.text(record, "images")
        encoding_name = self.text(record, "encoding")
        if encoding_name not in ENCODINGS:
            raise self.error("encoding", f"is wrong: {ENCODINGS.unknown_message(encoding_name)}")
        return TruthSetSpec(
            name=self.text(record, "name"),
            source=self.path,
            images=images,
            labels=self.label_rule(record["labels"]),
            encoding=ENCODINGS.get(encoding_name),
            classes=self.class_table(record, self.text(record, "name")),
            splits=self.splits(record.get("splits")),
            targets=self.text(record, "targets") if "targets" in record else None,
            description=self.text(record, "description") if "description" in record else "",
            causes=self.causes(record.get("causes", {})),
        )

    def causes(self, value: Any) -> dict[str, CauseDeclaration]:
        shape = "{task: {causal: [class, ...], independent: [class, ...]}}"
        if not isinstance(value, dict):
            raise self.error("causes", f"must be a mapping {shape}, got {value!r}")
        declared = {}
        for task, entry in value.items():
            if task not in TASKS:
                raise self.error(f"causes.{task}", f"is not a task; valid: {', '.join(TASKS)}")
            if not isinstance(entry, dict) or not set(entry) <= set(_CAUSE_ROLES):
                raise self.error(f"causes.{task}", f"must be a mapping {shape}, got {entry!r}")
            causal, independent = (
                self.cause_names(entry.get(role, []), f"causes.{task}.{role}") for role in _CAUSE_ROLES
            )
            both = sorted(set(causal) & set(independent))
            if both:
                raise self.error(f"causes.{task}", f"declares {both} both causal and independent")
            declared[str(task)] = CauseDeclaration(causal=causal, independent=independent)
        return declared

    def cause_names(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(where, f"must be a list of Cityscapes class names, got {value!r}")
        for name in value:
            if name not in CITYSCAPES.by_name:
                valid = ", ".join(c.name for c in CITYSCAPES.classes)
                raise self.error(where, f"names no Cityscapes class ({name!r}); valid: {valid}")
        return tuple(value)

    def text(self, record: Mapping[str, Any], name: str) -> str:
        value = record[name]
        if not isinstance(value, str) or not value:
            raise self.error(name, f"must be a non-empty string, got {value!r}")
        return value

    def label_rule(self, value: Any) -> LabelRule:
        if isinstance(value, str):
            names = {n for _, n, _, _ in string.Formatter().parse(value) if n is not None}
            unknown = names - set(_LABEL_PLACEHOLDERS)
            if unknown:
                raise self.error(
                    "labels", f"uses unknown placeholders {sorted(unknown)}; valid: {_LABEL_PLACEHOLDERS}"
                )
            return LabelRule(pattern=value)
        pairs = value.get("replace") if isinstance(value, dict) and set(value) == {"replace"} else None
        if not isinstance(pairs, list) or not pairs or not all(_is_text_pair(p) for p in pairs):
            raise self.error(
                "labels", "must be a pattern string or {replace: [[old, new], ...]} applied to the image path"
            )
        return LabelRule(replace=tuple((str(old), str(new)) for old, new in pairs))

    def splits(self, value: Any) -> dict[str, str]:
        if value is None:
            return {s: s for s in SPLITS}
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return {v: v for v in value}
        if isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return dict(value)
        raise self.error(
            "splits", "must be a list of split names or a mapping split → folder text for {split}"
        )

    def class_table(self, record: Mapping[str, Any], name: str) -> ClassTable:
        """The spec's classes mapped onto Cityscapes, named after the spec so messages name it."""
        value = record["classes"]
        mapping = record.get("mapping", {})
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise self.error("mapping", "must map class names to Cityscapes class names")
        if isinstance(value, str):
            if value not in TABLES:
                raise self.error("classes", f"is wrong: {TABLES.unknown_message(value)}")
            table = TABLES.get(value)()
            # a named table carries its own Cityscapes mapping; the spec's `mapping` overrides it
            entries = [
                {
                    "id": c.id,
                    "name": c.name,
                    "color": list(c.color),
                    "cityscapes": mapping.get(c.name, CITYSCAPES.by_id[c.cityscapes_id].name),
                }
                for c in table.classes
            ]
            return self.table(entries, mapping, name)
        if not isinstance(value, list) or not value:
            raise self.error(
                "classes", "must name a built-in table or list classes as {id, name, color, ...}"
            )
        return self.table(value, mapping, name)

    def table(self, entries: list[Any], mapping: Mapping[str, str], name: str) -> ClassTable:
        names = {e.get("name") for e in entries if isinstance(e, dict)}
        for own in mapping:
            if own not in names:
                raise self.error(f"mapping.{own}", "names no class of the spec")
        classes = tuple(self.class_info(i, entry, mapping) for i, entry in enumerate(entries))
        try:
            return ClassTable(classes, name=name)
        except SpecError as error:
            raise SpecError(f"{self.path}: {error}") from None

    def class_info(self, index: int, entry: Any, mapping: Mapping[str, str]) -> ClassInfo:
        where = f"classes[{index}]"
        if not isinstance(entry, dict):
            raise self.error(where, "must be a mapping with id and name")
        for key in entry:
            if key not in _CLASS_FIELDS:
                raise self.error(f"{where}.{key}", f"is unknown; valid: {', '.join(_CLASS_FIELDS)}")
        own_id, name = entry.get("id"), entry.get("name")
        if isinstance(own_id, bool) or not isinstance(own_id, int) or not 0 <= own_id < 65536:
            raise self.error(f"{where}.id", f"must be an integer in 0..65535, got {own_id!r}")
        if not isinstance(name, str) or not name:
            raise self.error(f"{where}.name", f"must be a non-empty string, got {name!r}")
        target_name = entry.get("cityscapes", mapping.get(name, name))
        if target_name not in CITYSCAPES.by_name:
            raise self.error(
                f"{where}.cityscapes",
                f"maps {name!r} to no Cityscapes class ({target_name!r}); set it or 'mapping'",
            )
        target = cityscapes_class(target_name)
        return ClassInfo(
            id=own_id,
            name=name,
            category=target.category,
            color=self.color(entry.get("color", target.color), f"{where}.color"),
            ignore=bool(entry.get("ignore", target.ignore)),
            train_id=target.train_id,
            cityscapes_id=target.id,
        )

    def color(self, value: Any, where: str) -> tuple[int, int, int]:
        if (
            not isinstance(value, list | tuple)
            or len(value) != 3
            or not all(isinstance(v, int) and 0 <= v < 256 for v in value)
        ):
            raise self.error(where, f"must be [r, g, b] with 0..255 integers, got {value!r}")
        return (int(value[0]), int(value[1]), int(value[2]))


def _is_text_pair(pair: Any) -> bool:
    return isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, str) for v in pair)
