"""The causal referee: erase one class from an image and measure how much each model's output moves.

No attribution method is involved. For every evaluated image and every class present in it, the image
is erased once (in-domain by the truth set's renderer, else by a fill; see `erasure`) and, where the
truth set can render one, given a placebo (the class's texture redrawn, nothing else); every model reads
the original, the erased and the placebo image. The effects are computed once per context and read by
the causal and granularity checks and the known-answer controls; `gradsum_rows` (every planned method's
class masses per image) likewise by the causal and shortcut checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gradsum.aggregation.profiles import per_image_frame
from gradsum.aggregation.scores import class_scores
from gradsum.evaluation.base import EvaluationContext
from gradsum.evaluation.erasure import (
    DEFAULT_FILLER,
    ERASERS,
    erasable_classes,
    erased_sample,
    placebo_sample,
)
from gradsum.models.loaded import LoadedModel
from gradsum.taxonomy import TaskRegistry
from gradsum.truthsets.base import Sample
from gradsum.truthsets.labels import CITYSCAPES, NUM_CITYSCAPES_IDS, ignored_cityscapes_ids

#: Columns of `causal_effects.csv`: one row per model × image × erased class.
CAUSAL_EFFECT_COLUMNS = (
    "model",
    "task",
    "image",
    "class",
    "class_id",
    "pixels",
    "area_share",
    "output",
    "erased_output",
    "delta",
    "abs_delta",
    "flip",
    "placebo_output",
    "placebo_abs_delta",
    "domain",
)

#: (original outputs, erased outputs) → 1.0 where the model's decision flips, 0.0 where not, NaN where the
#: task has no decision.
DecisionFlips = Callable[[np.ndarray, np.ndarray], np.ndarray]
DECISION_FLIPS: TaskRegistry[DecisionFlips] = TaskRegistry("decision-flip rule")


def _no_decision(original: np.ndarray, erased: np.ndarray) -> np.ndarray:
    return np.full(original.shape, np.nan)


def _logit_sign_flip(original: np.ndarray, erased: np.ndarray) -> np.ndarray:
    # The decision is logit > 0, as `gradsum.models.tasks.binary_metrics` scores it.
    return ((original > 0) != (erased > 0)).astype(np.float64)


DECISION_FLIPS.add("steering", _no_decision)
DECISION_FLIPS.add("obstacle", _logit_sign_flip)


@dataclass(frozen=True)
class _Erasure:
    """One image × class to erase, with what the rows report about it."""

    position: int
    index: int
    image: str
    class_id: int
    pixels: int
    area_share: float

    @property
    def name(self) -> str:
        return CITYSCAPES.by_id[self.class_id].name


def _erasures(
    ids: Sequence[str], labels: Sequence[np.ndarray], indices: Sequence[int], erasable: frozenset[str] | None
) -> list[_Erasure]:
    """Every present, non-ignored (and, with a renderer, erasable) class of every image of a batch."""
    ignored = np.zeros(NUM_CITYSCAPES_IDS, dtype=bool)
    ignored[ignored_cityscapes_ids()] = True
    cases = []
    for position, (image_id, image_labels, index) in enumerate(zip(ids, labels, indices, strict=True)):
        counts = np.bincount(image_labels.reshape(-1), minlength=NUM_CITYSCAPES_IDS)
        counts[ignored] = 0
        # area share among the non-ignored pixels, as `class_scores` defines it
        total = counts.sum()
        for class_id in np.flatnonzero(counts):
            case = _Erasure(
                position, index, image_id, int(class_id), int(counts[class_id]), counts[class_id] / total
            )
            if erasable is None or case.name in erasable:
                cases.append(case)
    return cases


def _chunks(cases: list[_Erasure], size: int) -> Iterator[list[_Erasure]]:
    for start in range(0, len(cases), size):
        yield cases[start : start + size]


def causal_effects(context: EvaluationContext, filler: str = DEFAULT_FILLER) -> pd.DataFrame:
    """Output change of every model when each present class of each evaluated image is erased, and when
    it is only re-textured (its placebo; NaN where the truth set cannot render one).

    Each image × class is erased (and re-textured) once and read by every model, the rendered images in
    batches of the context's batch size. `filler` names the `ERASERS` entry used where the truth set
    cannot re-render.
    """
    ERASERS.get(filler, "filler")
    for model in context.models:
        DECISION_FLIPS.get(model.task, f"task of model {model.name!r}")
    erasable = erasable_classes(context.truthset)
    rows: list[dict[str, object]] = []
    for ids, images, labels, indices in context.batches():
        originals = {m.name: _predict(context, m, images) for m in context.models}
        for chunk in _chunks(_erasures(ids, labels, indices, erasable), context.batch_size):
            erased = [
                erased_sample(
                    context.truthset,
                    case.index,
                    case.name,
                    filler,
                    Sample(images[case.position], labels[case.position]),
                )
                for case in chunk
            ]
            placebos = _placebo_images(context, chunk)
            for model in context.models:
                before = originals[model.name][[case.position for case in chunk]]
                after = _predict(context, model, [image for image, _ in erased])
                placebo = (
                    np.full(len(chunk), np.nan) if placebos is None else _predict(context, model, placebos)
                )
                rows.extend(_effect_rows(model, chunk, [d for _, d in erased], before, after, placebo))
    return pd.DataFrame(rows, columns=list(CAUSAL_EFFECT_COLUMNS))


def _placebo_images(context: EvaluationContext, chunk: Sequence[_Erasure]) -> list[np.ndarray] | None:
    """The placebo of every erasure of a chunk; None when the truth set renders no placebo."""
    images = [placebo_sample(context.truthset, case.index, case.name) for case in chunk]
    present = [image for image in images if image is not None]
    # a truth set renders placebos for all of its classes or for none (the renderer is per set)
    return present if len(present) == len(images) and present else None


def _effect_rows(
    model: LoadedModel,
    chunk: Sequence[_Erasure],
    domains: Sequence[str],
    before: np.ndarray,
    after: np.ndarray,
    placebo: np.ndarray,
) -> list[dict[str, object]]:
    flips = DECISION_FLIPS.get(model.task)(before, after)
    return [
        {
            "model": model.name,
            "task": model.task,
            "image": case.image,
            "class": case.name,
            "class_id": case.class_id,
            "pixels": case.pixels,
            "area_share": case.area_share,
            "output": old,
            "erased_output": new,
            "delta": new - old,
            "abs_delta": abs(new - old),
            "flip": flip,
            "placebo_output": sham,
            "placebo_abs_delta": abs(sham - old),
            "domain": domain,
        }
        for case, domain, old, new, flip, sham in zip(
            chunk, domains, before, after, flips, placebo, strict=True
        )
    ]


def cached_causal_effects(context: EvaluationContext, filler: str = DEFAULT_FILLER) -> pd.DataFrame:
    """`causal_effects` computed once per context and filler (kept in `context.cache` for other checks)."""
    key = f"causal_effects:{filler}"
    if key not in context.cache:
        context.cache[key] = causal_effects(context, filler)
    cached: pd.DataFrame = context.cache[key]
    return cached


def _predict(context: EvaluationContext, model: LoadedModel, images: Sequence[np.ndarray]) -> np.ndarray:
    return model.predict(context.model_input(model, images)).cpu().numpy().astype(np.float64)


def gradsum_rows(context: EvaluationContext) -> pd.DataFrame:
    """per_image rows of every planned method (null explainers included) of every model on the images.

    Computed once per context (kept in `context.cache`): the causal and shortcut checks both read them,
    and each pass re-reads every evaluated image.
    """
    if GRADSUM_ROWS not in context.cache:
        context.cache[GRADSUM_ROWS] = _gradsum_rows(context)
    rows: pd.DataFrame = context.cache[GRADSUM_ROWS]
    return rows


#: `context.cache` key of `gradsum_rows`.
GRADSUM_ROWS = "gradsum_rows"


def _gradsum_rows(context: EvaluationContext) -> pd.DataFrame:
    frames = []
    for ids, images, labels, indices in context.batches():
        label_tensor = torch.from_numpy(np.stack(labels).astype(np.int64)).to(context.device)
        for model in context.models:
            batch = context.model_input(model, images)
            for planned in context.plan.get(model.name, ()):
                maps = context.maps(model, planned, batch, label_tensor, ids, indices).detach()
                scores = class_scores(maps, label_tensor, resolution=context.resolution)
                frames.append(per_image_frame(scores, ids, model.name, planned.name))
    return pd.concat(frames, ignore_index=True)


def causal_filler(context: EvaluationContext) -> str:
    """The `ERASERS` entry the run's causal options name (`evaluation.options.causal.filler`): the checks and
    controls that reuse the causal effects read them with the same filler."""
    options: Mapping[str, object] = context.options.get("causal", {})
    return str(options.get("filler", DEFAULT_FILLER))
