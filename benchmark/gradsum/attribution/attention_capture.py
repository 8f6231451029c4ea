"""Hook capture and block-wise recompute of attention on timm ViTs and hybrid ViTs.

Attention maps are caught with forward hooks on `blocks[i].attn.attn_drop` (identity in eval mode, so its
output is the softmax attention). Every hook and every temporary flag is set inside a `with` or
`try/finally` and removed on exit. The recompute re-runs one block at a time from its saved input tokens,
so no block's graph outlives that block. The math on the captured tensors lives in
`gradsum.attribution.attention_math`. `AttentionMethod` is the base of every method that reads attention
(`methods/attention.py`, `methods/chefer.py`): fused attention off for the call, no layer, token grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradsum.attribution.attention_math import POOLING_WEIGHTS, relevance_block
from gradsum.attribution.base import Method
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError
from gradsum.models import num_prefix_tokens, token_grid

AttentionCallback = Callable[[int, Tensor], None]
Forward = Callable[[Tensor], Tensor]


def transformer_blocks(model: nn.Module) -> nn.Sequential:
    """The model's `blocks`, or an error naming the model when it has none to read attention from."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not len(blocks):
        raise AttributionError(
            f"model: {type(model).__name__} has no transformer `blocks` to read attention from"
        )
    return blocks


def block_indices(model: nn.Module, start_layer: int) -> range:
    """Forward-order block indices from `start_layer` (negative counts from the end, as in Python)."""
    depth = len(transformer_blocks(model))
    if not -depth <= start_layer < depth:
        raise AttributionError(f"start_layer: {start_layer} is outside the model's {depth} blocks")
    return range(start_layer % depth, depth)


def attention_dropout(model: nn.Module, index: int) -> nn.Module:
    """Block `index`'s `attn.attn_drop`, whose output is the softmax attention in eval mode."""
    path = f"blocks.{index}.attn.attn_drop"
    try:
        return model.get_submodule(path)
    except AttributeError:
        # torch's own message for a missing submodule path; the hook point is what the caller needs to hear
        raise AttributionError(
            f"model: {type(model).__name__} has no {path}; attention methods read timm Attention blocks"
        ) from None


def forward_capturing(
    model: nn.Module,
    images: Tensor,
    blocks: Sequence[int],
    callback: AttentionCallback,
    run: Forward | None = None,
) -> Tensor:
    """Run `run` (default: the model), calling `callback(block, attention)` for each listed block."""
    seen: set[int] = set()

    def hook(index: int, _module: nn.Module, _inputs: Any, output: Tensor) -> None:
        seen.add(index)
        callback(index, output)

    transformer_blocks(model)  # a clear error for a model without blocks, before any hook is set
    handles: list[RemovableHandle] = []
    try:
        for index in blocks:
            dropout = attention_dropout(model, index)
            handles.append(dropout.register_forward_hook(partial(hook, index)))
        output = (run or model)(images)
    finally:
        for handle in handles:
            handle.remove()
    if missing := sorted(set(blocks) - seen):
        # fused attention (scaled_dot_product_attention) never materialises the map nor calls attn_drop
        raise AttributionError(
            f"model: no attention map from blocks {missing}; fused attention must be off (attn.fused_attn)"
        )
    return output


def pooling_of(model: nn.Module) -> str:
    """The model's timm `global_pool`, or an error listing the poolings attention methods can read out."""
    pool = getattr(model, "global_pool", None)
    if pool not in POOLING_WEIGHTS:
        raise AttributionError(
            f"model: global_pool={pool!r}; attention methods read out {', '.join(POOLING_WEIGHTS.names())}"
        )
    return str(pool)


@contextmanager
def pooled_tokens(model: nn.Module) -> Iterator[list[Tensor]]:
    """Yields a list that holds, after the forward inside, the tokens the pooling reads (detached).

    They are the output of timm's `model.norm` (an identity when the norm follows the pooling).
    """
    pooling_of(model)
    norm = getattr(model, "norm", None)
    if not isinstance(norm, nn.Module):
        raise AttributionError(f"model: {type(model).__name__} has no `norm` module before its pooling")
    kept: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
        kept[:] = [output.detach()]

    handle = norm.register_forward_hook(keep)
    try:
        yield kept
    finally:
        handle.remove()


def readout_weights(model: nn.Module, pooled: Sequence[Tensor]) -> Tensor:
    """The pooling's row weights (B, N) from the tokens `pooled_tokens` kept."""
    if not pooled:
        raise AttributionError("model: its forward did not run `norm`, so the pooled tokens are unknown")
    return POOLING_WEIGHTS.get(pooling_of(model))(pooled[0], num_prefix_tokens(model))


def to_token_grid(model: nn.Module, values: Tensor) -> Tensor:
    """Per-patch values (B, n_patches) as a map on the patch grid (B, rows, cols), float32."""
    rows, cols = token_grid(model)
    if values.shape[-1] != rows * cols:
        raise AttributionError(
            f"model: {values.shape[-1]} patch tokens do not fill the {rows}×{cols} token grid"
        )
    return values.reshape(values.shape[0], rows, cols).float()


