"""Relevance maps that keep their graph: what the fine-tuning loss pushes off the background.

Gradient-weighted rollout (Chefer ICCV 2021) for ViTs and hybrids, GradCAM for CNNs, both from gradients
taken with `create_graph=True`, so the map is differentiable in the model's parameters. The math is the
attribution package's own (`attention_math`, `fastcam`, `normalise`), applied to tensors that keep their
graph, so the maps optimised are the maps measured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

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
from gradsum.attribution.methods.fastcam import GradCAM
from gradsum.attribution.normalise import minmax
from gradsum.attribution.postprocess import relu
from gradsum.attribution.targets import Target, resolve_target
from gradsum.models.introspect import cam_layer, model_family, num_prefix_tokens
from gradsum.taxonomy import FamilyRegistry

#: (model, images, target) → (relevance on the model's native grid (B, h, w), model output), with graph
RelevanceFn = Callable[[nn.Module, Tensor, Target], tuple[Tensor, Tensor]]


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
RELEVANCE_MAPS: FamilyRegistry[RelevanceFn] = FamilyRegistry("model family")
RELEVANCE_MAPS.add("vit", rollout_relevance)
RELEVANCE_MAPS.add("hybrid", rollout_relevance)
RELEVANCE_MAPS.add("cnn", gradcam_relevance)


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
