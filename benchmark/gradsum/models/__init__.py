"""Models: architectures (CNN, ViT, hybrid ViT), declarative specs, training and safe checkpoints.

Every model maps float32 images (B, 3, H, W) in [0, 1] to (B, 1): the steering value or one logit.
"""

from __future__ import annotations

from gradsum.models.architectures import ARCHITECTURES, VIT_SIZES, build_model
from gradsum.models.checkpoints import (
    ModelCard,
    checkpoint_folder,
    load_model,
    load_weights,
    read_card,
    read_state_dict,
    save_model,
    weights_file,
)
from gradsum.models.compression import COMPRESSIONS, Compression, compress_model, compress_variants
from gradsum.models.int8 import Int8Linear, is_quantised
from gradsum.models.introspect import cam_layer, model_family, num_prefix_tokens, token_grid, tokenizer
from gradsum.models.outputs import output_values
from gradsum.models.specs import AugmentConfig, ModelSpec, TrainConfig, builtin_specs, load_spec
from gradsum.models.tasks import TRAINING_TASKS, Task
from gradsum.models.training import train_model

__all__ = [
    "ARCHITECTURES",
    "COMPRESSIONS",
    "TRAINING_TASKS",
    "VIT_SIZES",
    "AugmentConfig",
    "Compression",
    "Int8Linear",
    "ModelCard",
    "ModelSpec",
    "Task",
    "TrainConfig",
    "build_model",
    "builtin_specs",
    "cam_layer",
    "checkpoint_folder",
    "compress_model",
    "compress_variants",
    "is_quantised",
    "load_model",
    "load_spec",
    "load_weights",
    "model_family",
    "num_prefix_tokens",
    "output_values",
    "read_card",
    "read_state_dict",
    "save_model",
    "token_grid",
    "tokenizer",
    "train_model",
    "weights_file",
]
