from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import attribute
from gradsum.models import build_model

FAST = ["gradcam", "hirescam", "gradcam++", "xgradcam", "layercam"]
CASES = [("cnn", None), ("vit", None), ("vit_avg", None), ("hybrid", "tokenizer"), ("hybrid", None)]


@pytest.mark.parametrize(("name", "layer"), CASES)
@pytest.mark.parametrize(("task", "target"), [("steering", [1, -1, -1, 1]), ("obstacle", "predicted")])
def test_fast_path_equals_pytorch_grad_cam(
    name: str, layer: str | None, task: str, target: object, images: Tensor, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(name)
    for method in FAST:
        ours = attribute(model, images, method, target=target, task=task, layer=layer)  # type: ignore[arg-type]
        oracle = attribute(model, images, f"lib:{method}", target=target, task=task, layer=layer)  # type: ignore[arg-type]
        assert ours.maps.amax(dim=(1, 2)).min() > 0.99, method
        assert (ours.maps - oracle.maps).abs().max() <= 1e-4, method


def test_negating_one_target_changes_only_that_sample(cnn: nn.Module, images: Tensor) -> None:
    base = attribute(cnn, images, "gradcam", target=[1, 1, 1, 1], normalise="raw")
    flipped = attribute(cnn, images, "gradcam", target=[1, -1, 1, 1], normalise="raw")
    negative = attribute(cnn, images[1:2], "gradcam", target="negative", normalise="raw")
    keep = [0, 2, 3]
    assert torch.allclose(base.grid[keep], flipped.grid[keep])
    assert torch.allclose(flipped.grid[1], negative.grid[0], atol=1e-6)
    assert not torch.allclose(flipped.grid[1], base.grid[1])


def test_direction_target_uses_each_samples_sign(cnn: nn.Module, images: Tensor) -> None:
    signs = torch.where(cnn(images)[:, 0] < 0, -1.0, 1.0)
    direction = attribute(cnn, images, "hirescam", target="direction", normalise="raw")
    explicit = attribute(cnn, images, "hirescam", target=signs, normalise="raw")
    assert torch.equal(direction.grid, explicit.grid)


class LeftHalf(nn.Module):
    """Output is a known function of the left half: the right half is masked out before bias-free convs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.ReLU()
        )
        self.head = nn.Linear(8, 1)
        with torch.no_grad():
            self.head.weight.abs_()

    def forward(self, x: Tensor) -> Tensor:
        left = torch.zeros_like(x)
        left[..., : x.shape[-1] // 2] = 1
        return self.head(self.features(x * left).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", FAST)
def test_mass_lands_on_the_region_the_output_depends_on(method: str, images: Tensor) -> None:
    maps = attribute(LeftHalf(), images, method, target="output", normalise="sum").maps
    assert maps[..., :32].sum(dim=(1, 2)).min() > 0.9


@pytest.mark.parametrize("architecture", ["pilotnet", "timm_cnn"])
def test_project_cnns_equal_the_library(architecture: str, images: Tensor) -> None:
    torch.manual_seed(5)
    model = build_model(architecture, (64, 128)).eval()
    batch = torch.nn.functional.interpolate(images[:2], size=(64, 128))
    ours = attribute(model, batch, "gradcam")
    oracle = attribute(model, batch, "lib:gradcam")
    assert ours.layer == oracle.layer
    assert (ours.maps - oracle.maps).abs().max() <= 1e-4
