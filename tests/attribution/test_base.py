from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import METHODS, Method, attribute, list_methods, register_method
from gradsum.attribution.base import upsample
from gradsum.attribution.layers import resolve_layer
from gradsum.attribution.normalise import normalise
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError, UnknownNameError


class _Fixed(Method):
    """Test-only: returns a preset grid (NaN at sample 1 when asked) and a named part."""

    description = "test only"
    applies_to: ClassVar[frozenset[str]] = frozenset({"vit"})
    uses_layer = False
    defaults: ClassVar[dict[str, object]] = {"nan": False}

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> dict[str, Tensor]:
        base = torch.arange(8.0).view(1, 2, 4).repeat(images.shape[0], 1, 1)
        if self.options["nan"]:
            base[1, 0, 0] = float("nan")
        return {"main": base, "half": base / 2}


@pytest.fixture
def fixed_method(monkeypatch: pytest.MonkeyPatch) -> str:
    name = "test:fixed"
    # a copy of the registry's table stands in for it during the test, so the entry goes with it
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    register_method(name)(_Fixed)
    return name


def test_result_records_choices_and_parts(vit: nn.Module, images: Tensor, fixed_method: str) -> None:
    result = attribute(vit, images, fixed_method, normalise="sum")
    assert result.maps.shape == (4, 32, 64)
    assert result.grid[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert torch.allclose(result.maps.sum(dim=(1, 2)), torch.ones(4))
    assert torch.allclose(result.parts["half"].maps, result.maps, atol=1e-6)
    record = result.describe()
    assert record["normalisation"] == "sum" and record["target"] == "direction"
    assert record["parts"]["half"]["method"] == f"{fixed_method}/half"


def test_method_that_does_not_apply_is_refused(cnn: nn.Module, images: Tensor, fixed_method: str) -> None:
    with pytest.raises(AttributionError, match="applies to vit, not cnn"):
        attribute(cnn, images, fixed_method)


def test_non_finite_maps_name_the_sample(vit: nn.Module, images: Tensor, fixed_method: str) -> None:
    with pytest.raises(AttributionError, match="sample index 1"):
        attribute(vit, images, fixed_method, nan=True)


def test_unknown_names_and_options(vit: nn.Module, images: Tensor, fixed_method: str) -> None:
    with pytest.raises(UnknownNameError, match="gradcam"):
        attribute(vit, images, "gradcamm")
    with pytest.raises(UnknownNameError, match="minmax"):
        attribute(vit, images, "gradcam", normalise="minmaxx")
    with pytest.raises(AttributionError, match="no option colour; valid: nan"):
        attribute(vit, images, fixed_method, colour=1)


def test_layer_typo_lists_close_names(cnn: nn.Module, vit: nn.Module, images: Tensor) -> None:
    with pytest.raises(AttributionError, match=r"no module 'feature\.2'; close names: features\.2"):
        attribute(cnn, images, "gradcam", layer="feature.2")
    with pytest.raises(AttributionError, match=r"blocks\.1\.norm1"):
        attribute(vit, images, "gradcam", layer="blocks.1.norm")
    with pytest.raises(AttributionError, match="applies to hybrid, not vit"):
        resolve_layer(vit, "tokenizer")


def test_layer_defaults_by_family(cnn: nn.Module, vit: nn.Module, hybrid: nn.Module) -> None:
    assert resolve_layer(cnn, None).paths == ("features.2",)
    assert resolve_layer(vit, None).paths == ("blocks.1.norm1",)
    assert resolve_layer(hybrid, None).paths == ("blocks.1.norm1",)
    assert resolve_layer(hybrid, "tokenizer").paths == ("patch_embed.backbone.1",)
    assert resolve_layer(hybrid, "both").paths == ("patch_embed.backbone.1", "blocks.1.norm1")


def test_bad_batches(vit: nn.Module, images: Tensor) -> None:
    with pytest.raises(AttributionError, match="expects H×W = 32×64, given 48×64"):
        attribute(vit, torch.rand(2, 3, 48, 64))
    with pytest.raises(AttributionError, match="3 per-sample targets for a batch of 4"):
        attribute(vit, images, target=[1, -1, 1])
    with pytest.raises(AttributionError, match=r"\(B,3,H,W\)"):
        attribute(vit, images[:, :1])


def test_normalisations_per_image() -> None:
    maps = torch.tensor([[[1.0, 3.0]], [[0.0, 0.0]]])
    assert normalise(maps, "minmax").tolist() == [[[0.0, 1.0]], [[0.0, 0.0]]]
    assert normalise(maps, "sum").tolist() == [[[0.25, 0.75]], [[0.0, 0.0]]]
    assert normalise(maps, "raw") is maps
    up = upsample(torch.tensor([[[0.0, 1.0]]]), (1, 4))
    assert up.tolist() == [[[0.0, 0.25, 0.75, 1.0]]]


def test_list_methods_covers_the_cam_family() -> None:
    infos = {info.name: info for info in list_methods()}
    assert {"gradcam", "lib:gradcam", "lib:scorecam", "scorecam", "lib:fullgrad"} <= set(infos)
    assert infos["lib:fullgrad"].applies_to == ("cnn",)
    assert infos["gradcam"].uses_layer


def test_tuple_and_dict_outputs_are_named(cnn: nn.Module, images: Tensor) -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = cnn

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            y = self.inner(x)
            return {"steer": y, "other": -y}

    pair = Pair()
    plain = attribute(cnn, images, "gradcam", target="output")
    named = attribute(pair, images, "gradcam", target="output", output="steer", layer="inner.features.2")
    assert torch.allclose(plain.maps, named.maps)
    lib = attribute(pair, images, "lib:gradcam", target="output", output="steer", layer="inner.features.2")
    assert (lib.maps - named.maps).abs().max() < 1e-4
    with pytest.raises(AttributionError, match="name the part"):
        attribute(pair, images, "gradcam", layer="inner.features.2")
    with pytest.raises(AttributionError, match="no part 'x'"):
        attribute(pair, images, "gradcam", output="x", layer="inner.features.2")
