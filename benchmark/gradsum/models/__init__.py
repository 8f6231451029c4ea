"""Models: architectures (CNN, ViT, hybrid ViT), declarative specs, training and safe checkpoints.

Every model maps float32 images (B, 3, H, W) in [0, 1] to (B, 1): the steering value or one logit.
"""

from __future__ import annotations

from gradsum.models.architectures import ARCHITECTURES, VIT_SIZES, build_model
from gradsum.models.introspect import cam_layer, model_family, num_prefix_tokens, token_grid, tokenizer

__all__ = [
    "ARCHITECTURES",
    "VIT_SIZES",
    "build_model",
    "cam_layer",
    "model_family",
    "num_prefix_tokens",
    "token_grid",
    "tokenizer",
]
