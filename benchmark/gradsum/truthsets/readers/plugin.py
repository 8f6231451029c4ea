"""The `plugin` reader: any folder of images and label PNGs, described by a declarative spec
(`gradsum.truthsets.spec`, `datasets/README.md`); labels come out as Cityscapes ids.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gradsum.errors import TruthSetError
from gradsum.taxonomy import TASKS
from gradsum.truthsets.base import CauseDeclaration, Sample, TruthSet
from gradsum.truthsets.encodings import check_sizes, decode_labels, read_rgb
from gradsum.truthsets.folders import exists, glob_files, is_folder
from gradsum.truthsets.kinds import SpecSource, register_reader
from gradsum.truthsets.labels import ClassTable
from gradsum.truthsets.spec import SPEC_FILE, TruthSetSpec, load_spec


def read_targets(path: Path) -> dict[str, dict[str, float]]:
    """Targets keyed by image stem, from CSV (`image,steering,obstacle` header) or JSON ({stem: {task: v}})."""
    if not exists(path):
        raise TruthSetError(f"{path}: targets file is missing")
    try:
        if path.suffix == ".json":
            record = json.loads(path.read_text(encoding="utf-8"))
            rows = {str(k): {t: float(v) for t, v in values.items()} for k, values in record.items()}
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = {
                    Path(row.pop("image")).stem: {t: float(v) for t, v in row.items() if v not in ("", None)}
                    for row in csv.DictReader(handle)
                }
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
        raise TruthSetError(f"{path}: targets file is unreadable ({error!r})") from None
    except ValueError as error:
        raise TruthSetError(f"{path}: a target is not a number ({error})") from None
    for stem, values in rows.items():
        unknown = set(values) - set(TASKS)
        if unknown:
            raise TruthSetError(f"{path}: row {stem!r} has unknown targets {sorted(unknown)}; valid: {TASKS}")
    return rows


@register_reader(
    "plugin",
    description=f"any image/label folder described by a {SPEC_FILE} spec or --spec (datasets/README.md)",
    priority=20,
    reads_spec=True,
)
class PluginTruthSet(TruthSet):
    """One split of a folder described by a plug-in spec; `labels` are Cityscapes ids, `raw_labels` own ids."""

    def __init__(
        self, root: str | Path, split: str = "test", spec: str | Path | TruthSetSpec | None = None
    ) -> None:
        super().__init__(Path(root), split)
        if not is_folder(self.root):
            raise TruthSetError(f"{self.root}: no such truth-set folder")
        self.spec = spec if isinstance(spec, TruthSetSpec) else load_spec(spec or self.root / SPEC_FILE)
        self.split_folder = self._split_folder(split)
        pattern = self.spec.images.replace("{split}", self.split_folder)
        self.images: list[Path] = glob_files(self.root, pattern)
        if not self.images:
            raise TruthSetError(
                f"{self.root}: no images match {pattern!r} (field 'images' of {self.spec.label})"
            )
        self._targets = read_targets(self.root / self.spec.targets) if self.spec.targets else {}

    def _split_folder(self, split: str) -> str:
        if "{split}" not in self.spec.images:
            return split
        if split not in self.spec.splits:
            raise TruthSetError(
                f"{self.root}: split {split!r} unknown to {self.spec.label}; splits: {', '.join(self.spec.splits)}"
            )
        return self.spec.splits[split]

    def label_path(self, index: int) -> Path:
        """The label file of sample `index`."""
        return self.spec.labels.path(self.root, self.images[index], self.split_folder)

    @property
    def class_table(self) -> ClassTable:
        return self.spec.classes

    @property
    def tasks(self) -> tuple[str, ...]:
        rows = [self._targets.get(p.stem, {}) for p in self.images]
        return tuple(t for t in TASKS if rows and all(t in row for row in rows))

    @property
    def causes(self) -> Mapping[str, CauseDeclaration]:
        """The spec's `causes` field (none unless the spec declares them)."""
        return self.spec.causes

    @property
    def parameters(self) -> Mapping[str, Any]:
        return {
            "spec": self.spec.name,
            "spec_file": str(self.spec.source),
            "encoding": self.spec.encoding.name,
        }

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        image_path, label_path = self.images[index], self.label_path(index)
        image = read_rgb(image_path)
        raw = decode_labels(label_path, self.spec.encoding, self.spec.classes)
        check_sizes(image, raw, image_path, label_path)
        return Sample(
            image=image,
            labels=self.spec.classes.to_cityscapes(raw),
            targets=dict(self._targets.get(image_path.stem, {})),
            meta={"frame": image_path.stem, "image": str(image_path), "label": str(label_path)},
            raw_labels=raw.astype(np.int32),
        )

    def label_map(self, index: int) -> np.ndarray:
        raw = decode_labels(self.label_path(index), self.spec.encoding, self.spec.classes)
        return self.spec.classes.to_cityscapes(raw)

    def targets(self, task: str) -> np.ndarray:
        if task not in self.tasks:
            raise TruthSetError(
                f"task {task!r}: {self.root} (spec {self.spec.name!r}) carries only {list(self.tasks)}"
            )
        return np.array([self._targets[p.stem][task] for p in self.images], dtype=np.float32)

    # -- the kind: which folders it reads, and how -------------------------------------------------

    @staticmethod
    def detect(root: Path) -> bool:
        return exists(root / SPEC_FILE)

    @classmethod
    def open(cls, root: Path, split: str, spec: SpecSource) -> TruthSet:
        return cls(root, split, spec)

    @staticmethod
    def default_split(root: Path, spec: SpecSource) -> str:
        return load_spec(spec or root / SPEC_FILE).default_split

    @staticmethod
    def splits(root: Path, spec: SpecSource) -> list[str]:
        return load_spec(spec or root / SPEC_FILE).split_names


def open_plugin(root: str | Path, spec: str | Path | None = None, split: str = "test") -> PluginTruthSet:
    """Open a folder with a spec file path, a built-in spec name, or the folder's own `gradsum-truthset.yaml`."""
    return PluginTruthSet(root, split, spec)
