"""Zennit LRP for CNNs: hand-computed relevance, conservation, undone edits, pixel maps at label resolution."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from gradsum.aggregation.scores import class_scores
from gradsum.attribution import METHODS, attribute
from gradsum.attribution.adapters import HOOK_TABLES
from gradsum.attribution.methods.lrp import ZennitLRPMethod
from gradsum.cli import main
from gradsum.models.architectures import build_model

#: every registered Zennit LRP method: a new composite is tested as soon as it registers
LRP_METHODS = [name for name, cls in METHODS.items() if issubclass(cls, ZennitLRPMethod)]

#: conv (1×3 kernel) → ReLU → dense on a 1×3 image whose green and blue channels are 0, by hand below
CONV = [[1.0, -1.0, 2.0], [0.5, 1.0, -1.0]]
DENSE = [1.0, 2.0]
RED = [1.0, 0.5, 0.25]

#: pixel relevance by hand. z = (1, 0.75), y = 1·1 + 2·0.75 = 2.5; the dense epsilon rule gives the two
#: channels R = (1, 1.5). EpsilonPlus, z+ rule: positive parts (1, 0, 0.5)/1.5 and (0.5, 0.5, 0)/1 →
#: (2/3 + 3/4, 3/4, 1/3). Flat: every one of the 9 inputs gets 2.5/9, a pixel 3 of them. z-box (l=0,
#: h=1): (x·w − h·w⁻)/(z − Σh·w⁻) = (1, 0.5, 0.5)/2 and (0.5, 0.5, 0.75)/1.75 → (13/14, 19/28, 25/28).
HAND = {
    "lrp_epsilon_plus": [17 / 12, 3 / 4, 1 / 3],
    "lrp_epsilon_plus_flat": [5 / 6, 5 / 6, 5 / 6],
    "lrp_epsilon_gamma_box": [13 / 14, 19 / 28, 25 / 28],
}


def hand_network() -> nn.Module:
    conv = nn.Conv2d(3, 2, (1, 3), bias=False)
    dense = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 0] = torch.tensor(CONV)
        dense.weight.copy_(torch.tensor([DENSE]))
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), dense).eval()


def test_the_hand_table_covers_every_lrp_method() -> None:
    assert set(HAND) == set(LRP_METHODS)


@pytest.mark.parametrize("method", LRP_METHODS)
def test_relevance_equals_the_hand_computation(method: str) -> None:
    image = torch.zeros(1, 3, 1, 3)
    image[0, 0, 0] = torch.tensor(RED)
    result = attribute(hand_network(), image, method, target="output", normalise="raw")
    torch.testing.assert_close(result.maps[0, 0], torch.tensor(HAND[method]), rtol=1e-5, atol=1e-6)
    assert result.maps.sum().item() == pytest.approx(2.5, rel=1e-5)


def without_biases(model: nn.Module, seed: int = 0) -> nn.Module:
    """`model` with every bias and BatchNorm mean at 0 but random BatchNorm scales (so the merge matters)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                scale, variance = module.weight, module.running_var
                scale.copy_(torch.rand(scale.shape, generator=generator) + 0.5)
                assert variance is not None and module.running_mean is not None
                variance.copy_(torch.rand(variance.shape, generator=generator) + 0.5)
                module.running_mean.zero_()
            bias = getattr(module, "bias", None)
            if isinstance(bias, Tensor):
                bias.zero_()
    return model.eval()


def explained(model: nn.Module, images: Tensor) -> Tensor:
    with torch.no_grad():
        return model(images)[:, 0].abs()  # the default steering target explains sign(y)·y


#: the epsilon rule's stabiliser for conservation checks: Zennit's 1e-6 is 0.1 % of a random PilotNet's output
TINY = 1e-10

#: architectures at the smallest sizes their strides allow, built as `gradsum` builds them
ARCHITECTURES = {
    "pilotnet": ("pilotnet", (66, 100), {}),
    "compact_cnn": ("compact_cnn", (32, 64), {}),
    "resnet18": ("timm_cnn", (32, 64), {"name": "resnet18"}),
}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def bias_free(request: pytest.FixtureRequest) -> tuple[nn.Module, Tensor]:
    architecture, size, arguments = ARCHITECTURES[request.param]
    torch.manual_seed(0)
    model = without_biases(build_model(architecture, size, **arguments))
    return model, torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", LRP_METHODS)
def test_bias_free_models_conserve_relevance(bias_free: tuple[nn.Module, Tensor], method: str) -> None:
    """Without biases every rule passes all relevance down: the map sums to the explained output.

    This also checks the model edits: the input scaling taken as a gradient would double PilotNet's
    sum, residual additions without their Sum module would multiply resnet18's by 256 (measured).
    """
    model, images = bias_free
    result = attribute(model, images, method, normalise="raw", epsilon=TINY)
    # measured: at most 7e-5 relative (float32 sums over every pixel, the other rules' stabiliser 1e-6)
    torch.testing.assert_close(result.maps.flatten(1).sum(1), explained(model, images), rtol=2e-4, atol=0.0)


