from __future__ import annotations

import pytest
import torch
from torch import Tensor

from gradsum.attribution import METHODS, attribute
from gradsum.attribution.cam import SPECS
from gradsum.errors import AttributionError

LIBRARY = sorted(SPECS)


@pytest.mark.parametrize("model_name", ["cnn", "hybrid", "vit", "vit_avg"])
@pytest.mark.parametrize("method", LIBRARY)
def test_every_library_method_runs_where_it_applies(
    method: str, model_name: str, images: Tensor, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(model_name)
    cls = METHODS.get(f"lib:{method}")
    family = "cnn" if model_name == "cnn" else "hybrid" if model_name == "hybrid" else "vit"
    if family not in cls.applies_to:
        with pytest.raises(AttributionError, match=f"not {family}"):
            attribute(model, images[:2], f"lib:{method}")
        return
    layer = "tokenizer" if model_name == "hybrid" and method == "shapleycam" else None
    result = attribute(model, images[:2], f"lib:{method}", layer=layer)
    assert result.grid.shape == (2, 32, 64)
    assert torch.isfinite(result.maps).all()
    # the library min–max normalises every map after ReLU: each spans [0, 1] or is all zero
    assert result.maps.amin(dim=(1, 2)).max() == 0
    peaks = result.maps.amax(dim=(1, 2))
    assert ((peaks > 0.99) | (peaks == 0)).all()
    assert "pytorch-grad-cam" in result.describe()["grid"]


def test_methods_without_fast_path_keep_their_plain_name(cnn: torch.nn.Module, images: Tensor) -> None:
    plain = attribute(cnn, images[:2], "eigencam")
    lib = attribute(cnn, images[:2], "lib:eigencam")
    assert torch.equal(plain.maps, lib.maps)
    assert "finercam" not in METHODS


def test_shapleycam_refuses_token_layers(
    vit: torch.nn.Module, hybrid: torch.nn.Module, images: Tensor
) -> None:
    with pytest.raises(AttributionError, match="applies to cnn/hybrid, not vit"):
        attribute(vit, images[:2], "lib:shapleycam")
    with pytest.raises(AttributionError, match="needs a 4-D feature map"):
        attribute(hybrid, images[:2], "lib:shapleycam", layer="transformer")
