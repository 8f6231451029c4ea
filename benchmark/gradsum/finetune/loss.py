"""The relevance-guided loss (Chefer et al. 2022, RobustViT), adapted to driving models.

    total = relevance · (background · MSE(R·(1−M), 0) + foreground · MSE(R·M, M)) + keep · keep_term

R is the model's relevance map (`relevance.relevance_map`) and M the foreground mask; the keep term holds
the predictions near a frozen copy of the original model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from torch.nn import functional

from gradsum.errors import TrainingError
from gradsum.finetune.relevance import relevance_map
from gradsum.finetune.settings import LossWeights
from gradsum.models.tasks import TRAINING_TASKS
from gradsum.taxonomy import TaskRegistry


@dataclass(frozen=True)
class LossParts:
    """The loss terms (scalars with graph) and the weighted total that is backpropagated."""

    background: Tensor
    foreground: Tensor
    keep: Tensor
    total: Tensor


#: task → the target the keep term fits to the original model's output: the value itself for steering,
#: the original's own predicted class for obstacle (RobustViT's cross-entropy against its top-1)
KEEP_TARGETS: TaskRegistry[Callable[[Tensor], Tensor]] = TaskRegistry("task")
KEEP_TARGETS.add("steering", lambda output: output)
KEEP_TARGETS.add("obstacle", lambda logit: (logit > 0).to(logit.dtype))


def background_term(relevance: Tensor, foreground: Tensor) -> Tensor:
    """MSE(R·(1−M), 0): relevance left on the background."""
    return functional.mse_loss(relevance * (1 - foreground), torch.zeros_like(relevance))


def foreground_term(relevance: Tensor, foreground: Tensor) -> Tensor:
    """MSE(R·M, M): foreground pixels whose relevance falls short of 1."""
    return functional.mse_loss(relevance * foreground, foreground)


def keep_term(output: Tensor, original: Tensor, task: str) -> Tensor:
    """The task's training loss of the output against the original model's output made a target."""
    return TRAINING_TASKS.get(task, "task").loss(output, KEEP_TARGETS.get(task, "task")(original))


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with frozen parameters: the original the keep term compares to."""
    original = copy.deepcopy(model).eval()
    for parameter in original.parameters():
        parameter.requires_grad_(False)
    return original


def relevance_loss(
    model: nn.Module,
    original: nn.Module,
    images: Tensor,
    foreground: Tensor,
    task: str,
    weights: LossWeights | None = None,
) -> LossParts:
    """The relevance-guided loss of `model` on model-input `images` (B, 3, H, W) and masks (B, H, W)."""
    if tuple(foreground.shape) != (images.shape[0], *images.shape[-2:]):
        raise TrainingError(
            f"foreground: mask shape {tuple(foreground.shape)} does not match images {tuple(images.shape)}"
        )
    weights = weights or LossWeights()
    mask = foreground.to(images.dtype)
    relevance, output = relevance_map(model, images, task)
    with torch.no_grad():
        reference = original(images).reshape(-1)
    background = background_term(relevance, mask)
    fore = foreground_term(relevance, mask)
    keep = keep_term(output, reference, task)
    total = (
        weights.relevance * (weights.background * background + weights.foreground * fore)
        + weights.keep * keep
    )
    return LossParts(background=background, foreground=fore, keep=keep, total=total)


def loss_values(parts: LossParts) -> dict[str, float]:
    """The loss terms as plain numbers, for logs and the card."""
    # not asdict: it deep-copies the tensors, which their graphs forbid
    return {f.name: float(getattr(parts, f.name).item()) for f in fields(parts)}
