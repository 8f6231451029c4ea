"""The matrix forms the row-propagated attention methods must equal: the tests' oracle.

Every block's softmax attention is captured whole, from a forward with timm's fused attention off, and
its gradient from one backward that keeps the whole graph; blocks are rolled out as full (B, N, N)
products (`attention_math.rollout`, `gradient_rollout`) and read out by the pooling's row weights, and
Chefer's LRP passes each block with its whole attention. This is how GradSUM computed these maps before
the row form (commit 71eebab), kept here so that the faster form is checked against the definition.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gradsum.attribution import resolve_target
from gradsum.attribution.adapters import attribution_mode
from gradsum.attribution.attention_capture import (
    block_indices,
    forward_capturing,
    graph_from_block,
    pooled_tokens,
    readout_weights,
)
from gradsum.attribution.attention_math import gradient_rollout, read_out, rollout
from gradsum.attribution.methods.chefer import (
    BlockTensors,
    capturing_blocks,
    head_relevance,
    linear_relevance,
    product_relevance,
    residual_relevance,
)
from gradsum.attribution.targets import Target
from gradsum.models.outputs import output_values


def capture(
    model: nn.Module, images: Tensor, target: Target | None = None
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Every block's attention and its gradient, from one forward keeping the whole graph, and the
    pooling's row weights."""
    kept: list[Tensor] = []
    handles = [b.attn.attn_drop.register_forward_hook(lambda _m, _i, o: kept.append(o)) for b in model.blocks]
    with attribution_mode(model, needs_attention=True), pooled_tokens(model) as pooled:
        try:
            output = model(images.clone().requires_grad_(True))
        finally:
            for handle in handles:
                handle.remove()
        total = (target or resolve_target(None)).select(output).sum()
        grads = torch.autograd.grad(total, kept)
    return [a.detach() for a in kept], list(grads), readout_weights(model, pooled)


def _grid(model: nn.Module, values: Tensor) -> Tensor:
    rows, cols = model.patch_embed.grid_size
    return values.reshape(values.shape[0], rows, cols)


def matrix_map(
    model: nn.Module, images: Tensor, method: str, target: Target | None = None, **options: Any
) -> Tensor:
    """`method`'s raw map on the token grid by the matrix form."""
    target = target or resolve_target(None)
    if method == "chefer_lrp":
        return chefer_matrix(model, images, target, int(options.get("start_layer", 0)))
    attentions, gradients, weights = capture(model, images, target)
    prefix = model.num_prefix_tokens
    start = block_indices(model, int(options.get("start_layer", 0)))[0]
    eye = torch.eye(attentions[0].shape[-1])
    if method == "rollout":
        matrix = rollout(
            attentions,
            options.get("head_fusion", "mean"),
            options.get("discard_ratio", 0.0),
            start,
            protect_first=prefix > 0,
        )
        return _grid(model, read_out(matrix, weights, prefix))
    if method == "gradrollout":
        # in float64: R − I cancels the identity, which float32 would leave rounded to ~1e-7
        wide = gradient_rollout([a.double() for a in attentions], [g.double() for g in gradients], start)
        return _grid(model, read_out(wide - eye.double(), weights.double(), prefix).float())
    if method == "attention":
        return _grid(model, read_out(attentions[-1].clamp(min=0).mean(1), weights, prefix))
    assert method == "attention_gradcam", method
    rows = read_out(attentions[-1], weights, prefix)
    head_weights = read_out(gradients[-1], weights, prefix).mean(-1, keepdim=True)
    return _grid(model, (head_weights * rows).mean(1).clamp(min=0))


def _weight(block: nn.Module, path: str) -> Tensor:
    return block.get_submodule(path).weight


def attention_relevance(
    block: nn.Module, tensors: BlockTensors, attention: Tensor, relevance: Tensor, below: bool
) -> tuple[Tensor, Tensor | None]:
    """Relevance of a block's whole softmax attention (B, heads, N, N) and, if `below`, of its input."""
    attn: Any = block.get_submodule("attn")
    mlp_skip, mlp_branch = residual_relevance(
        tensors.get("middle"), tensors.get("output") - tensors.get("middle"), relevance
    )
    hidden = linear_relevance(tensors.get("fc2_in"), _weight(block, "mlp.fc2"), mlp_branch)
    mlp_in = linear_relevance(tensors.get("fc1_in"), _weight(block, "mlp.fc1"), hidden)
    attn_skip, attn_branch = residual_relevance(
        tensors.get("inputs"), tensors.get("middle") - tensors.get("inputs"), mlp_skip + mlp_in
    )
    mixed = linear_relevance(tensors.get("proj_in"), _weight(block, "attn.proj"), attn_branch)
    batch, tokens, _ = mixed.shape
    heads = int(attn.num_heads)
    per_head = mixed.reshape(batch, tokens, heads, -1).transpose(1, 2)
    with torch.no_grad():  # the block's own qkv projection of its captured input: its output, exactly
        qkv_out = attn.qkv(tensors.get("qkv_in"))
    qkv = qkv_out.reshape(batch, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    relevance_a, relevance_v = product_relevance(attention, qkv[2], per_head)
    if not below:
        return relevance_a, None
    query = attn.q_norm(qkv[0]) * attn.scale
    keys = attn.k_norm(qkv[1])
    relevance_q, relevance_kt = product_relevance(query, keys.transpose(-1, -2), relevance_a)
    stacked = torch.stack([relevance_q, relevance_kt.transpose(-1, -2), relevance_v])
    flat = stacked.permute(1, 3, 0, 2, 4).reshape(batch, tokens, -1)
    return relevance_a, attn_skip + linear_relevance(tensors.get("qkv_in"), _weight(block, "attn.qkv"), flat)


def chefer_matrix(model: nn.Module, images: Tensor, target: Target, start_layer: int = 0) -> Tensor:
    """Chefer CVPR 2021 by whole attention matrices and the matrix rollout of their Ā."""
    blocks = block_indices(model, start_layer)
    attentions: dict[int, Tensor] = {}
    head_in: list[Tensor] = []
    handle = model.head.register_forward_pre_hook(lambda _m, args: head_in.append(args[0].detach()))
    try:
        with (
            attribution_mode(model, needs_attention=True, freeze_parameters=True),
            graph_from_block(model, blocks[0]),
            pooled_tokens(model) as pooled,
            capturing_blocks(model, blocks) as kept,
        ):
            output = forward_capturing(model, images, blocks, attentions.__setitem__)
            gradients = torch.autograd.grad(target.select(output).sum(), [attentions[i] for i in blocks])
            signs = target.signs(output_values(output))
    finally:
        handle.remove()
    weights = readout_weights(model, pooled)
    relevance: Tensor | None = head_relevance(model, pooled[0], head_in[0], signs)
    relevances: dict[int, Tensor] = {}
    for index in reversed(blocks):
        assert relevance is not None
        relevances[index], relevance = attention_relevance(
            model.blocks[index], kept[index], attentions[index].detach(), relevance, index != blocks[0]
        )
    # in float64, as for gradrollout
    rolled = gradient_rollout([relevances[i].double() for i in blocks], [g.double() for g in gradients])
    eye = torch.eye(rolled.shape[-1], dtype=torch.float64)
    return _grid(model, read_out(rolled - eye, weights.double(), model.num_prefix_tokens).float().detach())
