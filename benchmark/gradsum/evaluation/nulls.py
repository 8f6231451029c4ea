"""Null explainers: maps that know nothing of the model, run beside every method on the same images.

A method's verdict counts only where it beats all of them beyond their confidence intervals: the
seeded random map, the uniform map, an edge detector on the input (Sobel) and the class-area prior
(every pixel valued by its class's share of the image, so its profile ranks classes by area).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gradsum.evaluation.base import PlannedMethod
from gradsum.truthsets.labels import NUM_CITYSCAPES_IDS

#: The class-area prior is computed from labels, so it is not an attribution method.
CLASS_AREA = "class_area"

#: The null explainers, as a run plans them (the uniform map is compared as shares of its mass).
NULL_EXPLAINERS: tuple[PlannedMethod, ...] = (
    PlannedMethod("null:random", "random", normalise="minmax", null=True),
    PlannedMethod("null:uniform", "uniform", normalise="sum", null=True),
    PlannedMethod("null:sobel", "sobel", normalise="minmax", null=True),
    PlannedMethod(f"null:{CLASS_AREA}", CLASS_AREA, normalise="raw", null=True),
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
