"""Relevance-guided fine-tuning (Chefer et al. 2022, hila-chefer/RobustViT), adapted to driving models.

The loss pushes a model's relevance map R off the background and onto a foreground mask M while a keep
term holds its predictions near a frozen copy of the original model:

    total = relevance · (background · MSE(R·(1−M), 0) + foreground · MSE(R·M, M)) + keep · keep_term

R is differentiable in the model's parameters: gradient-weighted rollout (Chefer ICCV 2021) for ViTs and
hybrids, GradCAM for CNNs, upsampled to the input size and min-max normalised per image.

- `settings`: `FinetuneSettings`, every setting of a fine-tuning (config block, CLI options, card record)
- `relevance`: the differentiable relevance map per model family
- `loss`: the loss terms and their weighted total
- `data`: the K scenes of a split drawn by the seed, as model input and foreground masks
- `loop`: AdamW on the loss, and `finetune_model`, which writes a new checkpoint folder whose card
  records what was done (`ModelCard.finetune`); the base folder is only read

This stage sits above attribution (whose maps it optimises) and models; nothing below imports it.
`finetune_model`, `FinetuneSettings` and `LossWeights` are importable from the package; they load on
first use, so that `gradsum --help` can read `settings` without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradsum.finetune.loop import finetune_model
    from gradsum.finetune.settings import FinetuneSettings, LossWeights

#: the package's API → the module that defines it
_EXPORTS = {"FinetuneSettings": "settings", "LossWeights": "settings", "finetune_model": "loop"}

__all__ = ["FinetuneSettings", "LossWeights", "finetune_model"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
