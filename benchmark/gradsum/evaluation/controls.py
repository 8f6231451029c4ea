"""Known-answer control explainers: maps whose faithfulness is known before any check runs.

A check that cannot pass the causal oracle, or that passes an oracle built for the wrong model, task or
image, measures something other than faithfulness. The controls are computed beside the methods, judged
like them (role `control`) and never recommended:

- `control:oracle`: for this model and image, each class's pixels carry that class's measured erasure
  effect |Δ| (the causal referee, `causal.cached_causal_effects`) divided by its pixel count, so the map's
  sum over a class is its effect (sum-complete, the property IG, LRP and input×gradient aim for).
- `control:other_model`: the same construction from the effects of another model of the same task (the
  next one in `context.models` order, cyclically). With a single model of the task it uses the first
  model of another task instead (then it is `control:other_task`'s map); with a single model, uniform.
- `control:other_task`: from the effects of the first model of another task on the same image; uniform
  when every model has the same task.
- `control:other_image`: this model's effects on the next evaluated image (the next index of
  `context.indices`, cyclically) painted onto this image's classes; classes absent there get 0. With a
  single evaluated image it is the oracle.
- `control:cause_mask`: the truth set's cause mask of this image for the model's task (1 inside), the
  localisation oracle; uniform for an image without one (an obstacle negative).

Every control is built at the label resolution and resized (nearest) to the map size. The effect-based
controls read the effects of every model on every evaluated image, so planning one runs the causal
referee (once per context, shared with the causal check).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from gradsum.evaluation.base import (
    CONTROL,
    MODEL_FREE_MAPS,
    EvaluationContext,
    ModelFreeMaps,
    PlannedMethod,
    image_indices,
    images_of,
)
from gradsum.evaluation.nulls import uniform_map
from gradsum.evaluation.referee import cached_causal_effects, causal_filler
from gradsum.models.loaded import LoadedModel
from gradsum.names import CONTROL_SOURCE, qualified
from gradsum.truthsets.labels import NUM_CITYSCAPES_IDS

ORACLE, OTHER_MODEL, OTHER_TASK, OTHER_IMAGE, CAUSE_MASK = (
    "oracle",
    "other_model",
    "other_task",
    "other_image",
    "cause_mask",
)

#: The control explainers, as a run plans them: raw maps, since their values are the referee's own units.
CONTROL_EXPLAINERS: tuple[PlannedMethod, ...] = tuple(
    PlannedMethod(name, label=qualified(CONTROL_SOURCE, name), normalise="raw", role=CONTROL)
    for name in (ORACLE, OTHER_MODEL, OTHER_TASK, OTHER_IMAGE, CAUSE_MASK)
)

#: class id → |Δ| of erasing it, for one model on one image
ClassEffects = Mapping[int, float]


def paint_effects(effects: Sequence[ClassEffects], labels: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, *size): each class's pixels carry effect / the class's pixel count in that image's labels.

    `labels` (B,h,w) are Cityscapes ids; a class without an effect gets 0, so the map's sum over a class
    is its effect (at the label resolution; the nearest resize to `size` keeps it approximately).
    """
    flat = labels.long().flatten(1).cpu()
    counts = torch.zeros(flat.shape[0], NUM_CITYSCAPES_IDS, dtype=torch.float64)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=counts.dtype))
    values = torch.zeros_like(counts)
    for row, image_effects in enumerate(effects):
        for class_id, effect in image_effects.items():
            values[row, int(class_id)] = float(effect)
    density = torch.where(counts > 0, values / counts.clamp(min=1.0), torch.zeros_like(values))
    maps = torch.gather(density, 1, flat).view(labels.shape).float()
    return _resize(maps, size).to(labels.device)


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="nearest")[:, 0]


def _uniform(count: int, size: tuple[int, int], device: torch.device) -> Tensor:
    return uniform_map(size).to(device).expand(count, *size).clone()


def model_effects(context: EvaluationContext, model: str) -> dict[str, dict[int, float]]:
    """image id → class id → |Δ| of `model` on every evaluated image, from the causal referee.

    The referee's effects are computed once per context (with the causal check's filler, so both share
    them); this per-model table is kept in `context.cache` too.
    """
    filler = causal_filler(context)
    key = f"control_effects:{filler}:{model}"
    if key not in context.cache:
        effects: pd.DataFrame = cached_causal_effects(context, filler)
        own = effects[effects["model"] == model]
        table: dict[str, dict[int, float]] = {}
        for image, class_id, abs_delta in own[["image", "class_id", "abs_delta"]].itertuples(index=False):
            table.setdefault(str(image), {})[int(class_id)] = float(abs_delta)
        context.cache[key] = table
    cached: dict[str, dict[int, float]] = context.cache[key]
    return cached


