"""Validate a truth set on disk: counts, label statistics, sizes, unknown ids, missing or corrupt files.

`check_truthset` reads every sample of every split and collects each problem instead of stopping at
the first, so one run of `gradsum check` lists everything to fix. A split whose label maps hold only
void ids (Cityscapes' public test split) is readable but not usable: it is reported as such.

In the same pass it gathers label statistics per split: each class's pixel share and image frequency,
the void share (pixels of ignored Cityscapes ids, which profiles never count) over the split and per
image, and from those, warnings: classes rare in a split, classes found in one profilable split and
never in another, images mostly void. Warnings leave a set usable; they say where a profile may rest
on few pixels or compare splits unlike each other.
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
from gradsum.truthsets.labels import CITYSCAPES, NUM_CITYSCAPES_IDS, ignored_cityscapes_ids

log = logging.getLogger(__name__)

#: problems (and warnings) shown by `CheckReport.summary` before "... and N more"
SHOWN_PROBLEMS = 20
#: an image with more than this share of void pixels is listed: a profile sees little of it
VOID_HEAVY_SHARE = 0.5
#: a counted class found in fewer than this share of a split's images is flagged as rare
RARE_IMAGE_SHARE = 0.01
#: void-heavy images a warning names before "and N more"
SHOWN_IMAGES = 5

#: Cityscapes class names whose pixels are void: the ids `labelled_pixels` leaves out
VOID_CLASSES = frozenset(CITYSCAPES.by_id[i].name for i in ignored_cityscapes_ids())
_VOID_MASK = np.isin(np.arange(NUM_CITYSCAPES_IDS), ignored_cityscapes_ids())


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
    #: Cityscapes class name → number of readable samples holding at least one pixel of it
    class_images: dict[str, int] = field(default_factory=dict)
    #: readable sample (its label file, else frame) → share of its pixels that are void
    image_void: dict[str, float] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """True when every sample reads and the split has labels."""
        return self.readable > 0 and not self.problems and self.blocker is None

    @property
    def profilable(self) -> bool:
        """True when some sample reads and holds labels: its statistics describe what a profile sees."""
        return self.readable > 0 and self.blocker is None

    @property
    def pixel_shares(self) -> dict[str, float]:
        """Class name → share of all pixels of the readable samples (void classes included: sums to 1)."""
        total = sum(self.class_pixels.values())
        return {name: count / total for name, count in self.class_pixels.items()} if total else {}

    @property
    def image_frequencies(self) -> dict[str, float]:
        """Class name → share of the readable samples in which the class occurs."""
        return {name: n / self.readable for name, n in self.class_images.items()} if self.readable else {}

    @property
    def void_share(self) -> float:
        """Share of all pixels of the readable samples that are void."""
        total = sum(self.class_pixels.values())
        void = sum(n for name, n in self.class_pixels.items() if name in VOID_CLASSES)
        return void / total if total else 0.0

    @property
    def void_median(self) -> float | None:
        """Median over readable samples of their void share; None without any."""
        return float(np.median(list(self.image_void.values()))) if self.image_void else None

    @property
    def void_max(self) -> float | None:
        """Largest void share of one readable sample; None without any."""
        return max(self.image_void.values(), default=None)

    @property
    def void_heavy(self) -> list[str]:
        """Samples with more than `VOID_HEAVY_SHARE` of their pixels void, in reading order."""
        return [where for where, share in self.image_void.items() if share > VOID_HEAVY_SHARE]

    @property
    def rare_classes(self) -> list[str]:
        """Counted (non-void) classes found in some but fewer than `RARE_IMAGE_SHARE` of the samples."""
        frequencies = self.image_frequencies
        return sorted(n for n, f in frequencies.items() if n not in VOID_CLASSES and f < RARE_IMAGE_SHARE)

    @property
    def warnings(self) -> list[str]:
        """Label statistics worth a look before profiling, one short line each; none for a split without labels."""
        if not self.profilable:
            return []
        lines = []
        heavy = self.void_heavy
        if heavy:
            names = ", ".join(Path(where).name for where in heavy[:SHOWN_IMAGES])
            more = f" and {len(heavy) - SHOWN_IMAGES} more" if len(heavy) > SHOWN_IMAGES else ""
            lines.append(
                f"{self.split}: {len(heavy)} of {self.readable} images are over {VOID_HEAVY_SHARE:.0%} void: "
                f"{names}{more}"
            )
        images = self.class_images
        lines.extend(
            f"{self.split}: class {name!r} is rare: in {images[name]} of {self.readable} images "
            f"(under {RARE_IMAGE_SHARE:.0%})"
            for name in self.rare_classes
        )
        return lines

    def statistics(self) -> dict[str, Any]:
        """The label statistics in JSON-ready form."""
        return {
            "pixel_share": self.pixel_shares,
            "image_frequency": self.image_frequencies,
            "void": {
                "share": self.void_share,
                "image_median": self.void_median,
                "image_max": self.void_max,
                "heavy_cutoff": VOID_HEAVY_SHARE,
                "heavy_images": self.void_heavy,
            },
            "rare_cutoff": RARE_IMAGE_SHARE,
            "rare_classes": self.rare_classes,
        }


@dataclass(frozen=True)
class ClassGap:
    """A counted class that occurs in some profilable splits and never in others."""

    name: str
    #: split → number of its readable samples holding the class, for the splits where it occurs
    images: dict[str, int]
    missing: tuple[str, ...]

    def __str__(self) -> str:
        found = ", ".join(f"{n} {split}" for split, n in self.images.items())
        return f"class {self.name!r} is in {found} image(s) and in no {', '.join(self.missing)} image"


def find_class_gaps(splits: list[SplitCheck]) -> list[ClassGap]:
    """Counted classes found in one profilable split and not in another, by class name.

    Splits without labels are left out: every class would be missing from them.
    """
    profilable = [s for s in splits if s.profilable]
    names = sorted({n for s in profilable for n in s.class_images if n not in VOID_CLASSES})
    gaps = []
    for name in names:
        missing = tuple(s.split for s in profilable if name not in s.class_images)
        if missing:
            images = {s.split: s.class_images[name] for s in profilable if name in s.class_images}
            gaps.append(ClassGap(name, images, missing))
    return gaps


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

    @property
    def class_gaps(self) -> list[ClassGap]:
        """Counted classes present in some profilable splits and absent from others."""
        return find_class_gaps(self.splits)

    @property
    def warnings(self) -> list[str]:
        """Every label-statistics warning: per split, then classes missing across splits."""
        return [w for s in self.splits for w in s.warnings] + [str(gap) for gap in self.class_gaps]

    def summary(self) -> str:
        """A readable multi-line summary of the report."""
        lines = [f"{self.path} ({self.kind or 'unknown kind'})"]
        for s in self.splits:
            tasks = ", ".join(s.tasks) or "none"
            lines.append(f"  {s.split}: {s.size} samples, {s.readable} readable, targets: {tasks}")
            if s.blocker is not None:
                lines.append(f"    NOT usable: {s.blocker}")
            lines.extend(_split_statistics(s))
        problems = self.all_problems
        lines.append(f"usable: {'yes' if self.usable else 'no'} ({len(problems)} problems)")
        lines.extend(_listed(problems))
        warnings = self.warnings
        if warnings:
            lines.append(f"warnings: {len(warnings)}")
            lines.extend(_listed(warnings))
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
                    "class_images": s.class_images,
                    **s.statistics(),
                }
                for s in self.splits
            ],
            "warnings": self.warnings,
            "class_gaps": [
                {"class": gap.name, "images": gap.images, "missing": list(gap.missing)}
                for gap in self.class_gaps
            ],
        }


def _split_statistics(split: SplitCheck) -> list[str]:
    if not split.readable:
        return []
    lines = [f"    {'class':22s} {'pixels':>7s} {'images':>7s}"]
    pixels, images = split.pixel_shares, split.image_frequencies
    ordered = sorted(pixels, key=lambda name: -pixels[name])
    lines.extend(f"    {name:22s} {pixels[name]:7.2%} {images[name]:7.2%}" for name in ordered)
    lines.append(
        f"    void {split.void_share:.2%} of pixels; per image median {split.void_median:.2%}, "
        f"max {split.void_max:.2%}; over {VOID_HEAVY_SHARE:.0%} void in {len(split.void_heavy)} of {split.readable} images"
    )
    return lines


def _listed(items: list[str]) -> list[str]:
    lines = [f"  - {item}" for item in items[:SHOWN_PROBLEMS]]
    if len(items) > SHOWN_PROBLEMS:
        lines.append(f"  ... and {len(items) - SHOWN_PROBLEMS} more")
    return lines


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
    """Read every sample of a split once, gathering label statistics and collecting problems."""
    report = SplitCheck(split=truthset.split, size=len(truthset), tasks=truthset.tasks)
    if not len(truthset):
        report.problems.append(f"{truthset.root}: split {truthset.split!r} is empty (0 samples)")
        return report
    counts = np.zeros(NUM_CITYSCAPES_IDS, dtype=np.int64)
    images = np.zeros(NUM_CITYSCAPES_IDS, dtype=np.int64)
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
            histogram = np.bincount(sample.labels.ravel(), minlength=NUM_CITYSCAPES_IDS)
            counts += histogram
            images += histogram > 0
            report.image_void[where] = float(histogram[_VOID_MASK].sum() / max(histogram.sum(), 1))
    report.class_pixels = {CITYSCAPES.by_id[i].name: int(n) for i, n in enumerate(counts) if n}
    report.class_images = {CITYSCAPES.by_id[i].name: int(n) for i, n in enumerate(images) if n}
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
