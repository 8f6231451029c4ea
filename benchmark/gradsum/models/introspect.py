"""What later stages need to know about a model: family, tokenizer, token grid, prefix tokens, CAM layer."""

from __future__ import annotations

from collections.abc import Callable

from timm.layers import HybridEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from gradsum.errors import AttributionError
from gradsum.taxonomy import Family, FamilyRegistry


def model_family(model: nn.Module) -> Family:
    """`vit` or `hybrid` for timm VisionTransformers (hybrid: the patch embedding is a CNN), else `cnn`."""
    if isinstance(model, VisionTransformer):
        return "hybrid" if isinstance(model.patch_embed, HybridEmbed) else "vit"
    return "cnn"


def _transformer(model: nn.Module, what: str) -> VisionTransformer:
    if not isinstance(model, VisionTransformer):
        raise AttributionError(f"{what}: {type(model).__name__} is not a timm VisionTransformer")
    return model


def tokenizer(model: nn.Module) -> nn.Module:
    """The CNN tokenizer of a hybrid ViT (`patch_embed.backbone`), an attribution target of its own."""
    vit = _transformer(model, "tokenizer")
    if not isinstance(vit.patch_embed, HybridEmbed):
        raise AttributionError("tokenizer: this ViT embeds patches linearly and has no CNN tokenizer")
    return vit.patch_embed.backbone


def token_grid(model: nn.Module) -> tuple[int, int]:
    """Rows and columns of the patch-token grid of a ViT or hybrid ViT."""
    rows, cols = _transformer(model, "token_grid").patch_embed.grid_size
    return int(rows), int(cols)


def num_prefix_tokens(model: nn.Module) -> int:
    """Tokens before the patch tokens (class and register tokens); 0 for average-pooling ViTs."""
    return int(_transformer(model, "num_prefix_tokens").num_prefix_tokens)


#: The default Grad-CAM layer per family (`cam_layer`); covered for every family in tests/test_taxonomy.py.
CAM_LAYERS: FamilyRegistry[Callable[[nn.Module], nn.Module]] = FamilyRegistry("default CAM layer")


def cam_layer(model: nn.Module) -> nn.Module:
    """A default Grad-CAM layer: the last conv stage of a CNN, or the hybrid's tokenizer."""
    return CAM_LAYERS.get(model_family(model))(model)


@CAM_LAYERS.register("cnn")
def _cnn_cam_layer(model: nn.Module) -> nn.Module:
    """CNNs built here keep their conv stages in `features`; other CNNs (timm) fall back to the last
    module that holds a convolution."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features):
        return features[-1]
    return _last_conv_parent(model)


@CAM_LAYERS.register("vit")
def _vit_cam_layer(model: nn.Module) -> nn.Module:
    raise AttributionError("cam_layer: a plain ViT has no convolutional feature map; use its blocks")


@CAM_LAYERS.register("hybrid")
def _hybrid_cam_layer(model: nn.Module) -> nn.Module:
    return tokenizer(model)


def _last_conv_parent(model: nn.Module) -> nn.Module:
    """The last module with a Conv2d child in definition order (for a ResNet: `layer4[-1]`)."""
    last: nn.Module | None = None
    for module in model.modules():
        if module is not model and any(isinstance(m, nn.Conv2d) for m in module.children()):
            last = module
    if last is None:
        raise AttributionError(f"cam_layer: {type(model).__name__} has no Conv2d layer")
    return last
