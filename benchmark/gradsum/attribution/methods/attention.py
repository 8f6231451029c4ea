"""Attention methods for timm ViTs and hybrid ViTs: raw attention, rollout, gradient rollout, attention-GradCAM.

Each method captures per-block attention (`attention_capture`) and reduces it with the pure math of
`attention_math`, one block at a time: rollout folds blocks during the forward; gradient rollout re-runs
one block at a time from its saved input tokens, turns its (A, ∇A) into one (B, N, N) matrix and drops
its graph, so no block's graph or per-head tensor outlives that block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gradsum.attribution.attention_capture import (
    AttentionMethod,
    Forward,
    backward_in_slices,
    block_indices,
    forward_capturing,
    graph_from_block,
    head_gradient,
    pooled_tokens,
    pooling_of,
    readout_weights,
    saving_block_inputs,
    to_token_grid,
)
from gradsum.attribution.attention_math import (
    HEAD_FUSIONS,
    attention_gradcam_row,
    read_out,
    rollout_block,
)
from gradsum.attribution.base import register_method
from gradsum.attribution.options import float_option, int_option
from gradsum.attribution.targets import Target
from gradsum.models import num_prefix_tokens


def raw_attention_map(model: nn.Module, images: Tensor, run: Forward | None = None) -> Tensor:
    """The last block's head-mean attention, read out per the model's pooling, on the token grid."""
    last = block_indices(model, -1)
    kept: dict[int, Tensor] = {}

    def keep(index: int, attention: Tensor) -> None:
        kept[index] = attention.clamp(min=0).mean(1)

    with torch.no_grad(), pooled_tokens(model) as pooled:
        forward_capturing(model, images, last, keep, run=run)
    weights = readout_weights(model, pooled)
    return to_token_grid(model, read_out(kept[last[0]], weights, num_prefix_tokens(model)))


def rollout_map(
    model: nn.Module,
    images: Tensor,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    run: Forward | None = None,
) -> Tensor:
    """Attention rollout folded block by block during the forward, read out on the token grid."""
    protect_first = pooling_of(model) == "token"
    joint: list[Tensor] = []

    def fold(_index: int, attention: Tensor) -> None:
        factor = rollout_block(attention, head_fusion, discard_ratio, protect_first)
        joint[:] = [factor @ joint[0] if joint else factor]

    with torch.no_grad(), pooled_tokens(model) as pooled:
        forward_capturing(model, images, block_indices(model, start_layer), fold, run=run)
    weights = readout_weights(model, pooled)
    return to_token_grid(model, read_out(joint[0], weights, num_prefix_tokens(model)))


def gradient_rollout_map(
    model: nn.Module, images: Tensor, target: Target, start_layer: int = 0, run: Forward | None = None
) -> Tensor:
    """Chefer ICCV 2021 relevance by a block-wise recompute, read out on the token grid.

    A forward without a graph keeps only each block's input (B, N, D); the target's gradient w.r.t. the
    last block's output comes from the head alone. Then, from the last block down, each block is re-run
    on its input with a graph (a slice of the batch at a time), the incoming gradient backpropagated
    through it, its (A, ∇A) reduced to Ā and the gradient w.r.t. its input passed down. The relevance
    R = (I + Ā_L)···(I + Ā_start), the forward-order R ← R + Ā·R from R = I, is multiplied on the right
    as the blocks come, so peak memory is the inference's plus the block inputs, one slice's block graph
    and one (B, N, N) matrix. The readout uses R − I: the identity is the relevance a token has before
    any attention, and for average-pooling models its diagonal would otherwise add a uniform 1/n to
    every patch.
    """
    blocks = block_indices(model, start_layer)
    inputs: dict[int, Tensor] = {}
    with saving_block_inputs(model, blocks, inputs), pooled_tokens(model) as pooled:
        gradient: Tensor | None = head_gradient(model, images, target, run)
    weights = readout_weights(model, pooled)
    batch, tokens = inputs[blocks[0]].shape[:2]
    eye = torch.eye(tokens, dtype=inputs[blocks[0]].dtype, device=inputs[blocks[0]].device)
    relevance = eye.expand(batch, tokens, tokens).clone()
    for index in reversed(blocks):
        assert gradient is not None  # only the lowest block passes no gradient down
        gradient = backward_in_slices(
            model, index, inputs.pop(index), gradient, relevance, to_input=index != blocks[0]
        )
    return to_token_grid(model, read_out(relevance - eye, weights, num_prefix_tokens(model)))


def attention_gradcam_map(
    model: nn.Module, images: Tensor, target: Target, run: Forward | None = None
) -> Tensor:
    """GradCAM over the heads of the last block's attention (Chefer's baseline), on the token grid."""
    last = block_indices(model, -1)
    kept: list[Tensor] = []

    with torch.enable_grad(), graph_from_block(model, last[0]), pooled_tokens(model) as pooled:
        output = forward_capturing(model, images, last, lambda _i, a: kept.append(a), run=run)
        (gradient,) = torch.autograd.grad(target.select(output).sum(), kept)
    weights = readout_weights(model, pooled)
    row = attention_gradcam_row(kept[0].detach(), gradient, weights, num_prefix_tokens(model))
    return to_token_grid(model, row)


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

    description = "gradient-weighted attention rollout (Chefer et al. ICCV 2021; start_layer)"
    defaults: ClassVar[Mapping[str, Any]] = {"start_layer": 0}

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Relevance of each patch token for the per-sample target."""
        return gradient_rollout_map(
            model, images, target, int_option(self.options, "start_layer"), run=self.run(model)
        )


@register_method("attention_gradcam")
class AttentionGradCam(AttentionMethod):
    """Chefer's GradCAM on the last block's attention heads."""

    description = "GradCAM over the heads of the last block's attention (Chefer's baseline)"

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Heads weighted by their mean read-out gradient, clamped at 0."""
        return attention_gradcam_map(model, images, target, run=self.run(model))
