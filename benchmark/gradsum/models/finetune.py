"""Relevance-guided fine-tuning (Chefer et al. 2022, hila-chefer/RobustViT), adapted to driving models.

The loss pushes a model's relevance map R off the background and onto a foreground mask M while a keep
term holds its predictions near a frozen copy of the original model:

    total = relevance · (background · MSE(R·(1−M), 0) + foreground · MSE(R·M, M)) + keep · keep_term

R is differentiable in the model's parameters: gradient-weighted rollout (Chefer ICCV 2021) for ViTs and
hybrids, GradCAM for CNNs, both from gradients taken with `create_graph=True`, upsampled to the input size
and min-max normalised per image. The math is the attribution package's own (`attention_math`,
`fastcam`, `normalise`), applied to tensors that keep their graph.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from gradsum.attribution.adapters import attribution_mode
from gradsum.attribution.attention_capture import (
    block_indices,
    forward_capturing,
    pooled_tokens,
    readout_weights,
    to_token_grid,
)
from gradsum.attribution.attention_math import gradient_rollout, read_out
from gradsum.attribution.base import upsample
from gradsum.attribution.fastcam import GradCAM
from gradsum.attribution.normalise import minmax
from gradsum.attribution.postprocess import relu
from gradsum.attribution.targets import Target, resolve_target
from gradsum.errors import TrainingError
from gradsum.models.introspect import cam_layer, model_family, num_prefix_tokens
from gradsum.models.tasks import TRAINING_TASKS
from gradsum.registry import Registry

#: (model, images, target) → (relevance on the model's native grid (B, h, w), model output), with graph
RelevanceFn = Callable[[nn.Module, Tensor, Target], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class LossWeights:
    """The loss weights; the defaults are RobustViT's (λ_bg 2, λ_fg 0.3, relevance 0.8, prediction 0.2)."""

    background: float = 2.0
    foreground: float = 0.3
    relevance: float = 0.8
    keep: float = 0.2


@dataclass(frozen=True)
class LossParts:
    """The loss terms (scalars with graph) and the weighted total that is backpropagated."""

    background: Tensor
    foreground: Tensor
    keep: Tensor
    total: Tensor


def rollout_relevance(model: nn.Module, images: Tensor, target: Target) -> tuple[Tensor, Tensor]:
    """Gradient-weighted rollout on the token grid, differentiable in the parameters, and the output.

    The same relevance as `gradient_rollout_map` (read out from R − I by the model's pooling), computed in
    one forward that keeps every block's attention and its graph, so it can itself be backpropagated.
    """
    attentions: list[Tensor] = []
    with pooled_tokens(model) as pooled:
        output = forward_capturing(
            model, images, block_indices(model, 0), lambda _index, attention: attentions.append(attention)
        )
    gradients = torch.autograd.grad(target.select(output).sum(), attentions, create_graph=True)
    relevance = gradient_rollout(attentions, gradients)
    eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
    # the pooling's row weights come from detached tokens: they choose rows, they are not optimised
    rows = read_out(relevance - eye, readout_weights(model, pooled), num_prefix_tokens(model))
    return to_token_grid(model, rows), output


def gradcam_relevance(model: nn.Module, images: Tensor, target: Target) -> tuple[Tensor, Tensor]:
    """GradCAM (ReLU'd) on the model's default CAM layer, differentiable in the parameters, and the output."""
    kept: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
        kept.append(output)

    handle = cam_layer(model).register_forward_hook(keep)
    try:
        output = model(images)
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(target.select(output).sum(), kept, create_graph=True)
    return relu(GradCAM().cam(kept[0], gradient)), output


#: model family → its differentiable relevance map
RELEVANCE_MAPS: Registry[RelevanceFn] = Registry("model family")
RELEVANCE_MAPS.add("vit", rollout_relevance)
RELEVANCE_MAPS.add("hybrid", rollout_relevance)
RELEVANCE_MAPS.add("cnn", gradcam_relevance)

#: task → the target the keep term fits to the original model's output: the value itself for steering,
#: the original's own predicted class for obstacle (RobustViT's cross-entropy against its top-1)
KEEP_TARGETS: Registry[Callable[[Tensor], Tensor]] = Registry("task")
KEEP_TARGETS.add("steering", lambda output: output)
KEEP_TARGETS.add("obstacle", lambda logit: (logit > 0).to(logit.dtype))


def relevance_map(model: nn.Module, images: Tensor, task: str) -> tuple[Tensor, Tensor]:
    """R (B, H, W) at the input size, min-max normalised per image with graph, and the output (B,).

    The task's default attribution target is explained (the predicted direction or class). The model
    runs in attribution mode (eval, fused attention off) so the maps optimised are the maps measured.
    """
    target = resolve_target(None, task)
    method = RELEVANCE_MAPS.get(model_family(model), "model")
    with attribution_mode(model, needs_attention=True):
        grid, output = method(model, images, target)
    size = (int(images.shape[-2]), int(images.shape[-1]))
    return minmax(upsample(grid, size)), output.reshape(-1)


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
