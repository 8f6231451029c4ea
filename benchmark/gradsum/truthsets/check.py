"""Validate a truth set on disk: counts, class histogram, sizes, unknown ids, missing or corrupt files.

`check_truthset` reads every sample of every split and collects each problem instead of stopping at
the first, so one run of `gradsum check` lists everything to fix. A split whose label maps hold only
void ids (Cityscapes' public test split) is readable but not usable: it is reported as such.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradsum.errors import GradSUMError
from gradsum.truthsets import SpecSource, TruthSet, detect_kind, open_truthset, truthset_kind
from gradsum.truthsets.base import labelled_pixels, no_labels_message
from gradsum.truthsets.folders import list_folder
from gradsum.truthsets.labels import CITYSCAPES, NUM_CITYSCAPES_IDS

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
    #: why the split cannot be profiled although its files read (no labels); None when it can
    blocker: str | None = None

    @property
    def usable(self) -> bool:
        """True when every sample reads and the split has labels."""
        return self.readable > 0 and not self.problems and self.blocker is None


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
        """True when no file of any split has a problem and at least one split is usable.

        A split without labels next to labelled ones (Cityscapes' test) leaves the set usable; the summary
        names it as not usable.
        """
        return not self.all_problems and any(s.usable for s in self.splits)

    def summary(self) -> str:
        """A readable multi-line summary of the report."""
        lines = [f"{self.path} ({self.kind or 'unknown kind'})"]
        for s in self.splits:
            tasks = ", ".join(s.tasks) or "none"
            lines.append(f"  {s.split}: {s.size} samples, {s.readable} readable, targets: {tasks}")
            if s.blocker is not None:
                lines.append(f"    NOT usable: {s.blocker}")
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
                    "usable": s.usable,
                    "blocker": s.blocker,
                    "tasks": list(s.tasks),
                    "class_pixels": s.class_pixels,
                }
                for s in self.splits
            ],
        }


def open_splits(
    path: Path, kind: str | None = None, spec: SpecSource = None
) -> tuple[dict[str, TruthSet], list[str]]:
    """Every split that opens, and why the others did not (both empty when nothing matched)."""
    opened: dict[str, TruthSet] = {}
    failures: list[str] = []
    for split in truthset_kind(path, kind, spec).splits(path, spec):
        try:
            opened[split] = open_truthset(path, split, kind, spec)
        except GradSUMError as error:
            failures.append(f"split {split}: {error}")
    return opened, failures


def check_split(truthset: TruthSet) -> SplitCheck:
    """Read every sample of a split, counting class pixels and collecting problems."""
    report = SplitCheck(split=truthset.split, size=len(truthset), tasks=truthset.tasks)
    if not len(truthset):
        report.problems.append(f"{truthset.root}: split {truthset.split!r} is empty (0 samples)")
        return report
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
    if report.readable and not labelled_pixels(counts):
        report.blocker = no_labels_message(truthset.root, truthset.split, report.readable)
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
    path: str | Path, split: str | None = None, kind: str | None = None, spec: SpecSource = None
) -> CheckReport:
    """Check one split (or every split found) of the truth set at `path`; never raises on bad data.

    `kind` and `spec` (a built-in spec name or a spec file) pick the reader as in `open_truthset`.
    """
    root = Path(path)
    report = CheckReport(path=root, kind=kind or "")
    try:
        report.kind = truthset_kind(root, kind, spec).name
        failures: list[str] = []
        if split is not None:
            opened = {split: open_truthset(root, split, kind, spec)}
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
    try:
        entries = list_folder(base) if base.is_dir() else []
    except GradSUMError as error:
        log.warning("%s", error)
        entries = []
    folders = [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    for folder in folders:
        try:
            kind = detect_kind(folder).name
            opened, _ = open_splits(folder, kind)
        except GradSUMError as error:
            log.debug("skipping %s: %s", folder, error)
            continue
        found.append(FoundTruthSet(folder, kind, {name: len(ts) for name, ts in opened.items()}))
    return found
