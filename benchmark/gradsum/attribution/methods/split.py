"""The split technique from the talk that introduced GradSUM: explain a hybrid ViT's tokenizer and its attention separately.

The tokenizer's GradCAM (which pixels the CNN stem turns into useful features) and the attention
relevance (which tokens the transformer reads) are computed on their own grids, brought to the finer
of the two, min–max normalised per image and combined. Every part is returned, so the pipeline can
profile the tokenizer, the attention and each combination side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from gradsum.attribution.base import MAIN, METHODS, Method, register_method
from gradsum.attribution.normalise import minmax
from gradsum.attribution.postprocess import apply_steps
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError

#: how the two normalised parts become one map
COMBINATIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "product": lambda tokenizer, attention: tokenizer * attention,
    "mean": lambda tokenizer, attention: (tokenizer + attention) / 2,
}

#: attention methods that can serve as the attention part
ATTENTION_PARTS = ("gradrollout", "rollout", "attention", "attention_gradcam")

#: the tokenizer part: GradCAM on the hybrid's CNN tokenizer (its last stage)
TOKENIZER_METHOD = "gradcam"
TOKENIZER_LAYER = "tokenizer"


def common_grid(first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """Both maps (B, h, w) bilinearly resized to the finer grid of the two."""
    size = (max(first.shape[-2], second.shape[-2]), max(first.shape[-1], second.shape[-1]))

    def resize(grid: Tensor) -> Tensor:
        if tuple(grid.shape[-2:]) == size:
            return grid
        return F.interpolate(grid[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    return resize(first), resize(second)


def split_parts(tokenizer_cam: Tensor, relevance: Tensor) -> dict[str, Tensor]:
    """The normalised parts on a common grid and every combination of them, by name."""
    tokenizer_part, attention_part = (minmax(g) for g in common_grid(tokenizer_cam, relevance))
    parts = {"tokenizer_gradcam": tokenizer_part, "attention": attention_part}
    return parts | {name: combine(tokenizer_part, attention_part) for name, combine in COMBINATIONS.items()}


@register_method("split")
class SplitTechnique(Method):
    """Tokenizer GradCAM and attention relevance of a hybrid ViT, combined as `product` or `mean`."""

    description = "hybrid split: tokenizer GradCAM × attention relevance (combine product|mean; parts kept)"
    applies_to: ClassVar[frozenset[str]] = frozenset({"hybrid"})
    uses_layer: ClassVar[bool] = False
    freeze_parameters: ClassVar[bool] = True
    defaults: ClassVar[Mapping[str, Any]] = {"attention": "gradrollout", "combine": "product"}
    grid_note: ClassVar[str] = "the finer of the tokenizer feature map and the token grid; parts min–max'd"
    performs: ClassVar[tuple[str, ...]] = (
        "parts: each method's default post-processing (tokenizer GradCAM: relu)",
        "parts: bilinear to the finer grid, minmax each, combined",
    )

    def grid(
        self, model: nn.Module, images: Tensor, target: Target, layer: str | None
    ) -> Mapping[str, Tensor]:
        """Both parts, both combinations, and the chosen combination as the main map."""
        relevance_name, combine = str(self.options["attention"]), str(self.options["combine"])
        if relevance_name not in ATTENTION_PARTS:
            raise AttributionError(
                f"options: attention must be one of {', '.join(ATTENTION_PARTS)}, got {relevance_name!r}"
            )
        if combine not in COMBINATIONS:
            raise AttributionError(
                f"options: combine must be one of {', '.join(COMBINATIONS)}, got {combine!r}"
            )
        tokenizer, attention = METHODS.get(TOKENIZER_METHOD), METHODS.get(relevance_name)
        tokenizer_cam = tokenizer(output=self.output_key).grid(model, images, target, TOKENIZER_LAYER)
        relevance = attention(output=self.output_key).grid(model, images, target, None)
        if isinstance(tokenizer_cam, Mapping) or isinstance(relevance, Mapping):
            raise AttributionError("options: the split parts must be single-map methods")
        parts = split_parts(
            apply_steps(tokenizer_cam, tokenizer.default_postprocess),
            apply_steps(relevance, attention.default_postprocess),
        )
        return parts | {MAIN: parts[combine]}
