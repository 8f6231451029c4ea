"""Tiny seeded models for attribution tests: a CNN, ViTs with class token, avg or max pooling, a hybrid.

Images are 32×64 so that every model runs in milliseconds; weights are random but seeded.
"""

from __future__ import annotations

from functools import partial

import pytest
import timm
import torch
from timm.layers import HybridEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

SIZE = (32, 64)


def small_cnn() -> nn.Module:
    """PilotNet-like: conv stages in `features` (last one = default CAM layer), then a linear head."""
    torch.manual_seed(0)

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ELU()),
                nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ELU()),
                nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.ELU()),
            )
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 16, 16), nn.ELU(), nn.Linear(16, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x * 2 - 1))

    return SmallCNN().eval()


def tiny_vit(class_token: bool = True, global_pool: str = "avg") -> nn.Module:
    """A 2-block timm ViT on a 4×8 patch grid; `class_token=False` reads out by `global_pool`."""
    torch.manual_seed(1)
    pooling = {} if class_token else {"class_token": False, "global_pool": global_pool}
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=SIZE,
        patch_size=8,
        num_classes=1,
        depth=2,
        embed_dim=32,
        num_heads=2,
        **pooling,
    ).eval()


def tiny_hybrid() -> nn.Module:
    """A 2-block ViT whose patch embedding is a two-stage conv tokenizer (stride 4) then 2×2 patches."""
    torch.manual_seed(2)
    backbone = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ELU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ELU()),
    )
    return VisionTransformer(
        img_size=SIZE,
        patch_size=2,
        num_classes=1,
        embed_dim=32,
        depth=2,
        num_heads=2,
        embed_layer=partial(HybridEmbed, backbone=backbone),
    ).eval()


MODELS = {"cnn": small_cnn, "vit": tiny_vit, "vit_avg": partial(tiny_vit, False), "hybrid": tiny_hybrid}


@pytest.fixture(params=sorted(MODELS))
def any_model(request: pytest.FixtureRequest) -> nn.Module:
    """Each tiny model in turn."""
    return MODELS[request.param]()


@pytest.fixture
def cnn() -> nn.Module:
    """The small PilotNet-like CNN."""
    return small_cnn()


@pytest.fixture
def vit() -> nn.Module:
    """The class-token tiny ViT."""
    return tiny_vit()


@pytest.fixture
def vit_avg() -> nn.Module:
    """The average-pooling tiny ViT (no class token)."""
    return tiny_vit(class_token=False)


@pytest.fixture
def vit_max() -> nn.Module:
    """The max-pooling tiny ViT (no class token)."""
    return tiny_vit(class_token=False, global_pool="max")


@pytest.fixture
def vit_avgmax() -> nn.Module:
    """The avgmax-pooling tiny ViT (no class token): half average, half max."""
    return tiny_vit(class_token=False, global_pool="avgmax")


@pytest.fixture
def hybrid() -> nn.Module:
    """The tiny hybrid ViT with a conv tokenizer."""
    return tiny_hybrid()


@pytest.fixture
def images() -> torch.Tensor:
    """Four seeded images (4,3,32,64) in [0,1]."""
    return torch.rand(4, 3, *SIZE, generator=torch.Generator().manual_seed(3))
