"""Per-image map normalisations, batched on the device; the choice is recorded with every result."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gradsum.registry import Registry

Normaliser = Callable[[Tensor], Tensor]

NORMALISERS: Registry[Normaliser] = Registry("normalisation")
#: The normalisation a map gets when none is named (the API, a run config, a planned method).
DEFAULT_NORMALISER = "minmax"


@NORMALISERS.register("minmax")
def minmax(maps: Tensor) -> Tensor:
    """Per-image (m − min) / (max − min), as pytorch-grad-cam and the seed do; a flat map becomes 0.

    No additive epsilon: raw CAMs can be tiny (1e-4), where the library's `1e-7` would bias the scale.
    """
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, *[1] * (maps.ndim - 1))
    shifted = maps - low
    high = shifted.flatten(1).max(dim=1).values.view(-1, *[1] * (maps.ndim - 1))
    return shifted / torch.where(high > 0, high, torch.ones_like(high))


@NORMALISERS.register("raw")
def raw(maps: Tensor) -> Tensor:
    """The map as the post-processing steps left it, unchanged (signed unless a step removed the sign)."""
    return maps


@NORMALISERS.register("sum")
def sum_to_one(maps: Tensor) -> Tensor:
    """Per-image share of the positive mass: clamp at 0, divide by the sum; an all-zero map stays 0."""
    positive = maps.clamp(min=0)
    total = positive.flatten(1).sum(dim=1).view(-1, *[1] * (maps.ndim - 1))
    return positive / torch.where(total > 0, total, torch.ones_like(total))


def normalise(maps: Tensor, name: str) -> Tensor:
    """Apply the registered normalisation `name` to a batch of maps (B,...)."""
    return NORMALISERS.get(name, "normalise")(maps)