@pytest.mark.parametrize("method", LRP_METHODS)
def test_batch_norm_is_merged_into_its_convolution(method: str) -> None:
    """PilotNet with BatchNorm (signed scales, shifts) explains as the same net with BN folded by hand."""
    torch.manual_seed(0)
    with_bn: Any = build_model("pilotnet", (66, 100)).eval()
    generator = torch.Generator().manual_seed(5)
    folded: Any = build_model("pilotnet", (66, 100), batch_norm=False).eval()
    with torch.no_grad():
        for block, plain in zip(with_bn.features, folded.features, strict=True):
            conv, norm = block[0], block[1]
            for tensor in (norm.weight, norm.bias, norm.running_mean):
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator) + 0.5)
            scale = norm.weight / (norm.running_var + norm.eps).sqrt()
            plain[0].weight.copy_(conv.weight * scale[:, None, None, None])
            plain[0].bias.copy_(norm.bias - norm.running_mean * scale)
        folded.head.load_state_dict(with_bn.head.state_dict())
    images = torch.rand(2, 3, 66, 100, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(with_bn(images), folded(images), rtol=1e-4, atol=1e-6)
    merged = attribute(with_bn, images, method, normalise="raw").maps
    torch.testing.assert_close(merged, attribute(folded, images, method, normalise="raw").maps)


@pytest.mark.parametrize("method", LRP_METHODS)
def test_an_output_bias_absorbs_its_share(method: str) -> None:
    """With only the last bias b ≠ 0, the epsilon rule there passes sign(y)·(y − b); below, all is kept."""
    torch.manual_seed(0)
    model = without_biases(build_model("pilotnet", (66, 100)))
    last: Any = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]  # the output layer
    with torch.no_grad():
        last.bias.fill_(0.05)
    images = torch.rand(3, 3, 66, 100, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        output = model(images)[:, 0]
    result = attribute(model, images, method, target="output", normalise="raw", epsilon=TINY)
    torch.testing.assert_close(result.maps.flatten(1).sum(1), output - 0.05, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("method", LRP_METHODS)
def test_a_call_leaves_model_outputs_and_gradients_unchanged(method: str) -> None:
    torch.manual_seed(0)
    model = build_model("timm_cnn", (32, 64), name="resnet18").eval()
    images = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(3))

    def state() -> tuple[Tensor, Tensor, list[Tensor], int, list[Any]]:
        batch = images.clone().requires_grad_()
        output = model(batch)
        (gradient,) = torch.autograd.grad(output.sum(), batch)
        tensors = [t.clone() for t in (*model.parameters(), *model.buffers())]
        hooks = sum(len(getattr(m, table, {})) for m in model.modules() for table in HOOK_TABLES)
        flags = [(type(m), getattr(m, "inplace", None), m.forward) for m in model.modules()]
        return output.detach(), gradient, tensors, hooks, flags

    before = state()
    attribute(model, images, method)
    after = state()
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    assert all(torch.equal(a, b) for a, b in zip(after[2], before[2], strict=True))
    assert after[3:] == before[3:]
    assert [name for name, _ in model.named_modules() if "canonizer" in name] == []


def test_methods_lists_the_lrp_methods_for_cnns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "--family", "cnn"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LRP_METHODS)
    assert main(["methods", "--family", "vit"]) == 0
    assert not any(name in capsys.readouterr().out for name in LRP_METHODS)


class ObjectReader(nn.Module):
    """A dense layer that reads only the pixels of one small object (a 3×5 box, smaller than a ViT cell)."""

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.dense = nn.Linear(mask.numel() * 3, 1, bias=False)
        with torch.no_grad():
            self.dense.weight.copy_(torch.linspace(0.5, 1.5, mask.numel() * 3))

    def forward(self, images: Tensor) -> Tensor:
        return self.dense((images * self.mask).flatten(1))


#: methods that return their map at pixel resolution, without smoothing
PIXEL_METHODS = [
    "gradient",
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
    *LRP_METHODS,
]


@pytest.mark.parametrize("method", PIXEL_METHODS)
def test_pixel_maps_keep_a_small_object_on_its_pixels(method: str) -> None:
    """At the label size of the input the map is unchanged; on 2× labels `grid` keeps it, bilinear spreads it."""
    height, width = 12, 24
    labels = torch.zeros(1, height, width, dtype=torch.long)
    labels[0, 4:7, 9:14] = 26  # a car on road-free ground (id 0 is ignored, 26 is car)
    labels[labels == 0] = 7  # road
    mask = (labels[0] == 26).float()
    images = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(4)) * 0.5 + 0.25
    result = attribute(ObjectReader(mask), images, method, target="output", normalise="raw")
    assert torch.equal(result.maps, result.grid)  # no upsampling, no blur
    assert result.maps[0][mask == 0].abs().max().item() == 0.0
    same = class_scores(result.maps.abs(), labels)
    assert same.mass_share[0, 26].item() == pytest.approx(1.0, abs=1e-6)
    larger = labels.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    cells = class_scores(result.maps.abs(), larger, resolution="grid")
    assert cells.mass_share[0, 26].item() == pytest.approx(1.0, abs=1e-6)
    bilinear = class_scores(result.maps.abs(), larger, resolution="label")
    assert 0.8 < bilinear.mass_share[0, 26].item() < 0.99  # half a map pixel spills over each edge
