"""Attention math on per-block tensors: rollout, gradient rollout, pooling readouts, attention-GradCAM.

Pure functions over attention tensors (B, heads, N, N) and their gradients, with no hooks and no model,
so each can be checked by hand. `gradsum.attribution.attention_capture` gets the tensors from a timm
model; `gradsum.attribution.methods.attention` registers the methods that combine the two.

Readout (which rows of the token-to-token matrix explain the output) follows the model's pooling: the
rows are mixed with the weights the pooling gives the final tokens. Class-token models
(`global_pool="token"`) read the class-token row; average pooling (`"avg"`) the mean patch row; max
pooling (`"max"`) weights each patch row by the share of channels whose maximum it holds (the pooling's
gradient), and `"avgmax"` takes half of each. Prefix tokens (class and register tokens) are dropped from
the columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gradsum.errors import AttributionError
from gradsum.registry import Registry

#: head fusion for rollout: (B, heads, N, N) → (B, N, N)
HEAD_FUSIONS: Registry[Callable[[Tensor], Tensor]] = Registry("head fusion")
HEAD_FUSIONS.add("mean", lambda a: a.mean(1))
HEAD_FUSIONS.add("max", lambda a: a.amax(1))
HEAD_FUSIONS.add("min", lambda a: a.amin(1))


def class_token_weights(tokens: Tensor, prefix: int) -> Tensor:
    """Token pooling's row weights (B, N): all on the class token."""
    weights = tokens.new_zeros(tokens.shape[:2])
    weights[:, 0] = 1.0
    return weights


def mean_patch_weights(tokens: Tensor, prefix: int) -> Tensor:
    """Average pooling's row weights (B, N): uniform over the patch tokens."""
    weights = tokens.new_zeros(tokens.shape[:2])
    weights[:, prefix:] = 1.0 / (tokens.shape[1] - prefix)
    return weights


def max_patch_weights(tokens: Tensor, prefix: int) -> Tensor:
    """Max pooling's row weights (B, N): each patch token's share of the channels whose maximum it holds."""
    patches = tokens[:, prefix:]
    winners = patches.argmax(1)  # (B, D): the token each channel's maximum comes from
    weights = tokens.new_zeros(tokens.shape[:2])
    weights[:, prefix:].scatter_add_(1, winners, torch.full_like(winners, 1, dtype=tokens.dtype))
    return weights / patches.shape[-1]


def avgmax_weights(tokens: Tensor, prefix: int) -> Tensor:
    """timm's `avgmax` pooling, half average and half max: the mean of their row weights."""
    return 0.5 * (mean_patch_weights(tokens, prefix) + max_patch_weights(tokens, prefix))


#: timm `global_pool` → row weights (B, N) from the tokens it pools (B, N, D) and the prefix count
POOLING_WEIGHTS: Registry[Callable[[Tensor, int], Tensor]] = Registry("global_pool")
POOLING_WEIGHTS.add("token", class_token_weights)
POOLING_WEIGHTS.add("avg", mean_patch_weights)
POOLING_WEIGHTS.add("max", max_patch_weights)
POOLING_WEIGHTS.add("avgmax", avgmax_weights)


def read_out(matrix: Tensor, weights: Tensor, prefix: int) -> Tensor:
    """Rows of (B, [heads,] N, N) mixed by row weights (B, N), over the patch columns: (B, [heads,] n)."""
    shape = (weights.shape[0],) + (1,) * (matrix.ndim - 3) + (weights.shape[1], 1)
    return (weights.reshape(shape).to(matrix.dtype) * matrix).sum(-2)[..., prefix:]


def discard_lowest(fused: Tensor, ratio: float, protect_first: bool) -> Tensor:
    """Zero the `ratio` fraction of smallest entries of each (N, N) map; the [0, 0] entry is kept if asked."""
    flat = fused.flatten(1)
    count = min(int(flat.shape[1] * ratio), flat.shape[1] - int(protect_first))
    if count <= 0:
        return fused
    ranked = flat.clone()
    if protect_first:
        # the class token's attention to itself carries the residual stream; vit-explain never drops it
        ranked[:, 0] = torch.inf
    lowest = ranked.topk(count, dim=1, largest=False).indices
    return flat.scatter(1, lowest, 0.0).view_as(fused)


def residual_attention(fused: Tensor) -> Tensor:
    """(A + I) with rows normalised to sum 1: the residual connection's share of token mixing."""
    eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
    mixed = fused + eye
    return mixed / mixed.sum(-1, keepdim=True)


def rollout_block(attention: Tensor, head_fusion: str, discard_ratio: float, protect_first: bool) -> Tensor:
    """One block's rollout factor (B, N, N) from its attention (B, heads, N, N)."""
    fused = HEAD_FUSIONS.get(head_fusion, "head_fusion")(attention)
    return residual_attention(discard_lowest(fused, discard_ratio, protect_first))


def rollout(
    attentions: Sequence[Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    protect_first: bool = True,
) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020, Chefer's form) of blocks in forward order: (B, N, N)."""
    joint: Tensor | None = None
    for attention in attentions[start_layer:]:
        factor = rollout_block(attention, head_fusion, discard_ratio, protect_first)
        # later blocks multiply on the left
        joint = factor if joint is None else factor @ joint
    if joint is None:
        raise AttributionError(f"start_layer: {start_layer} leaves no block of {len(attentions)}")
    return joint


def relevance_block(attention: Tensor, gradient: Tensor) -> Tensor:
    """Chefer et al. ICCV 2021 rule 5: mean over heads of (∇A ⊙ A)⁺, (B, heads, N, N) → (B, N, N)."""
    return (gradient * attention).clamp(min=0).mean(1)


def relevance_update(relevance: Tensor, block: Tensor) -> Tensor:
    """Chefer et al. ICCV 2021 rule 6: R ← R + Ā·R."""
    return relevance + block @ relevance


def gradient_rollout(
    attentions: Sequence[Tensor], gradients: Sequence[Tensor], start_layer: int = 0
) -> Tensor:
    """Gradient-weighted rollout R (B, N, N) from R = I over blocks in forward order (Chefer ICCV 2021)."""
    if len(attentions) != len(gradients):
        raise AttributionError(f"gradients: {len(gradients)} tensors for {len(attentions)} attention blocks")
    batch, _, tokens, _ = attentions[0].shape
    eye = torch.eye(tokens, dtype=attentions[0].dtype, device=attentions[0].device)
    relevance = eye.expand(batch, tokens, tokens).clone()
    for attention, gradient in zip(attentions[start_layer:], gradients[start_layer:], strict=True):
        relevance = relevance_update(relevance, relevance_block(attention, gradient))
    return relevance


def attention_gradcam_row(attention: Tensor, gradient: Tensor, weights: Tensor, prefix: int) -> Tensor:
    """Chefer's GradCAM on attention: heads weighted by their mean read-out gradient, (B, n_patches) ≥ 0."""
    rows = read_out(attention, weights, prefix)  # (B, heads, n)
    head_weights = read_out(gradient, weights, prefix).mean(-1, keepdim=True)
    return (head_weights * rows).mean(1).clamp(min=0)
