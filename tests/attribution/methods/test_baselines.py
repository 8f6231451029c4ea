from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop
from torch import Tensor, nn

from gradsum.attribution import attribute
from gradsum.attribution.adapters import HOOK_TABLES
from gradsum.errors import AttributionError

GRADIENT_BASELINES = [
    "saliency",
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "smoothgrad",
    "smoothgrad_sq",
    "vargrad",
    "guided_backprop",
    "guided_gradcam",
]


class TopLeftCNN(nn.Module):
    """Convolves the whole image but reads only the top-left quadrant's features: a known cause region."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU()),
        )
        mask = torch.zeros(1, 1, height, width)
        mask[..., : height // 2, : width // 2] = 1.0
        self.register_buffer("mask", mask)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * height * width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x) * self.mask)


@pytest.fixture
def top_left(images: Tensor) -> nn.Module:
    return TopLeftCNN(*images.shape[2:]).eval()


def quadrant_share(grid: Tensor) -> Tensor:
    """Per-image share of |map| in the top-left quadrant."""
    height, width = grid.shape[1:]
    mass = grid.abs()
    return mass[:, : height // 2, : width // 2].sum((1, 2)) / mass.sum((1, 2))


def test_each_gradient_baseline_puts_its_mass_on_the_cause(top_left: nn.Module, images: Tensor) -> None:
    for method in GRADIENT_BASELINES:
        grid = attribute(top_left, images, method, normalise="raw").grid
        assert grid.shape == images[:, 0].shape, method
        # two 3×3 convolutions reach two pixels past the quadrant's edge, nothing further
        assert quadrant_share(grid).min() > 0.9, method
        assert grid[:, 20:, :].abs().max() == 0, method
    assert sum(len(getattr(m, t, {})) for m in top_left.modules() for t in HOOK_TABLES) == 0


def test_gradient_is_signed_and_per_sample(cnn: nn.Module, images: Tensor) -> None:
    x = images.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(cnn(x).sum(), x)
    signs = [1.0, -1.0, -1.0, 1.0]
    grid = attribute(cnn, images, "gradient", target=signs, normalise="raw").grid
    assert torch.allclose(grid, expected.sum(1) * torch.tensor(signs)[:, None, None], atol=1e-6)
    saliency = attribute(cnn, images, "saliency", target=signs, normalise="raw").grid
    assert torch.allclose(saliency, expected.abs().sum(1), atol=1e-6)


def test_integrated_gradients_are_complete(cnn: nn.Module, images: Tensor) -> None:
    grid = attribute(cnn, images, "integrated_gradients", target="output", normalise="raw", n_steps=64).grid
    with torch.no_grad():
        change = (cnn(images) - cnn(torch.zeros_like(images)))[:, 0]
    assert torch.allclose(grid.sum((1, 2)), change, rtol=0.02, atol=1e-4)


class TwoUnitNet(nn.Module):
    """y = Σ_pixels w2 · ELU(W1 x) with 1×1 convolutions: two hidden units per pixel, the second one read
    with a negative weight. W1 = [[1, 0, -1], [0.5, 1, 0]], w2 = [2, -1.5]."""

    def __init__(self) -> None:
        super().__init__()
        hidden = nn.Conv2d(3, 2, 1, bias=False)
        self.features = nn.Sequential(hidden, nn.ELU())
        self.head = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            hidden.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, 1.0, 0.0]])[:, :, None, None])
            self.head.weight.copy_(torch.tensor([2.0, -1.5])[None, :, None, None])

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).sum((2, 3))


class FunctionalELU(nn.Module):
    """A CNN that applies its activation as a function inside `forward`: no module to hook."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1))
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.elu(self.features(x)))


def test_guided_backprop_gates_elu_by_hand(images: Tensor) -> None:
    """Per pixel the gradient reaching the ELU is w2 ⊙ ELU'(h): unit 1 passes 2·ELU'(h1) ≥ 0, unit 2's
    −1.5·ELU'(h2) < 0 is stopped. So the input gradient is 2·ELU'(h1)·W1[0] and its |·| sum over the
    channels 4·ELU'(h1), with h1 = red − blue."""
    model = TwoUnitNet().eval()
    guided = attribute(model, images, "guided_backprop", target="output", normalise="raw").grid
    h1 = images[:, 0] - images[:, 2]
    assert (h1 < 0).any() and (h1 > 0).any()
    expected = 4.0 * torch.where(h1 > 0, torch.ones_like(h1), torch.exp(h1))
    torch.testing.assert_close(guided, expected, rtol=1e-5, atol=1e-6)
    # saliency lets the negative unit through: |2·ELU'(h1)·W1[0] − 1.5·ELU'(h2)·W1[1]| summed differs
    saliency = attribute(model, images, "saliency", target="output", normalise="raw").grid
    assert (saliency - guided).abs().max() > 0.1


