"""Model adapter: a scoped attribution mode, token-to-grid reshapes, output selection, input checks.

Every temporary edit of the model (eval mode, float32, fused attention off, frozen parameters, hooks)
is made inside `attribution_mode` and undone when it exits, also when the call raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gradsum.errors import AttributionError
from gradsum.models import model_family, num_prefix_tokens, token_grid

#: per-module hook tables that must be as before after a call
HOOK_TABLES = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_state_dict_hooks",
)

OutputKey = Hashable | None


@dataclass
class _Snapshot:
    """What `attribution_mode` changes, recorded before the call."""

    training: dict[nn.Module, bool]
    fused: dict[nn.Module, bool]
    requires_grad: dict[nn.Parameter, bool]
    grads: dict[nn.Parameter, Tensor | None]
    dtypes: dict[Tensor, torch.dtype]
    hooks: dict[tuple[nn.Module, str], set[int]]


def _snapshot(model: nn.Module) -> _Snapshot:
    modules = list(model.modules())
    tensors = [*model.parameters(), *model.buffers()]
    return _Snapshot(
        training={m: m.training for m in modules},
        fused={m: bool(m.fused_attn) for m in modules if isinstance(getattr(m, "fused_attn", None), bool)},
        requires_grad={p: p.requires_grad for p in model.parameters()},
        grads={p: p.grad for p in model.parameters()},
        dtypes={t: t.dtype for t in tensors if t.is_floating_point()},
        hooks={
            (m, table): set(getattr(m, table))
            for m in modules
            for table in HOOK_TABLES
            if isinstance(getattr(m, table, None), dict)
        },
    )


def _restore(snapshot: _Snapshot) -> None:
    for (module, table), keys in snapshot.hooks.items():
        hooks = getattr(module, table)
        for key in [k for k in hooks if k not in keys]:
            del hooks[key]
    for module, flag in snapshot.training.items():
        module.training = flag
    for module, fused in snapshot.fused.items():
        setattr(module, "fused_attn", fused)  # noqa: B010 - mypy sees Module.__setattr__ types
    for param, flag in snapshot.requires_grad.items():
        param.requires_grad_(flag)
    # libraries that call backward() fill parameter gradients; a model being trained keeps its own
    for param, grad in snapshot.grads.items():
        param.grad = grad
    for tensor, dtype in snapshot.dtypes.items():
        if tensor.dtype != dtype:
            tensor.data = tensor.data.to(dtype)


@contextlib.contextmanager
def attribution_mode(
    model: nn.Module, needs_attention: bool = False, freeze_parameters: bool = False
) -> Iterator[nn.Module]:
    """Eval mode, float32, dropout off, gradients on, fused attention off when asked; all undone on exit.

    Half-precision models are cast to float32 in place for the call and cast back after (fp16/bf16 →
    fp32 → fp16/bf16 is exact), so no copy of the weights is made. Hooks that a method forgot are
    removed; parameters are frozen when `freeze_parameters` (the fast path never fills `.grad`).
    """
    snapshot = _snapshot(model)
    try:
        model.eval()
        for tensor in snapshot.dtypes:
            if tensor.dtype != torch.float32:
                tensor.data = tensor.data.float()
        if needs_attention:
            for module in snapshot.fused:
                setattr(module, "fused_attn", False)  # noqa: B010 - mypy sees Module.__setattr__ types
        if freeze_parameters:
            for param in snapshot.requires_grad:
                param.requires_grad_(False)
        with torch.enable_grad():
            yield model
    finally:
        _restore(snapshot)


def prefix_and_grid(model: nn.Module) -> tuple[int, tuple[int, int]]:
    """Number of prefix tokens and the (rows, cols) patch grid of a (hybrid) ViT."""
    return num_prefix_tokens(model), token_grid(model)


def to_grid(tensor: Tensor, model: nn.Module) -> Tensor:
    """A layer's activation or gradient as (B,C,h,w): 4-D passes, tokens (B,N,C) go onto the patch grid.

    Prefix tokens (class, distillation, register) are dropped using the model's own count, and the
    grid may be non-square; the same function serves activations and gradients.
    """
    if tensor.ndim == 4:
        return tensor
    if tensor.ndim != 3:
        raise AttributionError(f"layer: expected a 4-D feature map or 3-D tokens, got {tuple(tensor.shape)}")
    if model_family(model) == "cnn":
        raise AttributionError(f"layer: 3-D output {tuple(tensor.shape)} on a CNN has no spatial grid")
    prefix, (rows, cols) = prefix_and_grid(model)
    patches = tensor[:, prefix:, :]
    if patches.shape[1] != rows * cols:
        raise AttributionError(
            f"layer: {tensor.shape[1]} tokens minus {prefix} prefix tokens do not fill the "
            f"{rows}×{cols} patch grid"
        )
    return patches.reshape(tensor.shape[0], rows, cols, tensor.shape[2]).permute(0, 3, 1, 2)


def select_output(output: Any, key: OutputKey) -> Tensor:
    """The named part of a model output (tuple index or dict key); a plain tensor needs no name."""
    if key is None:
        if isinstance(output, Tensor):
            return output
        raise AttributionError(
            f"output: the model returns a {type(output).__name__}; name the part to explain with output="
        )
    try:
        part = output[key]
    except (KeyError, IndexError, TypeError):
        raise AttributionError(f"output: the model output has no part {key!r}") from None
    if not isinstance(part, Tensor):
        raise AttributionError(f"output: part {key!r} of the model output is not a tensor")
    return part


class OutputSelector(nn.Module):
    """Wraps a model so that it returns one named part of its output (for libraries that need a tensor)."""

    def __init__(self, model: nn.Module, key: OutputKey) -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, images: Tensor) -> Tensor:
        return select_output(self.model(images), self.key)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free model)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def prepare_images(model: nn.Module, images: Tensor) -> Tensor:
    """Check a (B,3,H,W) batch (and a ViT's fixed image size) and move it to the model, as float32."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise AttributionError(f"images: expected a non-empty (B,3,H,W) tensor, got {shape}")
    if not images.is_floating_point():
        raise AttributionError(f"images: expected float images in [0,1], got dtype {images.dtype}")
    embed = getattr(model, "patch_embed", None)
    expected = getattr(embed, "img_size", None)
    strict = getattr(embed, "strict_img_size", False) and not getattr(embed, "dynamic_img_size", False)
    given = (int(images.shape[2]), int(images.shape[3]))
    if model_family(model) != "cnn" and strict and expected is not None and tuple(expected) != given:
        raise AttributionError(
            f"images: this ViT expects H×W = {expected[0]}×{expected[1]}, given {given[0]}×{given[1]}"
        )
    return images.detach().to(device=model_device(model), dtype=torch.float32)
