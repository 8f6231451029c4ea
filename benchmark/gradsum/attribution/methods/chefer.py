"""Chefer et al. CVPR 2021, "Transformer Interpretability Beyond Attention Visualization", on timm ViTs.

LRP relevance is propagated from the explained output down through the head and the blocks with the
paper's rules (hila-chefer/Transformer-Explainability, `modules/layers_ours.py`): Linear layers by
LRP-αβ with α=1, β=0 (only positive contributions, bias ignored); LayerNorm, GELU, softmax, dropout and
LayerScale pass relevance unchanged; a residual sum splits it by gradient×input, rescaled so each branch
keeps its share |Σa|/(|Σa|+|Σb|) of the total; both matrix products of the attention split it by
gradient×input between their operands and halve each part. With the attention gradients ∇A of the
target, each block's softmax-attention relevance R_A gives Ā = mean_h((∇A ⊙ R_A)⁺) and the blocks are
rolled out as R ← R + Ā·R from R = I (the ICCV aggregation, `attention_math.gradient_rollout`), read out
from R − I by the model's pooling like `gradrollout`. As there, only the read-out row wᵀ(R − I) is
formed, from the last block down, and R_A a chunk of query rows at a time.

Relevance starts at 1 per sample (the paper's one-hot), so the map does not scale with the output; the
per-sample target sign enters through the head's weights (explaining −y is explaining the head −W).
The paper's code is batch-1; here every sum of the residual rule is per sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from gradsum.attribution.attention_capture import (
    AttentionMethod,
    Forward,
    block_indices,
    captured_heads,
    to_token_grid,
    transformer_blocks,
)
from gradsum.attribution.attention_math import HeadTensors, relevance_block
from gradsum.attribution.base import LRP_ON_INT8, register_method
from gradsum.attribution.options import int_option
from gradsum.attribution.precision import LRP_DENOMINATORS
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError
from gradsum.models import num_prefix_tokens
from gradsum.models.outputs import output_values

# --- the paper's rules as pure functions -------------------------------------------------------------


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Chefer's `safe_divide`: a / (b ± 1e-9), and 0 where b is 0 (no relevance through a zero output)."""
    den = denominator.clamp(min=1e-9) + denominator.clamp(max=1e-9)
    den = den + den.eq(0).to(den.dtype) * 1e-9
    return numerator / den * denominator.ne(0).to(denominator.dtype)


def linear_relevance(inputs: Tensor, weight: Tensor, relevance: Tensor) -> Tensor:
    """LRP-α1β0 through y = x·Wᵀ (bias ignored): each output's relevance goes to its positive contributions.

    `inputs` (..., in), `weight` (out, in) or batched (B, out, in) against inputs (B, 1, in),
    `relevance` (..., out) → (..., in). Positive contributions are x⁺w⁺ and x⁻w⁻.
    """
    pos_x, neg_x = inputs.clamp(min=0), inputs.clamp(max=0)
    pos_w, neg_w = weight.clamp(min=0), weight.clamp(max=0)
    positive = pos_x @ pos_w.transpose(-1, -2) + neg_x @ neg_w.transpose(-1, -2)
    scaled = safe_divide(relevance, positive)
    return pos_x * (scaled @ pos_w) + neg_x * (scaled @ neg_w)


def _per_sample_sum(tensor: Tensor) -> Tensor:
    return tensor.sum(dim=tuple(range(1, tensor.ndim)), keepdim=True)


