"""A truth set whose labels are replaced, everything else delegated: the label-quality study's truth sets.

`RelabelledTruthSet(base, relabel, description)` serves the base's samples with `relabel(labels, index)`
in place of their labels (a degradation of `gradsum.truthsets.degrade`, or a segmenter's predictions),
so a study profiles the same images, targets and counterfactuals under other labels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from gradsum.errors import GradSUMError
from gradsum.truthsets.base import CauseDeclaration, Sample, TruthSet
from gradsum.truthsets.labels import ClassTable
from gradsum.truthsets.readers.cityscapes import to_train_ids

#: (labels, index) → new labels: (H, W) uint8 Cityscapes ids of sample `index` in, the same shape out
Relabel = Callable[[np.ndarray, int], np.ndarray]
#: methods `(index) -> array` of some readers that view a sample's labels otherwise: each is recomputed from
#: the relabelled ids (where the base has it), not taken from the base's own labels
LABEL_VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"train_ids": to_train_ids}


class RelabelledTruthSet(TruthSet):
    """`base` with every label map passed through `relabel`; all else is the base's.

    `labels` and `raw_labels` of each sample (from `__getitem__`, `label_map` and any method of the base
    that returns a `Sample`, such as the synthetic set's `erase`, `placebo`, `flip_tint` and
    `counterfactual`, whose first argument is the sample index) hold the relabelled Cityscapes ids, and
    the label views of `LABEL_VIEWS` (Cityscapes' `train_ids`) are computed from them.
    Images, targets, instances, meta, causes and cause/plausibility masks are the base's: the masks say
    what causes a target, which relabelling does not change. Attributes the base lacks stay missing, so
    `isinstance` checks against the evaluation's protocols (an in-domain eraser) answer as for the base.
    """

    def __init__(self, base: TruthSet, relabel: Relabel, description: str) -> None:
        super().__init__(base.root, base.split)
        self.base = base
        self.relabel = relabel
        self.description = description
        # the kind of the labels' source, so results and cards name the reader that read the images
        self.kind = base.kind

    def _relabelled(self, labels: np.ndarray, index: int) -> np.ndarray:
        new = self.relabel(labels, index)
        if not isinstance(new, np.ndarray) or new.shape != labels.shape or new.dtype != np.uint8:
            got = f"{new.dtype} {new.shape}" if isinstance(new, np.ndarray) else type(new).__name__
            raise GradSUMError(
                f"relabel ({self.description}): sample {index} must give uint8 {labels.shape} ids, got {got}"
            )
        return new

    def _sample(self, sample: Sample, index: int) -> Sample:
        labels = self._relabelled(sample.labels, index)
        return replace(sample, labels=labels, raw_labels=None if sample.raw_labels is None else labels)

    # -- TruthSet interface ------------------------------------------------------------------------

    @property
    def class_table(self) -> ClassTable:
        return self.base.class_table

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.base.tasks

    @property
    def parameters(self) -> Mapping[str, Any]:
        return {**self.base.parameters, "relabelled": self.description}

    @property
    def causes(self) -> Mapping[str, CauseDeclaration]:
        return self.base.causes

    def cause_mask(self, index: int, task: str) -> np.ndarray | None:
        return self.base.cause_mask(index, task)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Sample:
        return self._sample(self.base[index], index)

    def label_map(self, index: int) -> np.ndarray:
        return self._relabelled(self.base.label_map(index), index)

    def image(self, index: int) -> np.ndarray:
        return self.base.image(index)

    def targets(self, task: str) -> np.ndarray:
        return self.base.targets(task)

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes this class lacks; `base` itself is looked up normally (a missing
        # `base`, during unpickling, must not recurse)
        if name == "base" or name.startswith("__"):
            raise AttributeError(name)
        found = getattr(self.base, name)
        if name in LABEL_VIEWS:
            view = LABEL_VIEWS[name]
            return lambda index: view(self.label_map(index))
        if not callable(found):
            return found

        @functools.wraps(found)
        def relabelling(*args: Any, **kwargs: Any) -> Any:
            result = found(*args, **kwargs)
            if not isinstance(result, Sample):
                return result
            index = args[0] if args else kwargs.get("index")
            if not isinstance(index, int | np.integer):
                raise GradSUMError(
                    f"{name}: returns a Sample, but its first argument is not a sample index ({index!r}), "
                    "so its labels cannot be relabelled"
                )
            return self._sample(result, int(index))

        return relabelling
