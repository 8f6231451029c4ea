"""Null explainers: maps that know nothing of the model, run beside every method on the same images.

Each null has a role in the verdicts (`PlannedMethod.role`):

- chance: the seeded random map and the uniform map know nothing at all; a method must beat them.
- confound: the class-area prior (every pixel valued by its class's share of the image, so its profile
  ranks classes by area) and the positional prior (the mean cause mask of the model's task over the
  truth set's training scenes, the same map for every image) know what a metric may reward without any
  model; a method must beat them too, or the metric is uninformative there.
- heuristic: an edge detector on the input (Sobel) is a column of its own, "adds over an edge detector",
  and gates nothing: on a model that reads lane boundaries edges can be close to the true mechanism.

The priors are no attribution methods: their maps are registered in `MODEL_FREE_MAPS`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gradsum.errors import GradSUMError
from gradsum.evaluation.base import MODEL_FREE_MAPS, EvaluationContext
from gradsum.evaluation.planned import CHANCE, CONFOUND, HEURISTIC, PlannedMethod
from gradsum.models.loaded import LoadedModel
from gradsum.names import NULL_SOURCE, qualified
from gradsum.truthsets import TruthSet, open_truthset
from gradsum.truthsets.labels import NUM_CITYSCAPES_IDS

log = logging.getLogger(__name__)

#: The class-area prior is computed from labels, so it is not an attribution method.
CLASS_AREA = "class_area"
#: The positional prior is computed from the training split's cause masks, so it is not one either.
POSITIONAL_PRIOR = "positional_prior"
#: The split and the number of its first scenes the positional prior averages.
PRIOR_SPLIT = "train"
PRIOR_SCENES = 300

#: The null explainers, as a run plans them (the uniform map is compared as shares of its mass).
NULL_EXPLAINERS: tuple[PlannedMethod, ...] = (
    PlannedMethod("random", label=qualified(NULL_SOURCE, "random"), normalise="minmax", role=CHANCE),
    PlannedMethod("uniform", label=qualified(NULL_SOURCE, "uniform"), normalise="sum", role=CHANCE),
    PlannedMethod("sobel", label=qualified(NULL_SOURCE, "sobel"), normalise="minmax", role=HEURISTIC),
    PlannedMethod(CLASS_AREA, label=qualified(NULL_SOURCE, CLASS_AREA), normalise="raw", role=CONFOUND),
    PlannedMethod(
        POSITIONAL_PRIOR, label=qualified(NULL_SOURCE, POSITIONAL_PRIOR), normalise="raw", role=CONFOUND
    ),
)


def class_area_maps(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, *size): each pixel holds its class's share of its image (labels (B,h,w) Cityscapes ids)."""
    flat = labels.long().flatten(1)
    counts = torch.zeros(flat.shape[0], NUM_CITYSCAPES_IDS, device=labels.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=counts.dtype))
    shares = counts / flat.shape[1]
    maps = torch.gather(shares, 1, flat).view(labels.shape).float()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=size, mode="nearest")[:, 0]
    return maps


def uniform_map(size: tuple[int, int]) -> Tensor:
    """(*size) float32 with mass 1: the map of an explainer that has nothing to say."""
    return torch.full(size, 1.0 / (size[0] * size[1]), dtype=torch.float32)


def mean_cause_mask(truthset: TruthSet, task: str, scenes: int = PRIOR_SCENES) -> np.ndarray | None:
    """(H, W) float64: the mean of the first `scenes` cause masks of `task` in `truthset`; None when none.

    Scenes without a mask (an obstacle negative) are left out: localisation scores only the images that
    have one. Masks of another frame size are resized (nearest) to the first mask's.
    """
    total: np.ndarray | None = None
    count = 0
    for index in range(min(scenes, len(truthset))):
        mask = truthset.cause_mask(index, task)
        if mask is None:
            continue
        values = torch.from_numpy(np.asarray(mask, dtype=np.float64))
        if total is not None and tuple(values.shape) != total.shape:
            values = F.interpolate(values[None, None], size=total.shape, mode="nearest")[0, 0]
        total = values.numpy().copy() if total is None else total + values.numpy()
        count += 1
    return None if total is None else total / count


def _training_split(truthset: TruthSet) -> TruthSet | str:
    """The truth set's training split, or why there is none."""
    if truthset.split == PRIOR_SPLIT:
        return truthset
    try:
        return open_truthset(truthset.root, PRIOR_SPLIT, kind=truthset.kind)
    except (GradSUMError, OSError) as error:
        return f"no {PRIOR_SPLIT!r} split to average ({error})"


def _prior_at_source(context: EvaluationContext, task: str) -> np.ndarray | None:
    """The mean training cause mask of `task` (None, with a warning saying why, when there is none)."""
    key = f"{POSITIONAL_PRIOR}:{context.truthset.root}:{task}"
    if key not in context.cache:
        reason = None
        prior = None
        if task not in context.truthset.causes:
            reason = f"the truth set declares no causes for task {task!r}"
        else:
            train = _training_split(context.truthset)
            if isinstance(train, str):
                reason = train
            else:
                prior = mean_cause_mask(train, task)
                if prior is None:
                    reason = (
                        f"no cause mask of task {task!r} on the first {PRIOR_SCENES} {PRIOR_SPLIT} scenes"
                    )
        if reason is not None:
            log.warning(
                "null:%s for %s on %s is the uniform map (it adds nothing): %s",
                POSITIONAL_PRIOR,
                task,
                context.truthset.root,
                reason,
            )
        context.cache[key] = prior
    cached: np.ndarray | None = context.cache[key]
    return cached


def positional_prior(context: EvaluationContext, task: str, size: tuple[int, int]) -> Tensor:
    """(*size) float32: the mean cause mask of `task` over the first `PRIOR_SCENES` scenes of the truth set's
    training split, the same for every image and model; uniform where there is none.

    It knows where causes tend to lie in the frame and nothing else, so a metric it scores well on rewards
    position. Computed once per (truth set root, task) and resized once per map size (bilinear,
    antialiased: the mean is a smooth density, not labels); both kept in `context.cache`.
    """
    key = f"{POSITIONAL_PRIOR}:{context.truthset.root}:{task}:{size[0]}x{size[1]}"
    if key not in context.cache:
        source = _prior_at_source(context, task)
        if source is None:
            prior = uniform_map(size)
        else:
            prior = torch.from_numpy(source).float()
            if tuple(prior.shape) != tuple(size):
                prior = F.interpolate(prior[None, None], size=size, mode="bilinear", antialias=True)[0, 0]
        context.cache[key] = prior
    cached: Tensor = context.cache[key]
    return cached


def _class_area(
    context: EvaluationContext,
    model: LoadedModel,
    method: PlannedMethod,
    labels: Tensor,
    ids: Sequence[str] | None,
    indices: Sequence[int] | None,
    size: tuple[int, int],
) -> Tensor:
    return class_area_maps(labels, size)


def _positional_prior(
    context: EvaluationContext,
    model: LoadedModel,
    method: PlannedMethod,
    labels: Tensor,
    ids: Sequence[str] | None,
    indices: Sequence[int] | None,
    size: tuple[int, int],
) -> Tensor:
    prior = positional_prior(context, model.task, size).to(labels.device)
    return prior.expand(int(labels.shape[0]), *size).clone()


MODEL_FREE_MAPS.add(CLASS_AREA, _class_area)
MODEL_FREE_MAPS.add(POSITIONAL_PRIOR, _positional_prior)
