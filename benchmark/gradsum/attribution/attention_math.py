"""Attention math on per-block tensors: rollout, gradient rollout, pooling readouts, attention-GradCAM.

Pure functions over attention tensors and their gradients, with no hooks and no model, so each can be
checked by hand. `gradsum.attribution.attention_capture` gets the tensors from a timm model;
`gradsum.attribution.methods.attention` registers the methods that combine the two.

Two forms of each rollout. The matrix form (`rollout`, `gradient_rollout`) multiplies full (B, N, N)
matrices per block, L·N³ in time: it is the definition and the tests' oracle. Every map GradSUM uses is
one read-out row of that product, wᵀ·F_L···F_s, so the methods propagate the row instead, from the last
block down (`rollout_step`, `gradient_rollout_step`): N² per block. A block's attention is never whole
either: `HeadTensors` re-forms it from the block's queries and keys a chunk of query rows at a time
(`row_chunks`), so at most `CHUNK_ENTRIES` entries of it exist at once.

Readout (which rows of the token-to-token matrix explain the output) follows the model's pooling: the
rows are mixed with the weights the pooling gives the final tokens. Class-token models
(`global_pool="token"`) read the class-token row; average pooling (`"avg"`) the mean patch row; max
pooling (`"max"`) weights each patch row by the share of channels whose maximum it holds (the pooling's
gradient), and `"avgmax"` takes half of each. Prefix tokens (class and register tokens) are dropped from
the columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


# --- the row form: one read-out row through the blocks, the attention a chunk of rows at a time --------

#: at most this many attention entries (batch × heads × query rows × keys) are formed at once: 4 MiB in
#: float32, a quarter of one block's N×N attention at 1,153 tokens (3 heads) and 1/192 of it at 8,193
CHUNK_ENTRIES = 2**20


def row_chunks(batch: int, heads: int, tokens: int) -> list[slice]:
    """Slices of query rows whose (batch, heads, rows, tokens) attention holds at most `CHUNK_ENTRIES`."""
    size = max(1, CHUNK_ENTRIES // (batch * heads * tokens))
    return [slice(start, min(start + size, tokens)) for start in range(0, tokens, size)]


@dataclass(frozen=True)
class HeadTensors:
    """One block's per-head queries (already scaled), keys and values (B, heads, N, d); rollout needs no values.

    `output_grad` is the explained output's gradient w.r.t. the attention output A·V (B, heads, N, d),
    for the gradient methods: A·V's backward gives ∇A = G·Vᵀ, so ∇A is re-formed like A, by rows.
    """

    query: Tensor
    key: Tensor
    value: Tensor | None = None
    output_grad: Tensor | None = None

    def chunks(self) -> list[slice]:
        """The query-row chunks this block's attention is formed in."""
        batch, heads, tokens, _ = self.query.shape
        return row_chunks(batch, heads, tokens)

    def scores(self, rows: slice) -> Tensor:
        """Attention logits q·kᵀ of query rows `rows` (B, heads, rows, N), as timm's unfused path forms them."""
        return self.query[:, :, rows] @ self.key.transpose(-1, -2)

    def attention(self, rows: slice) -> Tensor:
        """Softmax attention of query rows `rows`: (B, heads, rows, N)."""
        return self.scores(rows).softmax(-1)

    def attention_grad(self, rows: slice) -> Tensor:
        """∇A of query rows `rows`: G·Vᵀ (B, heads, rows, N)."""
        if self.output_grad is None or self.value is None:
            raise AttributionError("model: no gradient of the attention output was captured for this block")
        return self.output_grad[:, :, rows] @ self.value.transpose(-1, -2)


def propagate_row(row: Tensor, matrix_rows: Callable[[slice], Tensor], chunks: Sequence[slice]) -> Tensor:
    """row·M for M (B, [heads,] N, N) given a chunk of rows at a time: Σ_c row[:, c]·M[c, :], (B, [heads,] N)."""
    result: Tensor | None = None
    for rows in chunks:
        block = matrix_rows(rows)
        weights = row[:, rows].reshape(row.shape[0], *(1,) * (block.ndim - 3), 1, -1)
        part = (weights.to(block.dtype) @ block)[..., 0, :].to(row.dtype)
        result = part if result is None else result + part
    if result is None:
        raise AttributionError("model: a block with no tokens has no attention rows")
    return result


def rollout_factor_rows(heads: HeadTensors, rows: slice, head_fusion: str) -> Tensor:
    """Rows `rows` of the rollout factor row-normalise(fuse(A) + I), (B, rows, N), without discarding."""
    fused = HEAD_FUSIONS.get(head_fusion, "head_fusion")(heads.attention(rows))
    # the identity's entries in these rows: (i, i) for i in rows, the chunk's diagonal shifted by its start
    fused.diagonal(offset=rows.start, dim1=1, dim2=2).add_(1.0)
    return fused / fused.sum(-1, keepdim=True)


def rollout_step(
    row: Tensor, heads: HeadTensors, head_fusion: str, discard_ratio: float, protect_first: bool
) -> Tensor:
    """row·F for one block's rollout factor F (`rollout_block`), (B, N) → (B, N).

    Discarding ranks the entries of the whole fused map, so with `discard_ratio` > 0 the block's
    head-fused (B, N, N) map is formed once; without it, a chunk of rows at a time.
    """
    if discard_ratio > 0:
        factor = rollout_block(heads.attention(slice(None)), head_fusion, discard_ratio, protect_first)
        return (row[:, None] @ factor.to(row.dtype))[:, 0]
    if head_fusion == "mean":
        # softmax rows sum to 1, so every row of mean_h(A) + I sums to 2 and F = (mean_h(A) + I) / 2:
        # row·F = (row + mean_h(row·A_h)) / 2, with no fused, shifted or divided copy of the attention
        return 0.5 * (row + propagate_row(row, heads.attention, heads.chunks()).mean(1))
    return propagate_row(row, lambda rows: rollout_factor_rows(heads, rows, head_fusion), heads.chunks())


def gradient_rollout_step(row: Tensor, heads: HeadTensors) -> Tensor:
    """row·Ā for one block's Ā = mean_h((∇A ⊙ A)⁺) (Chefer ICCV 2021 rule 5), (B, N).

    Rule 6, R ← R + Ā·R, makes the row after the block row + row·Ā; callers add the increments apart
    from the read-out weights, so the readout wᵀ(R − I) never subtracts the weights from a sum that
    holds them (which would leave float32 rounding of order 1e-7 in maps that can be smaller).
    """

    def reduced(rows: slice) -> Tensor:
        # `relevance_block` in place: two fewer (B, heads, rows, N) buffers per chunk
        return heads.attention_grad(rows).mul_(heads.attention(rows)).clamp_(min=0).mean(1)

    return propagate_row(row, reduced, heads.chunks())
