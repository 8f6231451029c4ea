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
from dataclasses import dataclass, replace
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
    """What a block's forward leaves for the row-propagated methods; none of it is N×N.

    `heads` holds the block's per-head queries (scaled) and keys, detached, and its values when the
    gradient methods ask for them; `mixed` is the attention output A·V with its heads merged (the input
    of `attn.norm`), still in the graph, so the target's gradient w.r.t. it can be taken. With timm's
    fused attention the forward never forms the attention at all.
    """

    heads: HeadTensors | None = None
    mixed: Tensor | None = None

    def get(self, name: str, index: int) -> Any:
        value = getattr(self, name)
        if value is None:
            raise AttributionError(f"model: the forward did not run block {index}'s attention")
        return value


def _split_heads(attn: Any, qkv: Tensor, values: bool) -> HeadTensors:
    """Per-head queries, keys and (if `values`) values from `attn.qkv`'s output, as timm forms them.

    Copies, not views of the (B, N, 3·D) output: rollout keeps two thirds of it per block, not all.
    """
    batch, tokens, _ = qkv.shape
    heads, width = int(attn.num_heads), int(attn.head_dim)
    query, key, value = qkv.detach().reshape(batch, tokens, 3, heads, width).permute(2, 0, 3, 1, 4).unbind(0)
    with torch.no_grad():
        return HeadTensors(
            attn.q_norm(query) * attn.scale,
            attn.k_norm(key).contiguous(),
            value.contiguous() if values else None,
        )


@contextmanager
def capturing_heads(
    model: nn.Module, indices: Sequence[int], values: bool = True
) -> Iterator[dict[int, CapturedBlock]]:
    """Hooks keeping each listed block's `CapturedBlock` during the forwards inside."""
    transformer_blocks(model)
    kept = {index: CapturedBlock() for index in indices}

    def keep_heads(store: CapturedBlock, attn: Any, _module: nn.Module, _args: Any, output: Tensor) -> None:
        store.heads = _split_heads(attn, output, values)

    def keep_mixed(store: CapturedBlock, _module: nn.Module, args: tuple[Any, ...]) -> None:
        store.mixed = args[0]

    handles: list[RemovableHandle] = []
    try:
        for index in indices:
            attn: Any = _attention_module(model, index)
            handles.append(attn.qkv.register_forward_hook(partial(keep_heads, kept[index], attn)))
            handles.append(attn.norm.register_forward_pre_hook(partial(keep_mixed, kept[index])))
        yield kept
    finally:
        for handle in handles:
            handle.remove()


def head_tensors(
    model: nn.Module, index: int, captured: CapturedBlock, output_grad: Tensor | None = None
) -> HeadTensors:
    """Block `index`'s captured heads, with `output_grad` (B, N, D), the gradient w.r.t. `captured.mixed`,
    split into its heads like A·V."""
    heads: HeadTensors = captured.get("heads", index)
    if output_grad is None:
        return heads
    batch, _, tokens, width = heads.query.shape
    grad = output_grad.reshape(batch, tokens, -1, width).transpose(1, 2)
    return replace(heads, output_grad=grad)


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
        kept = stack.enter_context(capturing_heads(model, blocks, values=target is not None))
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


def block_heads(
    model: nn.Module, index: int, tokens: Tensor, gradient: Tensor, to_input: bool
) -> tuple[HeadTensors, Tensor | None]:
    """Re-run block `index` on its input with a graph and backpropagate `gradient` from its output.

    Returns the block's `HeadTensors` with the attention-output gradient and, if `to_input`, the gradient
    w.r.t. its input (the lowest block skips the backward below its attention). The graph is gone when
    this returns; a block output that does not depend on its attention gets G = 0, i.e. no relevance.
    """
    leaf = tokens.detach().requires_grad_(True)
    with torch.enable_grad(), capturing_heads(model, [index]) as kept:
        output = transformer_blocks(model)[index](leaf)
        mixed = kept[index].get("mixed", index)
        wanted = [mixed, leaf] if to_input else [mixed]
        grads = torch.autograd.grad(output, wanted, gradient, allow_unused=True, materialize_grads=True)
    return head_tensors(model, index, kept[index], grads[0]), grads[1] if to_input else None


def heads_top_down(
    model: nn.Module,
    images: Tensor,
    target: Target,
    blocks: Sequence[int],
    recompute: bool,
    run: Forward | None = None,
) -> tuple[Tensor, Iterator[HeadTensors]]:
    """The pooling's row weights and each listed block's heads with their gradient, last block first.

    Without `recompute`, from `captured_heads`: one forward and one backward, the graph of every block
    held until the backward (the time floor, a forward and a backward). With it, the forward keeps only
    each block's input tokens and the head's gradient; then each block is re-run on its input with a
    graph and backpropagated alone (`block_heads`), so one block's graph exists at a time, for one
    more forward's time.
    """
    if not recompute:
        capture = captured_heads(model, images, blocks, target, run)
        return capture.weights, (capture.heads.pop(index) for index in reversed(blocks))
    inputs: dict[int, Tensor] = {}
    with saving_block_inputs(model, blocks, inputs), pooled_tokens(model) as pooled:
        gradient = head_gradient(model, images, target, run)

    def recomputed(gradient: Tensor | None) -> Iterator[HeadTensors]:
        for index in reversed(blocks):
            assert gradient is not None  # only the lowest block passes no gradient down
            heads, gradient = block_heads(
                model, index, inputs.pop(index), gradient, to_input=index != blocks[0]
            )
            yield heads

    return readout_weights(model, pooled), recomputed(gradient)


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
