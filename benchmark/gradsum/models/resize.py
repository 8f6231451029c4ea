"""A model folder rebuilt for another input size, so frames can be attributed at their own resolution.

A spec fixes a model's input size (`img_size`) and `model_input` resizes every frame to it: a ViT made
at 192×384 sees a 1024×2048 Cityscapes frame shrunk to 192×384. `resize_model` writes a new model folder
whose spec asks for another size. A ViT's weights do not depend on its token count except its learned
position embedding, which is resampled from the old token grid to the new one (bicubic, antialiased:
what timm does for pretrained weights; timm's own filter assumes a square grid, so the old grid is
passed explicitly here). Every other parameter keeps its shape and its values; a model with another
size-dependent parameter (PilotNet's head reads a flattened feature map) is refused, naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from gradsum.errors import CheckpointError, SpecError
from gradsum.fileio import sha256_file
from gradsum.models.checkpoints import ModelCard, load_model, module_for, save_model, weights_file
from gradsum.models.specs import ModelSpec

#: The one parameter whose shape follows the token grid, and how it is resampled.
POSITION_EMBEDDING = "pos_embed"
INTERPOLATION = "bicubic"
ANTIALIAS = True
#: how the card's `resized` record names that resampling
RESAMPLING = f"{INTERPOLATION}{', antialias' if ANTIALIAS else ''}"


def _grid(module: nn.Module) -> list[int] | None:
    """The patch-token grid [rows, cols] of a timm ViT (hybrids included), None for other models."""
    if not isinstance(module, VisionTransformer):
        return None
    rows, cols = module.patch_embed.grid_size
    return [int(rows), int(cols)]


def _position_prefix(module: VisionTransformer) -> int:
    """Tokens before the patch positions in the position embedding (none where prefix tokens get none)."""
    return 0 if module.no_embed_class else int(module.num_prefix_tokens)


def resampled_state(source: nn.Module, target: nn.Module, where: str) -> dict[str, torch.Tensor]:
    """`source`'s state dict fitted to `target`: the position embedding resampled to `target`'s grid.

    Any other parameter whose shape differs raises `CheckpointError` naming it and `where`.
    """
    state = source.state_dict()
    expected = target.state_dict()
    old_grid, new_grid = _grid(source), _grid(target)
    prefix = _position_prefix(source) if isinstance(source, VisionTransformer) else 0
    fitted = {}
    for key, value in state.items():
        if key in expected and value.shape != expected[key].shape:
            if key != POSITION_EMBEDDING or old_grid is None or new_grid is None:
                raise CheckpointError(
                    f"{where}: parameter {key} has shape {tuple(value.shape)} at the model's size and "
                    f"{tuple(expected[key].shape)} at the new one; only a ViT's {POSITION_EMBEDDING} can be "
                    "resampled, so this model is profiled at its own input size (frames are resized to it)"
                )
            value = resample_abs_pos_embed(
                value,
                new_size=new_grid,
                old_size=old_grid,
                num_prefix_tokens=prefix,
                interpolation=INTERPOLATION,
                antialias=ANTIALIAS,
            )
        fitted[key] = value
    return fitted


def _size(img_size: Sequence[int], argument: str) -> tuple[int, int]:
    if len(img_size) != 2 or min(int(s) for s in img_size) < 8:
        raise SpecError(f"{argument}: must be [height, width] of at least 8 pixels, got {list(img_size)}")
    return int(img_size[0]), int(img_size[1])


def _described(spec: ModelSpec, size: tuple[int, int]) -> str:
    """The spec's description, followed by the size it was resized to (it may name the old size)."""
    note = f"resized to {size[0]}×{size[1]} by gradsum resize (see the card's resized record)"
    return f"{spec.description}; {note}" if spec.description else note


def resized_card(card: ModelCard, spec: ModelSpec, record: dict[str, Any]) -> ModelCard:
    """`card` for the resized weights: the new spec and the record of how they were made.

    The metrics are dropped: they were measured at the old input size and say nothing of the new one.
    """
    return dataclasses.replace(card, spec=spec.to_dict(), metrics={}, resized=record)


def resize_model(
    source: str | Path, img_size: Sequence[int], out: str | Path, argument: str = "img_size"
) -> ModelCard:
    """Write the model folder at `source` rebuilt for input `img_size` (height, width) into `out`.

    The spec's `img_size` changes and nothing else; a ViT's position embedding is resampled to the new
    token grid. `argument` names the size's flag or field in messages. Returns the new card.
    """
    size = _size(img_size, argument)
    folder = Path(source)
    module, card = load_model(folder)
    spec = card.model_spec(str(folder))
    if tuple(spec.img_size) == size:
        raise SpecError(f"{argument}: {folder} is already made for {size[0]}×{size[1]}; nothing to resize")
    try:
        resized = {"img_size": list(size), "description": _described(spec, size)}
        patched = ModelSpec.from_dict({**spec.to_dict(), **resized}, f"{argument} for {folder}")
        target = module_for(patched)
    except SpecError as error:  # e.g. a patch size that does not divide the new size
        raise SpecError(f"{argument}: {error}") from None
    target.load_state_dict(resampled_state(module, target, str(folder)))
    old_grid, new_grid = _grid(module), _grid(target)
    record = {
        "source": str(folder),
        "source_weights_sha256": sha256_file(weights_file(folder)),
        "img_size": {"from": list(spec.img_size), "to": list(size)},
        "token_grid": {"from": old_grid, "to": new_grid},
        "position_embedding": RESAMPLING if old_grid != new_grid else "unchanged",
    }
    return save_model(target.eval(), resized_card(card, patched, record), out)
