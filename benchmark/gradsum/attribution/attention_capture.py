"""Hook capture of attention on timm ViTs and hybrid ViTs.

The attribution methods capture each block's `attn.qkv` output and its attention output A·V
(`captured_heads`): neither is N×N, so the forward may run on timm's fused kernel, and the attention is
re-formed later a chunk of query rows at a time (`attention_math.HeadTensors`). The diagnostics and
fine-tuning, which need every head's whole attention, catch it with forward hooks on
`blocks[i].attn.attn_drop` (`forward_capturing`; identity in eval mode, so its output is the softmax
attention; fused attention must be off). Every hook and every temporary flag is set inside a `with` or
`try/finally` and removed on exit. `AttentionMethod` is the base of every method that reads attention
(`methods/attention.py`, `methods/chefer.py`): no layer, the token grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradsum.attribution.attention_math import POOLING_WEIGHTS, HeadTensors
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


def _attention_module(model: nn.Module, index: int) -> nn.Module:
    """Block `index`'s timm `Attention`, checked to have what `head_tensors` re-forms the heads from."""
    attn = model.get_submodule(f"blocks.{index}.attn")
    needed = ("qkv", "q_norm", "k_norm", "norm", "num_heads", "head_dim", "scale")
    if missing := [name for name in needed if not hasattr(attn, name)]:
        raise AttributionError(
            f"model: blocks.{index}.attn ({type(attn).__name__}) has no {', '.join(missing)}; "
            "attention methods read timm Attention blocks"
        )
    return attn


@dataclass
class CapturedBlock:
    """What a block's forward leaves for the row-propagated methods.

    `qkv` is the output of `attn.qkv` (B, N, 3·D), detached; `mixed` the attention output A·V with its
    heads merged (the input of `attn.norm`), still in the graph, so the target's gradient w.r.t. it can
    be taken. Neither is N×N: with timm's fused attention the forward never forms the attention at all.
    """

    qkv: Tensor | None = None
    mixed: Tensor | None = None

    def get(self, name: str, index: int) -> Tensor:
        value = getattr(self, name)
        if value is None:
            raise AttributionError(f"model: the forward did not run block {index}'s attention")
        assert isinstance(value, Tensor)
        return value


@contextmanager
def capturing_heads(model: nn.Module, indices: Sequence[int]) -> Iterator[dict[int, CapturedBlock]]:
    """Hooks keeping each listed block's `CapturedBlock` during the forwards inside."""
    transformer_blocks(model)
    kept = {index: CapturedBlock() for index in indices}

    def keep_qkv(store: CapturedBlock, _module: nn.Module, _args: Any, output: Tensor) -> None:
        store.qkv = output.detach()

    def keep_mixed(store: CapturedBlock, _module: nn.Module, args: tuple[Any, ...]) -> None:
        store.mixed = args[0]

    handles: list[RemovableHandle] = []
    try:
        for index in indices:
            attn: Any = _attention_module(model, index)
            handles.append(attn.qkv.register_forward_hook(partial(keep_qkv, kept[index])))
            handles.append(attn.norm.register_forward_pre_hook(partial(keep_mixed, kept[index])))
        yield kept
    finally:
        for handle in handles:
            handle.remove()


def head_tensors(
    model: nn.Module, index: int, captured: CapturedBlock, output_grad: Tensor | None = None
) -> HeadTensors:
    """Block `index`'s per-head queries, keys and values as timm's `Attention.forward` forms them.

    `output_grad` (B, N, D), the gradient w.r.t. `captured.mixed`, is split into its heads like A·V.
    """
    attn: Any = _attention_module(model, index)
    qkv = captured.get("qkv", index)
    batch, tokens, _ = qkv.shape
    heads, width = int(attn.num_heads), int(attn.head_dim)
    query, key, value = qkv.reshape(batch, tokens, 3, heads, width).permute(2, 0, 3, 1, 4).unbind(0)
    with torch.no_grad():
        query, key = attn.q_norm(query) * attn.scale, attn.k_norm(key)
    grad = None
    if output_grad is not None:
        grad = output_grad.reshape(batch, tokens, heads, width).transpose(1, 2)
    return HeadTensors(query, key, value, grad)


@dataclass(frozen=True)
class HeadCapture:
    """One forward's per-block heads, the tokens the pooling read, its row weights and the output."""

    heads: dict[int, HeadTensors]
    tokens: Tensor
    weights: Tensor
    output: Tensor


def captured_heads(
    model: nn.Module,
    images: Tensor,
    blocks: Sequence[int],
    target: Target | None,
    run: Forward | None = None,
) -> HeadCapture:
    """Every listed block's `HeadTensors` from one forward, with what the pooling read and the output.

    With a `target`, the graph starts at the lowest listed block's input and one backward gives each
    block's attention-output gradient; without one, the forward keeps no graph. Attention stays on
    timm's fused kernel either way: the attention is re-formed later, a chunk of rows at a time.
    """
    with ExitStack() as stack:
        pooled = stack.enter_context(pooled_tokens(model))
        kept = stack.enter_context(capturing_heads(model, blocks))
        if target is None:
            stack.enter_context(torch.no_grad())
        else:
            stack.enter_context(torch.enable_grad())
            stack.enter_context(graph_from_block(model, blocks[0]))
        output = (run or model)(images)
    grads: Sequence[Tensor | None] = [None] * len(blocks)
    if target is not None:
        total = target.select(output).sum()
        if not total.requires_grad:
            raise AttributionError("target: the output does not depend on any attention from start_layer on")
        mixed = [kept[index].get("mixed", index) for index in blocks]
        grads = torch.autograd.grad(total, mixed, allow_unused=True, materialize_grads=True)
    heads = {
        index: head_tensors(model, index, kept[index], grad)
        for index, grad in zip(blocks, grads, strict=True)
    }
    weights = readout_weights(model, pooled)
    return HeadCapture(heads, pooled[0], weights, output.detach())


class AttentionMethod(Method):
    """A method that reads the softmax attention of timm blocks (fused attention off for the call)."""

    applies_to: ClassVar[frozenset[str]] = frozenset({"vit", "hybrid"})
    uses_layer: ClassVar[bool] = False
    # the attention is re-formed from the captured queries and keys, so timm's fused kernel may stay on
    needs_attention: ClassVar[bool] = False
    # the gradient methods start their graph at a block, so parameters never need gradients
    freeze_parameters: ClassVar[bool] = True
    grid_note: ClassVar[str] = "patch-token grid (patch_embed.grid_size), prefix tokens dropped"

    def run(self, model: nn.Module) -> Callable[[Tensor], Tensor]:
        """The model's forward returning the explained output tensor."""
        return partial(self.forward, model)
