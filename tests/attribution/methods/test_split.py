from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsum.attribution import attribute
from gradsum.attribution.methods.split import common_grid
from gradsum.attribution.normalise import minmax
from gradsum.errors import AttributionError

PARTS = {"tokenizer_gradcam", "attention", "product", "mean"}


def test_parts_are_the_normalised_tokenizer_cam_and_attention(hybrid: nn.Module, images: Tensor) -> None:
    result = attribute(hybrid, images, "split", normalise="raw")
    assert set(result.parts) == PARTS
    cam = attribute(hybrid, images, "gradcam", layer="tokenizer", normalise="raw").grid
    relevance = attribute(hybrid, images, "gradrollout", normalise="raw").grid
    assert cam.shape[1:] == (8, 16) and relevance.shape[1:] == (4, 8)
    assert cam.amax((1, 2)).min() > 0 and relevance.amax((1, 2)).min() > 0
    upsampled = F.interpolate(relevance[:, None], size=(8, 16), mode="bilinear", align_corners=False)[:, 0]
    tokenizer, attention = (result.parts[name].grid for name in ("tokenizer_gradcam", "attention"))
    assert torch.allclose(tokenizer, minmax(cam), atol=1e-6)
    assert torch.allclose(attention, minmax(upsampled), atol=1e-6)
    assert torch.allclose(result.parts["product"].grid, tokenizer * attention)
    assert torch.allclose(result.parts["mean"].grid, (tokenizer + attention) / 2)
    assert torch.equal(result.grid, result.parts["product"].grid)
    assert result.describe()["parts"]["attention"]["method"] == "split/attention"


def test_options_pick_the_attention_part_and_the_combination(hybrid: nn.Module, images: Tensor) -> None:
    result = attribute(hybrid, images, "split", normalise="raw", attention="rollout", combine="mean")
    rollout = attribute(hybrid, images, "rollout", normalise="raw").grid
    assert torch.allclose(
        result.parts["attention"].grid, minmax(common_grid(rollout, result.grid)[0]), atol=1e-6
    )
    assert torch.equal(result.grid, result.parts["mean"].grid)
    with pytest.raises(AttributionError, match="combine must be one of product, mean"):
        attribute(hybrid, images, "split", combine="max")
    with pytest.raises(AttributionError, match="attention must be one of"):
        attribute(hybrid, images, "split", attention="gradcam")


def test_split_applies_to_hybrids_only(vit: nn.Module, images: Tensor) -> None:
    with pytest.raises(AttributionError, match="applies to hybrid, not vit"):
        attribute(vit, images, "split")
