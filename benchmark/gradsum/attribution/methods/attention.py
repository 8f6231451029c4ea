"""Attention methods for timm ViTs and hybrid ViTs: raw attention, rollout, gradient rollout, attention-GradCAM.

Each method captures every block's queries, keys and values in one forward on timm's fused kernel
(`attention_capture`), and the gradient methods each block's attention-output gradient in one backward.
The read-out row is then propagated from the last block down with the pure math of `attention_math`,
each block's attention re-formed a chunk of query rows at a time: N² per block in time, and no block's
N×N attention is ever whole in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gradsum.attribution.attention_capture import (
    AttentionMethod,
    Forward,
    block_indices,
    captured_heads,
    heads_top_down,
    pooling_of,
    to_token_grid,
)
from gradsum.attribution.attention_math import (
    HEAD_FUSIONS,
    gradient_rollout_step,
    propagate_row,
    rollout_step,
)
from gradsum.attribution.base import register_method
from gradsum.attribution.options import bool_option, float_option, int_option
from gradsum.attribution.targets import Target
from gradsum.models import num_prefix_tokens


def raw_attention_map(model: nn.Module, images: Tensor, run: Forward | None = None) -> Tensor:
    """The last block's head-mean attention, read out per the model's pooling, on the token grid."""
    last = block_indices(model, -1)
    capture = captured_heads(model, images, last, None, run)
    block, weights = capture.heads[last[0]], capture.weights
    row = propagate_row(weights, lambda rows: block.attention(rows).clamp(min=0).mean(1), block.chunks())
    return to_token_grid(model, row[:, num_prefix_tokens(model) :])


def rollout_map(
    model: nn.Module,
    images: Tensor,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    run: Forward | None = None,
) -> Tensor:
    """Attention rollout: the read-out row propagated from the last block down, on the token grid."""
    protect_first = pooling_of(model) == "token"
    blocks = block_indices(model, start_layer)
    capture = captured_heads(model, images, blocks, None, run)
    row = capture.weights
    for index in reversed(blocks):
        row = rollout_step(row, capture.heads.pop(index), head_fusion, discard_ratio, protect_first)
    return to_token_grid(model, row[:, num_prefix_tokens(model) :])


def gradient_rollout_map(
    model: nn.Module,
    images: Tensor,
    target: Target,
    start_layer: int = 0,
    recompute: bool = False,
    run: Forward | None = None,
) -> Tensor:
    """Chefer ICCV 2021 relevance, the read-out row propagated from the last block down, on the token grid.

    One forward on timm's fused kernel, with a graph from `start_layer`'s block, keeps each block's
    queries, keys and values and one backward gives each block's attention-output gradient G. Then
    wᵀ·R = wᵀ(I + Ā_L)···(I + Ā_start) is formed from the last block down as w ← w + w·Ā, each block's
    Ā = mean_h((∇A ⊙ A)⁺) a chunk of rows at a time with ∇A = G·Vᵀ. The readout is wᵀ(R − I), summed
    from the blocks' increments w·Ā rather than subtracted from wᵀR (see `gradient_rollout_step`): the
    identity is the relevance a token has before any attention, and for average-pooling models its
    diagonal would otherwise add a uniform 1/n to every patch. `recompute` trades one more forward for
    holding one block's graph at a time instead of all (`heads_top_down`).
    """
    blocks = block_indices(model, start_layer)
    weights, top_down = heads_top_down(model, images, target, blocks, recompute, run)
    gain = torch.zeros_like(weights)  # wᵀ(R − I), block by block
    for heads in top_down:
        gain += gradient_rollout_step(weights + gain, heads)
    return to_token_grid(model, gain[:, num_prefix_tokens(model) :])


def attention_gradcam_map(
    model: nn.Module, images: Tensor, target: Target, run: Forward | None = None
) -> Tensor:
    """GradCAM over the heads of the last block's attention (Chefer's baseline), on the token grid."""
    last = block_indices(model, -1)
    capture = captured_heads(model, images, last, target, run)
    block, weights, prefix = capture.heads[last[0]], capture.weights, num_prefix_tokens(model)
    rows = propagate_row(weights, block.attention, block.chunks())[..., prefix:]  # (B, heads, n)
    head_weights = propagate_row(weights, block.attention_grad, block.chunks())[..., prefix:]
    return to_token_grid(model, (head_weights.mean(-1, keepdim=True) * rows).mean(1).clamp(min=0))


# --- registered methods ------------------------------------------------------------------------------


@register_method("attention")
class RawAttention(AttentionMethod):
    """Raw attention of the last block, head mean, read out by the model's pooling."""

    description = "raw attention of the last block, head mean, read out by the model's pooling"

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Class-agnostic: the target does not enter."""
        return raw_attention_map(model, images, run=self.run(model))


@register_method("rollout")
class AttentionRollout(AttentionMethod):
    """Abnar & Zuidema 2020 in Chefer's form: row-normalised (A + I) multiplied over blocks."""

    description = "attention rollout (head_fusion mean/max/min, discard_ratio, start_layer)"
    defaults: ClassVar[Mapping[str, Any]] = {"head_fusion": "mean", "discard_ratio": 0.0, "start_layer": 0}

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Class-agnostic rollout folded during one forward."""
        fusion = str(self.options["head_fusion"])
        HEAD_FUSIONS.get(fusion, "head_fusion")
        ratio = float_option(self.options, "discard_ratio", minimum=0.0, below=1.0)
        start = int_option(self.options, "start_layer")
        return rollout_map(model, images, fusion, ratio, start, run=self.run(model))


@register_method("gradrollout")
class GradientRollout(AttentionMethod):
    """Chefer et al. ICCV 2021: R ← R + mean_h((∇A ⊙ A)⁺)·R from R = I, read out from R − I."""

    description = "gradient-weighted attention rollout (Chefer et al. ICCV 2021; start_layer, recompute)"
    defaults: ClassVar[Mapping[str, Any]] = {"start_layer": 0, "recompute": False}

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Relevance of each patch token for the per-sample target."""
        return gradient_rollout_map(
            model,
            images,
            target,
            int_option(self.options, "start_layer"),
            bool_option(self.options, "recompute"),
            run=self.run(model),
        )


@register_method("attention_gradcam")
class AttentionGradCam(AttentionMethod):
    """Chefer's GradCAM on the last block's attention heads."""

    description = "GradCAM over the heads of the last block's attention (Chefer's baseline)"

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Heads weighted by their mean read-out gradient, clamped at 0."""
        return attention_gradcam_map(model, images, target, run=self.run(model))
