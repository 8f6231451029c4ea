"""Relevance-guided fine-tuning loss: hand-computed terms, gradients through R, a few steps, frozen original."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from gradsum.attribution.adapters import attribution_mode
from gradsum.attribution.attention import gradient_rollout_map
from gradsum.attribution.fastcam import GradCAM
from gradsum.attribution.targets import resolve_target
from gradsum.errors import TrainingError
from gradsum.models import build_model
from gradsum.models.finetune import (
    LossWeights,
    background_term,
    foreground_term,
    frozen_copy,
    gradcam_relevance,
    keep_term,
    relevance_loss,
    relevance_map,
    rollout_relevance,
)

SIZE = (32, 64)
TINY: dict[str, dict[str, Any]] = {
    "vit": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
    "hybrid_vit": {"embed_dim": 32, "depth": 2, "num_heads": 2},
    "compact_cnn": {"channels": (8, 16), "hidden": 16},
}
#: the first parameter each model's input meets: gradients must reach it through the relevance map
FIRST = {"vit": "patch_embed.proj.1.weight", "hybrid_vit": "patch_embed.backbone.1.0.weight"}


def tiny(architecture: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(architecture, SIZE, **TINY[architecture])


def batch(count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and a foreground mask on the left quarter (a road-like band)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 3, *SIZE, generator=generator)
    mask = torch.zeros(count, *SIZE)
    mask[:, :, : SIZE[1] // 4] = 1.0
    return images, mask


def test_relevance_equal_to_mask_zeroes_both_relevance_terms() -> None:
    _, mask = batch()
    assert background_term(mask, mask).item() == 0.0
    assert foreground_term(mask, mask).item() == 0.0


def test_relevance_on_the_background_only_costs_its_area() -> None:
    _, mask = batch()
    relevance = 1 - mask
    # R·(1−M) = 1 on the background: MSE = background share 3/4; R·M = 0 against M: MSE = share 1/4
    assert background_term(relevance, mask).item() == pytest.approx(0.75)
    assert foreground_term(relevance, mask).item() == pytest.approx(0.25)


def test_half_relevance_on_the_foreground_costs_only_the_shortfall() -> None:
    _, mask = batch()
    relevance = 0.5 * mask
    assert background_term(relevance, mask).item() == 0.0
    assert foreground_term(relevance, mask).item() == pytest.approx(0.25 * 0.5**2)


def test_keep_term_is_zero_at_the_original_and_the_squared_gap_otherwise() -> None:
    original = torch.tensor([0.2, -0.4])
    assert keep_term(original, original, "steering").item() == 0.0
    assert keep_term(original + 0.1, original, "steering").item() == pytest.approx(0.01)
    # obstacle: cross-entropy against the original's own class, here 1 then 0
    logits = torch.tensor([0.0, 0.0])
    expected = torch.log(torch.tensor(2.0)).item()
    assert keep_term(logits, torch.tensor([3.0, -1.0]), "obstacle").item() == pytest.approx(expected)


def test_total_weights_the_terms_as_robustvit() -> None:
    model = tiny("vit")
    images, mask = batch()
    parts = relevance_loss(model, frozen_copy(model), images, mask, "steering")
    weights = LossWeights()
    expected = 0.8 * (2.0 * parts.background + 0.3 * parts.foreground) + 0.2 * parts.keep
    assert (weights.background, weights.foreground, weights.relevance, weights.keep) == (2.0, 0.3, 0.8, 0.2)
    assert parts.total.item() == pytest.approx(expected.item())
    # the model is its own original: nothing to keep (fused and unfused attention differ in rounding)
    assert parts.keep.item() == pytest.approx(0.0, abs=1e-9)
    assert parts.background.item() > 0.0


@pytest.mark.parametrize("architecture", sorted(TINY))
def test_relevance_map_is_minmax_normalised_at_the_input_size(architecture: str) -> None:
    images, _ = batch()
    relevance, output = relevance_map(tiny(architecture), images, "steering")
    flat = relevance.detach().flatten(1)
    assert torch.allclose(flat.min(1).values, torch.zeros(4))
    assert torch.allclose(flat.max(1).values, torch.ones(4))
    assert relevance.requires_grad and output.shape == (4,)


@pytest.mark.parametrize("architecture", sorted(TINY))
def test_gradients_reach_the_first_layer_through_the_relevance_map(architecture: str) -> None:
    model = tiny(architecture)
    images, mask = batch()
    weights = LossWeights(keep=0.0)
    relevance_loss(model, frozen_copy(model), images, mask, "steering", weights).total.backward()
    first = FIRST.get(architecture, "features.0.0.weight")
    grad = model.get_parameter(first).grad
    assert grad is not None and grad.abs().sum().item() > 0.0


def test_a_few_steps_lower_the_background_term() -> None:
    model = tiny("vit")
    original = frozen_copy(model)
    images, mask = batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    terms = []
    for _ in range(8):
        parts = relevance_loss(model, original, images, mask, "steering")
        terms.append(parts.background.item())
        optimizer.zero_grad()
        parts.total.backward()
        optimizer.step()
    assert terms[-1] < 0.5 * terms[0], terms


def test_the_original_model_is_untouched() -> None:
    model = tiny("compact_cnn")
    original = frozen_copy(model)
    before = {name: value.clone() for name, value in original.state_dict().items()}
    images, mask = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        relevance_loss(model, original, images, mask, "obstacle").total.backward()
        optimizer.step()
    after = original.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert all(parameter.grad is None for parameter in original.parameters())
    assert not torch.equal(before["features.0.0.weight"], model.state_dict()["features.0.0.weight"])


def test_a_mask_of_the_wrong_size_names_the_argument() -> None:
    model = tiny("compact_cnn")
    images, _ = batch()
    with pytest.raises(TrainingError, match="foreground"):
        relevance_loss(model, frozen_copy(model), images, torch.ones(4, 16, 16), "steering")


@pytest.mark.parametrize("architecture", ["vit", "hybrid_vit"])
def test_rollout_relevance_equals_the_attribution_methods_map(architecture: str) -> None:
    model = tiny(architecture)
    images, _ = batch()
    target = resolve_target(None, "steering")
    with attribution_mode(model, needs_attention=True):
        kept, _ = rollout_relevance(model, images, target)
    with attribution_mode(model, needs_attention=True, freeze_parameters=True):
        measured = gradient_rollout_map(model, images, target)
    assert torch.allclose(kept.detach(), measured, atol=1e-6)


def test_gradcam_relevance_equals_the_relu_of_the_attribution_methods_map() -> None:
    model = tiny("compact_cnn")
    images, _ = batch()
    target = resolve_target(None, "obstacle")
    with attribution_mode(model):
        kept, _ = gradcam_relevance(model, images, target)
    with attribution_mode(model, freeze_parameters=True):
        measured = GradCAM().grid(model, images, target, None).clamp(min=0)
    assert torch.allclose(kept.detach(), measured, atol=1e-6)
