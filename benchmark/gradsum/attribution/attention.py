"""Attention methods for timm ViTs and hybrid ViTs: raw attention, rollout, gradient rollout, attention-GradCAM.

The math is written as pure functions over per-block attention tensors (B, heads, N, N) so it can be
checked by hand; the methods capture those tensors with forward hooks on `blocks[i].attn.attn_drop`
(identity in eval mode, so its output is the softmax attention) and reduce each block right away:
rollout folds blocks during the forward; gradient rollout re-runs one block at a time from its saved
input tokens, turns its (A, ∇A) into one (B, N, N) matrix and drops its graph, so no block's graph or
per-head tensor outlives that block.

Readout (which rows of the token-to-token matrix explain the output) follows the model's pooling: the
rows are mixed with the weights the pooling gives the final tokens. Class-token models
(`global_pool="token"`) read the class-token row; average pooling (`"avg"`) the mean patch row; max
pooling (`"max"`) weights each patch row by the share of channels whose maximum it holds (the pooling's
gradient), and `"avgmax"` takes half of each. Prefix tokens (class and register tokens) are dropped from
the columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradsum.attribution.base import Method, register_method
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError
from gradsum.models import num_prefix_tokens, token_grid
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


# --- capture on a timm model -------------------------------------------------------------------------

AttentionCallback = Callable[[int, Tensor], None]
Forward = Callable[[Tensor], Tensor]


def _blocks(model: nn.Module) -> nn.Sequential:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not len(blocks):
        raise AttributionError(
            f"model: {type(model).__name__} has no transformer `blocks` to read attention from"
        )
    return blocks


def block_indices(model: nn.Module, start_layer: int) -> range:
    """Forward-order block indices from `start_layer` (negative counts from the end, as in Python)."""
    depth = len(_blocks(model))
    if not -depth <= start_layer < depth:
        raise AttributionError(f"start_layer: {start_layer} is outside the model's {depth} blocks")
    return range(start_layer % depth, depth)


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

    _blocks(model)  # a clear error for a model without blocks, before any hook is set
    handles: list[RemovableHandle] = []
    try:
        for index in blocks:
            dropout = model.get_submodule(f"blocks.{index}.attn.attn_drop")
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


#: the recompute backpropagates the batch in this many slices, one after another: a block's graph then
#: holds a quarter of the batch, less than the attention scores an inference holds at once; samples do not
#: interact inside a ViT block, so slicing changes no result
RECOMPUTE_SLICES = 4


@contextmanager
def saving_block_inputs(
    model: nn.Module, indices: Sequence[int], inputs: dict[int, Tensor]
) -> Iterator[None]:
    """Save the input tokens of blocks `indices` into `inputs` (detached) during the forwards inside."""
    blocks = _blocks(model)

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
    blocks = _blocks(model)
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
            model, leaf, [index], lambda _i, a: kept.append(a), run=_blocks(model)[index]
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


def start_layer_option(options: Mapping[str, Any]) -> int:
    """The `start_layer` option as an int, or an error naming it."""
    value = options["start_layer"]
    if not isinstance(value, int) or isinstance(value, bool):
        raise AttributionError(f"options: start_layer must be an integer block index, got {value!r}")
    return value


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
        ratio = float(self.options["discard_ratio"])
        if not 0.0 <= ratio < 1.0:
            raise AttributionError(f"options: discard_ratio must be in [0, 1), got {ratio}")
        start = start_layer_option(self.options)
        return rollout_map(model, images, fusion, ratio, start, run=self.run(model))


@register_method("gradrollout")
class GradientRollout(AttentionMethod):
    """Chefer et al. ICCV 2021: R ← R + mean_h((∇A ⊙ A)⁺)·R from R = I, read out from R − I."""

    description = "gradient-weighted attention rollout (Chefer et al. ICCV 2021; start_layer)"
    defaults: ClassVar[Mapping[str, Any]] = {"start_layer": 0}

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Relevance of each patch token for the per-sample target."""
        return gradient_rollout_map(
            model, images, target, start_layer_option(self.options), run=self.run(model)
        )


@register_method("attention_gradcam")
class AttentionGradCam(AttentionMethod):
    """Chefer's GradCAM on the last block's attention heads."""

    description = "GradCAM over the heads of the last block's attention (Chefer's baseline)"

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Heads weighted by their mean read-out gradient, clamped at 0."""
        return attention_gradcam_map(model, images, target, run=self.run(model))