def other_model(context: EvaluationContext, model: LoadedModel) -> LoadedModel | None:
    """The next model of `model`'s task in `context.models` order (cyclically); with none, the first model
    of another task; None when `model` is the only one."""
    same = [m for m in context.models if m.task == model.task]
    if len(same) > 1:
        position = next(k for k, m in enumerate(same) if m.name == model.name)
        return same[(position + 1) % len(same)]
    return other_task(context, model)


def other_task(context: EvaluationContext, model: LoadedModel) -> LoadedModel | None:
    """The first model of `context.models` whose task is not `model`'s; None when there is none."""
    return next((m for m in context.models if m.task != model.task), None)


def next_images(context: EvaluationContext, indices: Sequence[int]) -> list[str]:
    """The id of the evaluated image after each dataset index in `context.indices` (cyclically)."""
    evaluated = list(context.indices)
    by_index = {value: image for image, value in image_indices(context).items()}
    return [by_index[evaluated[(evaluated.index(index) + 1) % len(evaluated)]] for index in indices]


#: A control's maps: (context, model, labels (B,h,w), image ids, dataset indices, size) → (B, *size)
ControlMaps = Callable[
    [EvaluationContext, LoadedModel, Tensor, Sequence[str], Sequence[int], tuple[int, int]], Tensor
]


def _effects_of(
    source: Callable[[EvaluationContext, LoadedModel], LoadedModel | None],
) -> ControlMaps:
    """A control painting, on each image, the effects of the model `source` picks on that same image."""

    def maps(
        context: EvaluationContext,
        model: LoadedModel,
        labels: Tensor,
        ids: Sequence[str],
        indices: Sequence[int],
        size: tuple[int, int],
    ) -> Tensor:
        chosen = source(context, model)
        if chosen is None:
            return _uniform(len(ids), size, labels.device)
        table = model_effects(context, chosen.name)
        return paint_effects([table.get(image, {}) for image in ids], labels, size)

    return maps


def _other_image(
    context: EvaluationContext,
    model: LoadedModel,
    labels: Tensor,
    ids: Sequence[str],
    indices: Sequence[int],
    size: tuple[int, int],
) -> Tensor:
    table = model_effects(context, model.name)
    return paint_effects([table.get(image, {}) for image in next_images(context, indices)], labels, size)


def _cause_mask(
    context: EvaluationContext,
    model: LoadedModel,
    labels: Tensor,
    ids: Sequence[str],
    indices: Sequence[int],
    size: tuple[int, int],
) -> Tensor:
    maps = []
    for index in indices:
        mask = context.truthset.cause_mask(index, model.task)
        if mask is None:
            maps.append(uniform_map(size))
            continue
        values = torch.from_numpy(np.asarray(mask, dtype=np.float32))
        maps.append(_resize(values[None], size)[0])
    return torch.stack(maps).to(labels.device)


def _registered(control: ControlMaps) -> ModelFreeMaps:
    """`control` in the `MODEL_FREE_MAPS` signature: the images' ids and indices, one looked up from the
    other where the caller gave only one (the planned method adds nothing to a control)."""

    def maps(
        context: EvaluationContext,
        model: LoadedModel,
        method: PlannedMethod,
        labels: Tensor,
        ids: Sequence[str] | None,
        indices: Sequence[int] | None,
        size: tuple[int, int],
    ) -> Tensor:
        known_ids, known_indices = images_of(context, ids, indices, method.method)
        return control(context, model, labels, known_ids, known_indices, size)

    return maps


#: control method name → its maps
CONTROLS: dict[str, ControlMaps] = {
    ORACLE: _effects_of(lambda context, model: model),
    OTHER_MODEL: _effects_of(other_model),
    OTHER_TASK: _effects_of(other_task),
    OTHER_IMAGE: _other_image,
    CAUSE_MASK: _cause_mask,
}

for _name, _control in CONTROLS.items():
    MODEL_FREE_MAPS.add(_name, _registered(_control))
