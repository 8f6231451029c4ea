"""Scores of a map against a boolean mask, per image: relevance mass accuracy, relevance rank accuracy and
the pointing game (their definitions: `gradsum.evaluation.checks.localisation`). The localisation check
reads every metric of `LOCALISATION_METRICS`; the granularity sweep reads the mass accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from gradsum.errors import GradSUMError
from gradsum.registry import Registry

ArrayLike = np.ndarray | Tensor
#: (maps (B,H,W), boolean masks (B,H,W)) → (B,) float64 scores
LocalisationMetric = Callable[[ArrayLike, ArrayLike], np.ndarray]


def _flat(maps: ArrayLike, masks: ArrayLike) -> tuple[Tensor, Tensor]:
    """(B, H·W) float64 maps and bool masks; their shapes must agree."""
    values, inside = torch.as_tensor(maps).detach().cpu(), torch.as_tensor(masks).detach().cpu()
    if values.shape != inside.shape or values.ndim != 3:
        raise GradSUMError(
            f"maps {tuple(values.shape)} and masks {tuple(inside.shape)}: need two (B, H, W) arrays of one shape"
        )
    return values.double().flatten(1), inside.bool().flatten(1)


def _undefined_where(scores: Tensor, undefined: Tensor) -> np.ndarray:
    return torch.where(undefined, torch.full_like(scores, float("nan")), scores).numpy()


def mass_accuracy(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """Per image: the share of the map's non-negative mass inside the mask."""
    values, inside = _flat(maps, masks)
    positive = values.clamp(min=0)
    total = positive.sum(1)
    share = (positive * inside).sum(1) / total.clamp(min=torch.finfo(total.dtype).tiny)
    return _undefined_where(share, (total <= 0) | ~inside.any(1))


def rank_accuracy(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """Per image: the share of the top-|mask| pixels inside the mask, ties at the cut by expected share."""
    values, inside = _flat(maps, masks)
    k = inside.sum(1)
    cut = values.sort(1, descending=True).values.gather(1, (k - 1).clamp(min=0)[:, None])
    above, tied = values > cut, values == cut
    # the tied pixels fill the places the strictly higher ones leave, each with equal chance
    places = k - above.sum(1)
    hits = (above & inside).sum(1) + places * (tied & inside).sum(1) / tied.sum(1).clamp(min=1)
    return _undefined_where(hits / k.clamp(min=1), k == 0)


def pointing_game(maps: ArrayLike, masks: ArrayLike) -> np.ndarray:
    """Per image: 1 when any pixel of the map's maximum lies inside the mask, else 0."""
    values, inside = _flat(maps, masks)
    top = values == values.max(1, keepdim=True).values
    return _undefined_where((top & inside).any(1).double(), ~inside.any(1))


LOCALISATION_METRICS: Registry[LocalisationMetric] = Registry("localisation metric")
LOCALISATION_METRICS.add("mass_accuracy", mass_accuracy)
LOCALISATION_METRICS.add("rank_accuracy", rank_accuracy)
LOCALISATION_METRICS.add("pointing_game", pointing_game)