@contextmanager
def graph_from_block(model: nn.Module, index: int) -> Iterator[None]:
    """Start the autograd graph at block `index`'s input: nothing before it is kept for the backward.

    With frozen parameters and plain images there would be no graph at all; with a CNN tokenizer the
    graph would hold the tokenizer's activations, which the attention gradients never need.
    """

    def restart(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0].detach().requires_grad_(True), *args[1:])

    handle = model.get_submodule(f"blocks.{index}").register_forward_pre_hook(restart)
    try:
        yield
    finally:
        handle.remove()


#: the recompute backpropagates the batch in this many slices, one after another: a block's graph then
#: holds a quarter of the batch, less than the attention scores an inference holds at once; samples do not
#: interact inside a ViT block, so slicing changes no result
RECOMPUTE_SLICES = 4


@contextmanager
def saving_block_inputs(
    model: nn.Module, indices: Sequence[int], inputs: dict[int, Tensor]
) -> Iterator[None]:
    """Save the input tokens of blocks `indices` into `inputs` (detached) during the forwards inside."""
    blocks = transformer_blocks(model)

    def save(index: int, _module: nn.Module, args: tuple[Any, ...]) -> None:
        inputs[index] = args[0].detach()

    handles = [blocks[index].register_forward_pre_hook(partial(save, index)) for index in indices]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def graph_after_blocks(model: nn.Module) -> Iterator[list[Tensor]]:
    """Start the graph at the last block's output, with fused attention in the blocks meanwhile.

    Yields a list that holds, after the forward, that output as the leaf the head's graph starts from.
    With frozen parameters and plain images nothing before it keeps a graph; this forward reads no
    attention map, so the fused kernel gives it the inference's own memory and speed.
    """
    blocks = transformer_blocks(model)
    head_input: list[Tensor] = []

    def restart(_module: nn.Module, _args: Any, output: Tensor) -> Tensor:
        head_input[:] = [output.detach().requires_grad_(True)]
        return head_input[0]

    unfused = [m for m in blocks.modules() if getattr(m, "fused_attn", None) is False]
    handle = blocks[-1].register_forward_hook(restart)
    try:
        for module in unfused:
            setattr(module, "fused_attn", True)  # noqa: B010 - mypy sees Module.__setattr__ types
        yield head_input
    finally:
        for module in unfused:
            setattr(module, "fused_attn", False)  # noqa: B010 - mypy sees Module.__setattr__ types
        handle.remove()


def block_backward(
    model: nn.Module, index: int, tokens: Tensor, gradient: Tensor, to_input: bool
) -> tuple[Tensor, Tensor | None]:
    """Re-run block `index` on its input with a graph and backpropagate `gradient` from its output.

    Returns the block's Ā = mean_h((∇A ⊙ A)⁺) (B, N, N) and, if `to_input`, the gradient w.r.t. its input
    (the lowest block skips the backward below its attention). The graph is gone when this returns; a
    block output that does not depend on its attention gets Ā = 0, i.e. no relevance.
    """
    leaf = tokens.detach().requires_grad_(True)
    kept: list[Tensor] = []
    with torch.enable_grad():
        output = forward_capturing(
            model, leaf, [index], lambda _i, a: kept.append(a), run=transformer_blocks(model)[index]
        )
        wanted = [kept[0], leaf] if to_input else [kept[0]]
        grads = torch.autograd.grad(output, wanted, gradient, allow_unused=True, materialize_grads=True)
    return relevance_block(kept[0].detach(), grads[0]), grads[1] if to_input else None


def backward_in_slices(
    model: nn.Module, index: int, tokens: Tensor, gradient: Tensor, relevance: Tensor, to_input: bool
) -> Tensor | None:
    """`block_backward` over slices of the batch: R ← R·(I + Ā) in place; the gradient below, if asked."""
    size = -(-len(tokens) // RECOMPUTE_SLICES)
    below = torch.empty_like(tokens) if to_input else None
    for start in range(0, len(tokens), size):
        part = slice(start, start + size)
        reduced, to_tokens = block_backward(model, index, tokens[part], gradient[part], to_input)
        relevance[part] += relevance[part] @ reduced
        if below is not None and to_tokens is not None:
            below[part] = to_tokens
    return below


def head_gradient(model: nn.Module, images: Tensor, target: Target, run: Forward | None) -> Tensor:
    """d(target)/d(last block's output) (B, N, D) from a forward that keeps no graph before the head."""
    with torch.enable_grad(), graph_after_blocks(model) as head_input:
        total = target.select((run or model)(images)).sum()
        if not head_input:
            raise AttributionError("model: its forward did not run the last transformer block")
        if total.requires_grad:
            (gradient,) = torch.autograd.grad(total, head_input, allow_unused=True)
            if gradient is not None:
                return gradient
    raise AttributionError("target: the output does not depend on any attention map from start_layer on")


class AttentionMethod(Method):
    """A method that reads the softmax attention of timm blocks (fused attention off for the call)."""

    applies_to: ClassVar[frozenset[str]] = frozenset({"vit", "hybrid"})
    uses_layer: ClassVar[bool] = False
    needs_attention: ClassVar[bool] = True
    # the gradient methods start their graph at a block, so parameters never need gradients
    freeze_parameters: ClassVar[bool] = True
    grid_note: ClassVar[str] = "patch-token grid (patch_embed.grid_size), prefix tokens dropped"

    def run(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """The model's forward returning the explained output tensor."""
        return partial(self.forward, model)
