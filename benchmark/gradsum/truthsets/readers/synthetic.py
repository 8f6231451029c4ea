"""The `synthetic` reader: reads a set written by `gradsum.truthsets.synthetic` and re-renders counterfactuals from it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from gradsum.errors import TruthSetError
from gradsum.fileio import read_json_object
from gradsum.taxonomy import TASKS
from gradsum.truthsets.base import CauseDeclaration, Sample, TruthSet
from gradsum.truthsets.encodings import ENCODINGS, check_sizes, decode_labels, read_png, read_rgb
from gradsum.truthsets.kinds import SpecSource, register_reader
from gradsum.truthsets.labels import ClassTable, subset
from gradsum.truthsets.layout import MANIFEST, SPLITS, FrameId
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.ladder import Difficulty
from gradsum.truthsets.synthetic.render import (
    IDS,
    Rendered,
    ego_lane_mask,
    erase_params,
    placebo_params,
    render,
    render_counterfactual,
)
from gradsum.truthsets.synthetic.sensitivity import label_sensitivity_mask
from gradsum.truthsets.synthetic.writer import FORMAT_VERSION, KIND, TINT_SPLITS, frame_id

#: The rendered classes, mapped onto themselves in the Cityscapes scheme.
SYNTHETIC_CLASSES = subset(sc.CLASSES)


def read_label_ids(path: Path) -> np.ndarray:
    """A synthetic labelIds PNG as uint8 Cityscapes ids; ids outside the rendered classes raise naming it."""
    return decode_labels(path, ENCODINGS.get("id8"), SYNTHETIC_CLASSES).astype(np.uint8)


@register_reader(
    KIND,
    description=f"rendered driving scenes with known causes: a {MANIFEST} of kind {KIND} (gradsum generate)",
    priority=10,
)
class SyntheticTruthSet(TruthSet):
    """One split of a generated synthetic set; samples carry their scene parameters in `meta`."""

    #: How `erase` takes each class out ("removed" | "repainted"), for reports.
    ERASURE = sc.ERASURE

    def __init__(self, root: Path, split: str) -> None:
        super().__init__(root, split)
        self.manifest = read_json_object(self.root / MANIFEST, TruthSetError)
        if self.manifest.get("kind") != KIND:
            raise TruthSetError(
                f"{self.root / MANIFEST}: field 'kind' is {self.manifest.get('kind')!r}, not {KIND!r}"
            )
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise TruthSetError(
                f"{self.root / MANIFEST}: format_version {version!r}; this reader reads {FORMAT_VERSION}: "
                f"re-render the set (gradsum generate --overwrite)"
            )
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise TruthSetError(f"{self.root / MANIFEST}: no split {split!r}; valid: {', '.join(splits)}")
        self._count = int(splits[split]["count"])
        if self._count < 1:
            raise TruthSetError(f"{self.root / MANIFEST}: split {split!r} is empty (count {self._count})")
        # A planted shortcut (train, `--shortcut`) or a tint split's fixed tint ties sky to steering.
        self._sky_tied = (
            float(splits[split].get("shortcut", 0.0)) > 0.0 or splits[split].get("tint_agrees") is not None
        )
        # a harder set's frames went through the difficulty ladder's knobs: so must every re-render, or a
        # counterfactual would differ from the stored frame in pixels its change never touched
        self._difficulty = Difficulty.of(self.parameters.get("difficulty"))

    @property
    def class_table(self) -> ClassTable:
        return SYNTHETIC_CLASSES

    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS

    @property
    def parameters(self) -> Mapping[str, Any]:
        return dict(self.manifest["parameters"])

    @property
    def causes(self) -> Mapping[str, CauseDeclaration]:
        """`scene.CAUSES`; a split whose sky tint follows the steering sign (train with `--shortcut`, or a
        tint split such as test_decorrelated) drops sky from independent."""
        if not self._sky_tied:
            return sc.CAUSES
        return {
            task: replace(causes, independent=tuple(c for c in causes.independent if c != "sky"))
            for task, causes in sc.CAUSES.items()
        }

    def cause_mask(self, index: int, task: str) -> np.ndarray | None:
        """(H, W) bool: the pixels that cause the target; None for an obstacle negative.

        steering: the pixels whose rendering changes when curvature, heading or offset move a little
        (`sensitivity.label_sensitivity_mask`), wherever the lane geometry is drawn; obstacle: the pixels
        of the obstacle instance(s) (`obstacle_instances` of the scene JSON). Kept per index, since the
        steering mask re-renders the scene seven times and localisation and the positional prior both
        read it.
        """
        return self._mask(CAUSE_MASKS, "cause_mask", index, task)

    def plausibility_mask(self, index: int, task: str) -> np.ndarray | None:
        """(H, W) bool: where a driver would look, not what the label is a function of.

        steering: the road pixels of the ego lane up to the pursuit look-ahead `scene.LOOK_AHEAD` (the
        cause mask before it was the label's sensitivity); obstacle: the same as `cause_mask`.
        """
        return self._mask(PLAUSIBILITY_MASKS, "plausibility_mask", index, task)

    @cached_property
    def _masks(self) -> dict[tuple[str, int, str], np.ndarray | None]:
        return {}

    def _mask(self, masks: _MaskTable, kind: str, index: int, task: str) -> np.ndarray | None:
        if task not in masks:
            raise TruthSetError(f"{kind} task={task!r}: unknown; valid: {', '.join(masks)}")
        frame = self.frame(index)
        key = (kind, index % self._count, task)
        if key not in self._masks:
            mask = masks[task](
                self.record(index),
                lambda: read_label_ids(frame.label_ids(self.root)),
                lambda: self._instances(frame),
            )
            if len(self._masks) >= _MASKS_KEPT:
                return mask
            self._masks[key] = mask
        kept = self._masks[key]
        # a copy: a caller that edits its mask must not edit every later caller's
        return None if kept is None else kept.copy()

    def label_map(self, index: int) -> np.ndarray:
        return read_label_ids(self.frame(index).label_ids(self.root))

    def image(self, index: int) -> np.ndarray:
        return read_rgb(self.frame(index).image(self.root))

    def __len__(self) -> int:
        return self._count

    def frame(self, index: int) -> FrameId:
        """The file identity of sample `index` (negative indices count from the end)."""
        if not -self._count <= index < self._count:
            raise IndexError(f"index {index} out of range for {self._count} samples in split {self.split!r}")
        return frame_id(self.split, index % self._count)

    def record(self, index: int) -> dict[str, Any]:
        """The scene JSON of sample `index`: targets and latent parameters (checked present)."""
        path = self.frame(index).scene(self.root)
        record = read_json_object(path, TruthSetError)
        targets = record.get("targets")
        if not isinstance(targets, dict) or not all(isinstance(targets.get(t), int | float) for t in TASKS):
            raise TruthSetError(f"{path}: field 'targets' must give a number for each of {', '.join(TASKS)}")
        if "parameters" not in record:
            raise TruthSetError(f"{path}: field 'parameters' is missing")
        return record

    def scene(self, index: int) -> sc.SceneParams:
        """The latent parameters of sample `index`, ready to re-render."""
        path = self.frame(index).scene(self.root)
        try:
            return sc.SceneParams.from_dict(self.record(index)["parameters"])
        except (KeyError, TypeError, ValueError) as error:
            raise TruthSetError(f"{path}: field 'parameters' is malformed ({error})") from None

    def __getitem__(self, index: int) -> Sample:
        frame = self.frame(index)
        record = self.record(index)
        labels = read_label_ids(frame.label_ids(self.root))
        image = read_rgb(frame.image(self.root))
        check_sizes(image, labels, frame.image(self.root), frame.label_ids(self.root))
        return Sample(
            image=image,
            labels=labels,
            targets={task: float(record["targets"][task]) for task in TASKS},
            meta=self._meta(frame, record),
            raw_labels=labels,
            instances=self._instances(frame),
        )

    def _instances(self, frame: FrameId) -> np.ndarray:
        path = frame.instance_ids(self.root)
        instances = read_png(path, "instance").astype(np.int32)
        if instances.ndim != 2:
            raise TruthSetError(
                f"{path}: instance ids must be a single-channel PNG, got shape {instances.shape}"
            )
        return instances

    def _meta(self, frame: FrameId, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "frame": frame.stem,
            "split": self.split,
            "image_file": str(frame.image(self.root)),
            "label_file": str(frame.label_ids(self.root)),
            "color_file": str(frame.color(self.root)),
            "instance_file": str(frame.instance_ids(self.root)),
            "vehicle_file": str(frame.vehicle(self.root)),
            "scene_file": str(frame.scene(self.root)),
            "scene": record["parameters"],
        }

    @cached_property
    def _all_targets(self) -> dict[str, np.ndarray]:
        records = [self.record(i)["targets"] for i in range(len(self))]
        return {task: np.array([r[task] for r in records], dtype=np.float32) for task in TASKS}

    def targets(self, task: str) -> np.ndarray:
        """All targets of `task`, read from the scene JSONs without decoding any image."""
        if task not in TASKS:
            raise TruthSetError(f"task {task!r} unknown to {self.root}; valid: {', '.join(TASKS)}")
        return self._all_targets[task]

    def counterfactual(
        self,
        index: int,
        remove: str | tuple[str, ...] = (),
        repaint: Mapping[str, tuple[int, int, int]] | None = None,
        **changes: Any,
    ) -> Sample:
        """Sample `index` re-rendered with classes removed/repainted or latent factors changed."""
        rendered = render_counterfactual(self.scene(index), remove, repaint, **changes)
        counterfactual = {"remove": remove, "repaint": dict(repaint or {}), "changes": changes}
        return self._rendered_sample(index, rendered, counterfactual=counterfactual)

    def donor(self, index: int) -> int:
        """The default donor of scene `index` for repainted classes: the next scene of the split, cyclically."""
        self.frame(index)  # raises IndexError naming the split
        return (index + 1) % len(self)

    def erase(self, index: int, cls: str, donor: int | None = None) -> Sample:
        """Sample `index` re-rendered with class `cls` erased in-domain (see `ERASURE` and `erase_params`).

        Removable classes are removed; sky and terrain are repainted with that class's colour and texture
        from scene `donor` of this split (default `donor(index)`, i.e. `(index + 1) % len(self)`; with a
        one-scene split the donor is the scene itself and the repaint changes nothing).
        """
        donor_index = self.donor(index) if donor is None else donor
        donor_params = self.scene(donor_index) if sc.ERASURE.get(cls) == "repainted" else None
        rendered = render(erase_params(self.scene(index), cls, donor_params))
        used = donor_index if donor_params is not None else None
        erasure: dict[str, Any] = {"cls": cls, "how": sc.ERASURE[cls], "donor": used}
        return self._rendered_sample(index, rendered, erase=erasure)

    def placebo(self, index: int, cls: str) -> Sample:
        """Sample `index` re-rendered with only class `cls`'s texture noise redrawn (`placebo_params`):
        same geometry, labels, colours and targets; the in-domain placebo of `erase(index, cls)`.
        `meta["placebo"]` holds `{cls}`."""
        rendered = render(placebo_params(self.scene(index), cls))
        return self._rendered_sample(index, rendered, placebo={"cls": cls})

    def flip_tint(self, index: int) -> Sample:
        """Sample `index` with the sky repainted in the opposite tint (`scene.opposite_tint`): only sky
        pixels change, labels and targets stay; the shortcut cue's causal counterfactual.
        `meta["flip_tint"]` holds the tints `{from, to}`."""
        params = self.scene(index)
        rendered = render(sc.opposite_tint(params))
        return self._rendered_sample(
            index, rendered, flip_tint={"from": params.sky_cue, "to": rendered.params.sky_cue}
        )

    def _rendered_sample(self, index: int, rendered: Rendered, **provenance: Any) -> Sample:
        # a scene of a mixed split (`generate(mix=...)`) drew its own levels and records them
        drawn = self.record(index).get("difficulty")
        rendered = (self._difficulty if drawn is None else Difficulty.of(drawn)).apply(rendered)
        meta = self._meta(self.frame(index), {"parameters": rendered.params.to_dict()})
        meta.update(provenance)
        return Sample(
            image=rendered.image,
            labels=rendered.labels,
            targets=rendered.targets,
            meta=meta,
            raw_labels=rendered.labels,
            instances=rendered.instances,
        )

    # -- the kind: which folders it reads, and how -------------------------------------------------

    @staticmethod
    def detect(root: Path) -> bool:
        try:
            return bool(json.loads((root / MANIFEST).read_text(encoding="utf-8")).get("kind") == KIND)
        except (OSError, ValueError, AttributeError):
            return False

    @classmethod
    def open(cls, root: Path, split: str, spec: SpecSource) -> TruthSet:
        return cls(root, split)

    @staticmethod
    def default_split(root: Path, spec: SpecSource) -> str:
        # every split is rendered with labels; test is the held-out one
        return "test"

    @staticmethod
    def splits(root: Path, spec: SpecSource) -> list[str]:
        """The manifest's splits (train, val, test, and the tint splits when rendered); SPLITS if unreadable."""
        try:
            splits = read_json_object(root / MANIFEST, TruthSetError).get("splits")
        except TruthSetError:
            return list(SPLITS)
        if not isinstance(splits, dict) or not splits:
            return list(SPLITS)
        # The manifest stores its keys sorted; list them in generation order.
        order = (*SPLITS, *TINT_SPLITS)
        return [name for name in order if name in splits] + sorted(str(n) for n in splits if n not in order)


def _steering_cause(
    record: dict[str, Any], labels: Callable[[], np.ndarray], instances: Callable[[], np.ndarray]
) -> np.ndarray:
    return label_sensitivity_mask(sc.SceneParams.from_dict(record["parameters"]))


def _steering_plausibility(
    record: dict[str, Any], labels: Callable[[], np.ndarray], instances: Callable[[], np.ndarray]
) -> np.ndarray:
    params = sc.SceneParams.from_dict(record["parameters"])
    return ego_lane_mask(params, sc.LOOK_AHEAD) & (labels() == IDS["road"])


def _obstacle_cause(
    record: dict[str, Any], labels: Callable[[], np.ndarray], instances: Callable[[], np.ndarray]
) -> np.ndarray | None:
    obstacles = record["obstacle_instances"]
    return np.isin(instances(), obstacles) if obstacles else None


#: task → a mask of a scene, from its JSON record and (lazily read) label and instance maps
_MaskTable = dict[
    str, Callable[[dict[str, Any], Callable[[], np.ndarray], Callable[[], np.ndarray]], np.ndarray | None]
]
#: task → the cause mask: the pixels the target is a function of
CAUSE_MASKS: _MaskTable = {"steering": _steering_cause, "obstacle": _obstacle_cause}
#: task → the plausibility mask: where a driver would look (the obstacle's instances are both)
PLAUSIBILITY_MASKS: _MaskTable = {"steering": _steering_plausibility, "obstacle": _obstacle_cause}
#: masks kept per reader (96×192 bool masks: about 18 KiB each, so at most ~75 MiB)
_MASKS_KEPT = 4096
