"""Validate a truth set on disk: counts, class histogram, sizes, unknown ids, missing or corrupt files.

`check_truthset` reads every sample of every split and collects each problem instead of stopping at
the first, so one run of `gradsum check` lists everything to fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradsum.errors import GradSUMError
from gradsum.truthsets import KINDS, TruthSet, detect_kind, open_truthset
from gradsum.truthsets.cityscapes import available_splits
from gradsum.truthsets.labels import CITYSCAPES, NUM_CITYSCAPES_IDS
from gradsum.truthsets.layout import SPLITS
from gradsum.truthsets.plugin import SPEC_FILE, load_spec, open_plugin

log = logging.getLogger(__name__)

#: problems shown by `CheckReport.summary` before "... and N more"
SHOWN_PROBLEMS = 20


@dataclass
class SplitCheck:
    """What one split holds and what is wrong with it."""

    split: str
    size: int
    tasks: tuple[str, ...]
    #: Cityscapes class name → pixel count over the readable samples
    class_pixels: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    readable: int = 0


@dataclass
class CheckReport:
    """The result of `check_truthset`: per-split checks plus problems that stop the set from opening."""

    path: Path
    kind: str
    splits: list[SplitCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def all_problems(self) -> list[str]:
        """Every problem found, set-level first."""
        return self.problems + [p for s in self.splits for p in s.problems]

    @property
    def usable(self) -> bool:
        """True when at least one split opened and no sample of any split has a problem."""
        return bool(self.splits) and not self.all_problems

    def summary(self) -> str:
        """A readable multi-line summary of the report."""
        lines = [f"{self.path} ({self.kind or 'unknown kind'})"]
        for s in self.splits:
            tasks = ", ".join(s.tasks) or "none"
            lines.append(f"  {s.split}: {s.size} samples, {s.readable} readable, targets: {tasks}")
            total = sum(s.class_pixels.values()) or 1
            shares = sorted(s.class_pixels.items(), key=lambda item: -item[1])
            lines.extend(f"    {name:22s} {count / total:7.2%}" for name, count in shares)
        problems = self.all_problems
        lines.append(f"usable: {'yes' if self.usable else 'no'} ({len(problems)} problems)")
        lines.extend(f"  - {p}" for p in problems[:SHOWN_PROBLEMS])
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the report."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "usable": self.usable,
            "problems": self.all_problems,
            "splits": [
                {
                    "split": s.split,
                    "size": s.size,
                    "readable": s.readable,
                    "tasks": list(s.tasks),
                    "class_pixels": s.class_pixels,
                }
                for s in self.splits
            ],
        }


def open_split(path: Path, split: str, kind: str | None = None, spec: str | Path | None = None) -> TruthSet:
    """Open one split, with a plug-in spec when `spec` is given, else by `kind` or detection."""
    if spec is not None:
        return open_plugin(path, spec, split)
    return open_truthset(path, split, kind)


def candidate_splits(path: Path, kind: str | None = None, spec: str | Path | None = None) -> list[str]:
    """Split names worth trying: a plug-in spec's own, else the standard ones plus `leftImg8bit/` folders."""
    if spec is None and (kind == "plugin" or (kind is None and (path / SPEC_FILE).is_file())):
        spec = path / SPEC_FILE
    if spec is not None:
        return load_spec(spec).split_names
    return list(SPLITS) + [s for s in available_splits(path) if s not in SPLITS]


def open_splits(
    path: Path, kind: str | None = None, spec: str | Path | None = None
) -> tuple[dict[str, TruthSet], list[str]]:
    """Every split that opens, and why the others did not (both empty when nothing matched)."""
    opened: dict[str, TruthSet] = {}
    failures: list[str] = []
    for split in candidate_splits(path, kind, spec):
        try:
            opened[split] = open_split(path, split, kind, spec)
        except GradSUMError as error:
            failures.append(f"split {split}: {error}")
    return opened, failures


def check_split(truthset: TruthSet) -> SplitCheck:
    """Read every sample of a split, counting class pixels and collecting problems."""
    report = SplitCheck(split=truthset.split, size=len(truthset), tasks=truthset.tasks)
    counts = np.zeros(NUM_CITYSCAPES_IDS, dtype=np.int64)
    for index in range(len(truthset)):
        try:
            sample = truthset[index]
        except GradSUMError as error:
            report.problems.append(str(error))
            continue
        where = sample.meta.get("label") or sample.meta.get("frame") or f"{truthset.split}[{index}]"
        problems = _sample_problems(sample.image, sample.labels, sample.targets, truthset.tasks)
        report.problems.extend(f"{where}: {p}" for p in problems)
        if not problems:
            report.readable += 1
            counts += np.bincount(sample.labels.ravel(), minlength=NUM_CITYSCAPES_IDS)
    report.class_pixels = {CITYSCAPES.by_id[i].name: int(n) for i, n in enumerate(counts) if n}
    return report


def _sample_problems(
    image: np.ndarray, labels: np.ndarray, targets: dict[str, float], tasks: tuple[str, ...]
) -> list[str]:
    # readers check these too; repeating them here holds every reader kind to the same contract
    problems = []
    if image.shape[:2] != labels.shape[:2]:
        problems.append(f"image size {image.shape[:2]} differs from label size {labels.shape[:2]}")
    unknown = np.unique(labels[labels >= NUM_CITYSCAPES_IDS])
    if unknown.size:
        problems.append(f"label ids outside the Cityscapes table: {unknown.tolist()[:10]}")
    problems.extend(f"target {t!r} is missing" for t in tasks if t not in targets)
    problems.extend(f"target {t!r} is not finite ({v})" for t, v in targets.items() if not np.isfinite(v))
    return problems


def check_truthset(
    path: str | Path, split: str | None = None, kind: str | None = None, spec: str | Path | None = None
) -> CheckReport:
    """Check one split (or every split found) of the truth set at `path`; never raises on bad data."""
    root = Path(path)
    report = CheckReport(path=root, kind="plugin" if spec is not None else (kind or ""))
    try:
        if not report.kind:
            report.kind = detect_kind(root).name
        elif spec is None:
            KINDS.get(report.kind, "--kind")
        failures: list[str] = []
        if split is not None:
            opened = {split: open_split(root, split, kind, spec)}
        else:
            opened, failures = open_splits(root, kind, spec)
    except GradSUMError as error:
        report.problems.append(str(error))
        return report
    if not opened:
        report.problems.extend(failures or [f"{root}: no splits found"])
    for name, truthset in opened.items():
        log.info("checking %s split %s (%d samples)", root, name, len(truthset))
        report.splits.append(check_split(truthset))
    return report


@dataclass(frozen=True)
class FoundTruthSet:
    """A truth set found under a data root."""

    path: Path
    kind: str
    sizes: dict[str, int]


def find_truthsets(root: str | Path) -> list[FoundTruthSet]:
    """The truth sets among the sub-folders of `root`, with their kind and split sizes."""
    found = []
    base = Path(root)
    folders = (
        sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        if base.is_dir()
        else []
    )
    for folder in folders:
        try:
            kind = detect_kind(folder).name
            opened, _ = open_splits(folder, kind)
        except GradSUMError as error:
            log.debug("skipping %s: %s", folder, error)
            continue
        found.append(FoundTruthSet(folder, kind, {name: len(ts) for name, ts in opened.items()}))
    return found