# captum warns that it sets hooks and that the input did not require gradients
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_guided_backprop_differs_from_saliency_on_elu_and_matches_captum_on_relu(
    cnn: nn.Module, top_left: nn.Module, images: Tensor
) -> None:
    # the conftest CNN uses ELU: captum's guided backprop would gate nothing and equal saliency
    elu_gb = attribute(cnn, images, "guided_backprop", normalise="raw").grid
    assert (elu_gb - attribute(cnn, images, "saliency", normalise="raw").grid).abs().max() > 1e-4
    # on an all-ReLU model the gating is captum's own
    relu_gb = attribute(top_left, images, "guided_backprop", target="output", normalise="raw").grid
    captum = GuidedBackprop(top_left).attribute(images, target=0).abs().sum(1)
    torch.testing.assert_close(relu_gb, captum)
    assert sum(len(getattr(m, t, {})) for m in top_left.modules() for t in HOOK_TABLES) == 0


@pytest.mark.parametrize("method", ["guided_backprop", "guided_gradcam"])
def test_guided_methods_refuse_functional_activations(method: str, images: Tensor) -> None:
    model = FunctionalELU()
    model(images)  # materialise the lazy layer
    with pytest.raises(AttributionError, match=r"calls torch\.nn\.functional\.elu \(in <model>\) outside"):
        attribute(model.eval(), images, method, layer="features.0")
    assert sum(len(getattr(m, t, {})) for m in model.modules() for t in HOOK_TABLES) == 0


@pytest.mark.parametrize("name", ["top_left", "hybrid"])
def test_guided_gradcam_is_guided_backprop_times_gradcam(
    name: str, images: Tensor, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(name)
    layer = "tokenizer" if name == "hybrid" else None
    guided = attribute(model, images, "guided_gradcam", normalise="raw").grid
    backprop = attribute(model, images, "guided_backprop", normalise="raw").grid
    cam = attribute(model, images, "gradcam", layer=layer, normalise="raw").grid
    upsampled = F.interpolate(cam[:, None], size=images.shape[2:], mode="nearest")[:, 0]
    assert cam.amax((1, 2)).min() > 0
    assert (guided >= 0).all()
    assert torch.allclose(guided, backprop * upsampled, rtol=1e-4, atol=1e-9)


def test_guided_gradcam_refuses_token_layers(hybrid: nn.Module, images: Tensor) -> None:
    with pytest.raises(AttributionError, match="4-D convolutional layer"):
        attribute(hybrid, images, "guided_gradcam", layer="both")


def test_noise_tunnels_are_seeded(cnn: nn.Module, images: Tensor) -> None:
    first = attribute(cnn, images, "smoothgrad", normalise="raw", nt_samples=4).grid
    again = attribute(cnn, images, "smoothgrad", normalise="raw", nt_samples=4).grid
    other = attribute(cnn, images, "smoothgrad", normalise="raw", nt_samples=4, seed=1).grid
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    with pytest.raises(AttributionError, match="nt_samples"):
        attribute(cnn, images, "vargrad", nt_samples=0)


def test_random_and_uniform_baselines(any_model: nn.Module, images: Tensor) -> None:
    first = attribute(any_model, images, "random", normalise="raw").grid
    assert torch.equal(first, attribute(any_model, images, "random", normalise="raw").grid)
    assert not torch.equal(first, attribute(any_model, images, "random", normalise="raw", seed=1).grid)
    assert not torch.equal(first[0], first[1])
    assert 0.45 < float(first.mean()) < 0.55
    uniform = attribute(any_model, images, "uniform", normalise="sum").maps
    assert torch.allclose(uniform, torch.full_like(uniform, 1.0 / uniform[0].numel()))