def residual_relevance(skip: Tensor, branch: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """Chefer's `Add.relprop` per sample: gradient×input, each part rescaled to its |share| of the total."""
    scaled = safe_divide(relevance, skip + branch)
    parts = skip * scaled, branch * scaled
    sums = [_per_sample_sum(part) for part in parts]
    both = sums[0].abs() + sums[1].abs()
    total = _per_sample_sum(relevance)
    rescaled = [
        part * safe_divide(safe_divide(share.abs(), both) * total, share)
        for part, share in zip(parts, sums, strict=True)
    ]
    return rescaled[0], rescaled[1]


def product_relevance(left: Tensor, right: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """Relevance of `left @ right` split by gradient×input between both operands, each part halved."""
    scaled = safe_divide(relevance, left @ right)
    return left * (scaled @ right.transpose(-1, -2)) / 2, right * (left.transpose(-1, -2) @ scaled) / 2


# --- one block's captured tensors and its relevance propagation --------------------------------------


@dataclass
class BlockTensors:
    """What a block's forward leaves for its relevance propagation, detached; none of it is N×N."""

    inputs: Tensor | None = None
    qkv_in: Tensor | None = None
    proj_in: Tensor | None = None
    middle: Tensor | None = None
    fc1_in: Tensor | None = None
    fc2_in: Tensor | None = None
    output: Tensor | None = None

    def get(self, name: str) -> Tensor:
        value = getattr(self, name)
        if value is None:
            raise AttributionError(f"model: the block's forward did not run the module giving {name}")
        assert isinstance(value, Tensor)
        return value


#: module of a timm `Block` → (tensor kept, taken from the module's input or output)
CAPTURES = {
    "": ("inputs", "input"),
    "attn.qkv": ("qkv_in", "input"),
    "attn.proj": ("proj_in", "input"),
    "norm2": ("middle", "input"),
    "mlp.fc1": ("fc1_in", "input"),
    "mlp.fc2": ("fc2_in", "input"),
}
OUTPUT_CAPTURES = {"": "output"}


def _check_block(block: nn.Module, index: int) -> None:
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    linears = [getattr(attn, "qkv", None), getattr(attn, "proj", None)]
    linears += [getattr(mlp, "fc1", None), getattr(mlp, "fc2", None)]
    if not all(isinstance(layer, nn.Linear) for layer in linears):
        raise AttributionError(
            f"model: block {index} is not a timm Block with attn.qkv/proj and mlp.fc1/fc2 Linear layers; "
            "chefer_lrp has rules only for those"
        )
    if getattr(attn, "gate", None) is not None:
        raise AttributionError(
            f"model: block {index} has a gated attention, which chefer_lrp has no rule for"
        )


@contextmanager
def capturing_blocks(model: nn.Module, indices: Sequence[int]) -> Iterator[dict[int, BlockTensors]]:
    """Forward hooks keeping each listed block's tensors."""
    blocks = transformer_blocks(model)
    kept = {index: BlockTensors() for index in indices}

    def keep_input(store: BlockTensors, name: str, _module: nn.Module, args: tuple[Any, ...]) -> None:
        setattr(store, name, args[0].detach())

    def keep_output(store: BlockTensors, name: str, _module: nn.Module, _args: Any, output: Tensor) -> None:
        setattr(store, name, output.detach())

    with ExitStack() as stack:
        for index in indices:
            block = blocks[index]
            _check_block(block, index)
            for path, (name, _) in CAPTURES.items():
                module = block.get_submodule(path)
                handle = module.register_forward_pre_hook(partial(keep_input, kept[index], name))
                stack.callback(handle.remove)
            for path, name in OUTPUT_CAPTURES.items():
                handle = block.get_submodule(path).register_forward_hook(
                    partial(keep_output, kept[index], name)
                )
                stack.callback(handle.remove)
        yield kept


def _weight(block: nn.Module, path: str) -> Tensor:
    layer = block.get_submodule(path)
    assert isinstance(layer, nn.Linear)  # checked by `capturing_blocks`
    return layer.weight


def _attention_heads(
    heads: HeadTensors, relevance: Tensor, row: Tensor, below: bool
) -> tuple[Tensor, Tensor | None]:
    """row·Ā for Ā = mean_h((∇A ⊙ R_A)⁺), and the relevance of q, k and v if `below`.

    `relevance` (B, heads, N, d) is that of the attention output A·V. R_A and the relevance of q·kᵀ
    are formed a chunk of query rows at a time, like A itself: both products split relevance by
    gradient×input (`product_relevance`), and every factor of a row of A·V or of q·kᵀ lies in that row.
    """
    if heads.value is None:
        raise AttributionError("model: chefer_lrp needs each block's values; they were not captured")
    value_t, key_t = heads.value.transpose(-1, -2), heads.key.transpose(-1, -2)
    increment = torch.zeros_like(row)
    to_value = torch.zeros_like(heads.value)
    to_query = torch.zeros_like(heads.query)
    to_key_t = torch.zeros_like(key_t)
    for rows in heads.chunks():
        scores = heads.scores(rows)
        attention = scores.softmax(-1)
        scaled = safe_divide(relevance[:, :, rows], attention @ heads.value)
        to_attention = attention * (scaled @ value_t) / 2
        to_value += attention.transpose(-1, -2) @ scaled
        increment += (row[:, None, rows] @ relevance_block(to_attention, heads.attention_grad(rows)))[:, 0]
        if below:
            # the softmax passes relevance unchanged: R_A is the relevance of the scores q·kᵀ
            query = heads.query[:, :, rows]
            per_score = safe_divide(to_attention, scores)
            to_query[:, :, rows] = query * (per_score @ heads.key) / 2
            to_key_t += query.transpose(-1, -2) @ per_score
    if not below:
        return increment, None
    stacked = torch.stack([to_query, (key_t * to_key_t / 2).transpose(-1, -2), heads.value * to_value / 2])
    return increment, stacked


def block_relevance(
    block: nn.Module, tensors: BlockTensors, heads: HeadTensors, relevance: Tensor, row: Tensor, below: bool
) -> tuple[Tensor, Tensor | None]:
    """One block, top down: the read-out row's increment row·Ā and, if `below`, its input's relevance.

    `relevance` (B, N, D) is that of the block's output tokens. The scale and the q/k norms are
    elementwise, so relevance passes them unchanged.
    """
    mlp_skip, mlp_branch = residual_relevance(
        tensors.get("middle"), tensors.get("output") - tensors.get("middle"), relevance
    )
    hidden = linear_relevance(tensors.get("fc2_in"), _weight(block, "mlp.fc2"), mlp_branch)
    mlp_in = linear_relevance(tensors.get("fc1_in"), _weight(block, "mlp.fc1"), hidden)
    middle = mlp_skip + mlp_in
    attn_skip, attn_branch = residual_relevance(
        tensors.get("inputs"), tensors.get("middle") - tensors.get("inputs"), middle
    )
    mixed = linear_relevance(tensors.get("proj_in"), _weight(block, "attn.proj"), attn_branch)
    batch, tokens, _ = mixed.shape
    per_head = mixed.reshape(batch, tokens, heads.query.shape[1], -1).transpose(1, 2)
    increment, stacked = _attention_heads(heads, per_head, row, below)
    if stacked is None:
        return increment, None
    flat = stacked.permute(1, 3, 0, 2, 4).reshape(batch, tokens, -1)
    below_relevance = attn_skip + linear_relevance(tensors.get("qkv_in"), _weight(block, "attn.qkv"), flat)
    return increment, below_relevance


# --- the head ----------------------------------------------------------------------------------------


def head_relevance(model: nn.Module, tokens: Tensor, pooled: Tensor, signs: Tensor) -> Tensor:
    """Relevance (B, N, D) of the tokens the pooling reads, from relevance 1 at the signed output."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or head.out_features != 1:
        raise AttributionError("model: chefer_lrp needs a one-output nn.Linear `head`")
    weight = signs.reshape(-1, 1, 1).to(head.weight.dtype) * head.weight  # (B, 1, D)
    start = torch.ones(len(signs), 1, 1, dtype=pooled.dtype, device=pooled.device)
    at_pooled = linear_relevance(pooled[:, None], weight, start)[:, 0]  # fc_norm, head_drop: identity
    # the pooling (class token, mean, max) is split by gradient×input, as Chefer's IndexSelect
    leaf = tokens.detach().requires_grad_(True)
    with torch.enable_grad():
        pool: Any = getattr(model, "pool")  # noqa: B009 - timm's pooling method, not a submodule
        out = pool(leaf)
        (grad,) = torch.autograd.grad(out, leaf, safe_divide(at_pooled, out.detach()))
    return leaf.detach() * grad


def _head_input_keeper(model: nn.Module, kept: list[Tensor]) -> Any:
    def keep(_module: nn.Module, args: tuple[Any, ...]) -> None:
        kept[:] = [args[0].detach()]

    return model.get_submodule("head").register_forward_pre_hook(keep)


def chefer_lrp_map(
    model: nn.Module, images: Tensor, target: Target, start_layer: int = 0, run: Forward | None = None
) -> Tensor:
    """Chefer CVPR 2021 relevance of each patch token, read out by the model's pooling on the token grid.

    One forward on timm's fused kernel keeps each block's tokens, queries, keys and values, and one
    backward each block's attention-output gradient. Relevance then goes from the head down, block by
    block, and with it the read-out row w ← w + w·Ā, so the rollout of the blocks' Ā is never a matrix.
    """
    blocks = block_indices(model, start_layer)
    head_in: list[Tensor] = []
    handle = _head_input_keeper(model, head_in)
    try:
        with capturing_blocks(model, blocks) as kept:
            capture = captured_heads(model, images, blocks, target, run)
    finally:
        handle.remove()
    if not head_in:
        raise AttributionError("model: its forward did not run `head`")
    signs = target.signs(output_values(capture.output))
    relevance: Tensor | None = head_relevance(model, capture.tokens, head_in[0], signs)
    gain = torch.zeros_like(capture.weights)  # wᵀ(R − I), block by block
    for index in reversed(blocks):
        assert relevance is not None  # only the lowest block passes no relevance down
        increment, relevance = block_relevance(
            transformer_blocks(model)[index],
            kept[index],
            capture.heads.pop(index),
            relevance,
            capture.weights + gain,
            below=index != blocks[0],
        )
        gain += increment
    return to_token_grid(model, gain[:, num_prefix_tokens(model) :])


@register_method("chefer_lrp")
class CheferLRP(AttentionMethod):
    """Chefer et al. CVPR 2021: LRP relevance of the attention, weighted by its gradient, rolled out."""

    description = (
        "LRP through the blocks × attention gradients, rolled out (Chefer et al. CVPR 2021; start_layer)"
    )
    defaults: ClassVar[Mapping[str, Any]] = {"start_layer": 0}
    half_precision_refusal: ClassVar[str | None] = LRP_DENOMINATORS
    int8_refusal: ClassVar[str | None] = LRP_ON_INT8

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Relevance of each patch token for the per-sample target."""
        return chefer_lrp_map(
            model, images, target, int_option(self.options, "start_layer"), run=self.run(model)
        )
