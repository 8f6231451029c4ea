"""Post-processing is a recorded choice: raw maps keep their sign, and `steps` says what made `maps`."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import METHODS, attribute
from gradsum.attribution.base import upsample
from gradsum.attribution.methods.cam import BASE_CAM_STEPS, FAST
from gradsum.attribution.normalise import minmax
from gradsum.attribution.postprocess import check_steps
from gradsum.errors import UnknownNameError
from gradsum.pipeline.profiler import _aggregated_map


class RedMinusGreen(nn.Module):
    """A CNN whose GradCAM is known: output = mean(R − G) over 2×2-pooled pixels.

    The layer `features` holds A = (pool(R), pool(G)); the channel weights are the spatial means of the
    gradient, +1/(hw) and −1/(hw), so GradCAM = (A_R − A_G)/(hw): negative wherever green beats red.
    """

    def __init__(self) -> None:
        super().__init__()
        select = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            select.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
        self.features = nn.Sequential(select, nn.AvgPool2d(2))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.features(x)
        return (pooled[:, 0] - pooled[:, 1]).mean(dim=(1, 2))[:, None]


@pytest.fixture
def red_left() -> Tensor:
    """Two images (2,3,32,64): red on the left half, green on the right, varying brightness."""
    images = torch.zeros(2, 3, 32, 64)
    ramp = torch.linspace(0.2, 1.0, 32).view(32, 1)
    images[:, 0, :, :32] = ramp
    images[:, 1, :, 32:] = ramp
    images[1] *= 0.5
    return images


def expected_cam(images: Tensor) -> Tensor:
    pooled = nn.functional.avg_pool2d(images[:, :2], 2)
    return (pooled[:, 0] - pooled[:, 1]) / (pooled.shape[-2] * pooled.shape[-1])


def test_raw_keeps_the_sign_and_the_default_relu_removes_it(red_left: Tensor) -> None:
    result = attribute(RedMinusGreen(), red_left, "gradcam", target="output", layer="features")
    torch.testing.assert_close(result.raw, expected_cam(red_left))
    assert result.raw[..., 16:].max() < 0 < result.raw[..., :16].min()
    torch.testing.assert_close(result.grid, result.raw.clamp(min=0))
    torch.testing.assert_close(result.maps, minmax(upsample(result.raw.clamp(min=0), (32, 64))))
    assert result.maps.min() == 0 and result.maps[..., 40:].max() == 0
    assert result.steps == ("relu", "upsample bilinear 16x32->32x64", "normalise minmax")
    assert result.describe()["steps"] == list(result.steps)


def test_no_steps_give_the_signed_map(red_left: Tensor) -> None:
    result = attribute(
        RedMinusGreen(),
        red_left,
        "gradcam",
        target="output",
        layer="features",
        postprocess=(),
        normalise="raw",
    )
    assert result.steps == ("upsample bilinear 16x32->32x64",)
    torch.testing.assert_close(result.grid, result.raw)
    torch.testing.assert_close(result.maps, upsample(expected_cam(red_left), (32, 64)))
    assert result.maps.min() < 0


def test_abs_on_a_signed_method_is_abs_of_raw_then_normalised(red_left: Tensor) -> None:
    result = attribute(RedMinusGreen(), red_left, "input_x_gradient", target="output", postprocess=("abs",))
    assert result.raw.min() < 0  # green pixels lower the output: the signed map says so
    assert result.steps == ("abs", "normalise minmax")  # a pixel map: nothing to upsample
    torch.testing.assert_close(result.maps, minmax(result.raw.abs()))
    signed = attribute(RedMinusGreen(), red_left, "input_x_gradient", target="output")
    assert signed.steps == ("normalise minmax",)
    torch.testing.assert_close(signed.raw, result.raw)


def test_library_steps_are_recorded_as_the_librarys(red_left: Tensor) -> None:
    result = attribute(RedMinusGreen(), red_left, "lib:gradcam", target="output", layer="features")
    assert result.steps == (*BASE_CAM_STEPS, "normalise minmax")
    ours = attribute(RedMinusGreen(), red_left, "gradcam", target="output", layer="features")
    assert (ours.maps - result.maps).abs().max() <= 1e-4  # library output = our raw map + relu step


def test_grid_resolution_replays_every_step_but_the_upsampling(red_left: Tensor) -> None:
    result = attribute(
        RedMinusGreen(), red_left, "gradcam", target="output", layer="features", normalise="sum"
    )
    on_grid = _aggregated_map(result, "grid")
    positive = expected_cam(red_left).clamp(min=0)
    torch.testing.assert_close(on_grid, positive / positive.sum(dim=(1, 2), keepdim=True))
    assert _aggregated_map(result, "label") is result.maps


def test_unknown_step_is_refused_with_the_valid_names(red_left: Tensor) -> None:
    with pytest.raises(
        UnknownNameError, match=r"'relux' for postprocess\[1\].*valid: abs, minmax, relu, sum"
    ):
        attribute(RedMinusGreen(), red_left, "gradcam", layer="features", postprocess=("abs", "relux"))


def test_every_method_declares_registered_default_steps() -> None:
    for name, cls in METHODS.items():
        assert check_steps(cls.default_postprocess) == cls.default_postprocess, name
    assert {name for name, cls in METHODS.items() if cls.default_postprocess == ("relu",)} == set(FAST)
