"""Relevance-guided fine-tuning: hand-computed loss terms, gradients through R, a few steps, frozen original,
and `finetune_model` and `gradsum finetune` end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gradsum.attribution.adapters import attribution_mode
from gradsum.attribution.methods.attention import gradient_rollout_map
from gradsum.attribution.methods.fastcam import GradCAM
from gradsum.attribution.targets import resolve_target
from gradsum.cli import main
from gradsum.errors import SpecError, TrainingError
from gradsum.fileio import sha256_file
from gradsum.finetune.data import foreground_masks, scene_indices
from gradsum.finetune.loop import finetune_model
from gradsum.finetune.loss import background_term, foreground_term, frozen_copy, keep_term, relevance_loss
from gradsum.finetune.relevance import gradcam_relevance, relevance_map, rollout_relevance
from gradsum.finetune.settings import FinetuneSettings, LossWeights
from gradsum.models import ModelSpec, build_model, load_model, save_model

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


#: the synthetic set's size and a model input of another size, so masks and images are resized
SET_SIZE, INPUT_SIZE = (48, 96), (32, 64)


@pytest.fixture(scope="module")
def base_and_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from gradsum.truthsets.synthetic import generate

    root = tmp_path_factory.mktemp("finetune")
    spec = ModelSpec(
        name="tiny_cnn",
        architecture="compact_cnn",
        task="steering",
        img_size=INPUT_SIZE,
        arch=TINY["compact_cnn"],
    )
    torch.manual_seed(0)
    save_model(build_model("compact_cnn", INPUT_SIZE, **TINY["compact_cnn"]), spec, root / "base")
    generate(root / "set", count=30, seed=0, size=SET_SIZE)
    return root / "base", root / "set"


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_foreground_masks_pick_the_named_ids_and_resize_by_nearest_neighbour() -> None:
    labels = np.array([[7, 7, 26, 26], [8, 7, 26, 0]], dtype=np.uint8)
    masks = foreground_masks([labels], [7, 8], (4, 8))
    # each label pixel becomes a 2x2 block: road (7) and sidewalk (8) are in, car (26) and unlabeled out
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)
    expected = expected.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(masks[0], expected)


def test_loss_weights_parse_four_numbers_and_name_the_option() -> None:
    assert LossWeights.parse("1,0.5,2,0") == LossWeights(1.0, 0.5, 2.0, 0.0)
    for text in ("1,2,3", "a,b,c,d", "1,2,3,-1", "1,2,3,nan"):
        with pytest.raises(SpecError, match="--weights"):
            LossWeights.parse(text, "--weights")


def test_finetuning_writes_a_new_model_and_leaves_the_base_untouched(
    base_and_set: tuple[Path, Path], tmp_path: Path
) -> None:
    base, truthset = base_and_set
    before = folder_hashes(base)
    out = tmp_path / "tuned"
    settings = FinetuneSettings(("road",), samples=4, lr=1e-3, steps=2, batch_size=2)
    card = finetune_model(base, truthset, out, settings)
    assert folder_hashes(base) == before
    record = json.loads((out / "card.json").read_text())["finetune"]
    assert record["base_weights_sha256"] == sha256_file(base / "model.safetensors")
    assert record["samples"] == 4 and record["steps"] == 2 and record["foreground_ids"] == [7]
    # scenes are named by their Cityscapes-style frame stems: the four train files seed 0 draws
    frames = sorted((truthset / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))
    drawn = sorted(np.random.default_rng(0).choice(len(frames), size=4, replace=False))
    assert record["scene_ids"] == [frames[i].name.removesuffix("_leftImg8bit.png") for i in drawn]
    assert record == card.finetune and card.metrics == {}
    tuned, loaded_card = load_model(out)
    original, _ = load_model(base)
    assert (
        loaded_card.finetune == card.finetune
        and loaded_card.spec == json.loads((base / "card.json").read_text())["spec"]
    )
    changed = [
        name
        for name, value in original.state_dict().items()
        if not torch.equal(value, tuned.state_dict()[name])
    ]
    assert "features.0.0.weight" in changed


def test_an_unknown_foreground_class_is_refused_with_the_valid_names(
    base_and_set: tuple[Path, Path], tmp_path: Path
) -> None:
    base, truthset = base_and_set
    with pytest.raises(SpecError, match=r"foreground: unknown Cityscapes class 'roads'.*valid: .*road"):
        finetune_model(base, truthset, tmp_path / "out", FinetuneSettings(("roads",), steps=1))
    assert not (tmp_path / "out").exists()


def test_writing_over_the_base_folder_is_refused(base_and_set: tuple[Path, Path]) -> None:
    base, truthset = base_and_set
    before = folder_hashes(base)
    with pytest.raises(TrainingError, match=f"out: {base}.* base model folder"):
        finetune_model(base, truthset, base / ".." / base.name, FinetuneSettings(("road",), steps=1))
    assert folder_hashes(base) == before


def test_the_command_runs_end_to_end_and_refuses_bad_weights(
    base_and_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, truthset = base_and_set
    out = tmp_path / "tuned"
    args = ["finetune", "--model", str(base), "--truthset", str(truthset), "--foreground", "road,sidewalk"]
    args += ["--samples", "3", "--steps", "2", "--batch-size", "2", "--lr", "1e-3", "--out", str(out)]
    assert main([*args, "--weights", "2,0.3,0.8"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--weights" in error and len(error.splitlines()) == 1 and not out.exists()
    assert main([*args, "--weights", "1,1,1,0"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    _, card = load_model(out)
    assert card.finetune["weights"] == {"background": 1.0, "foreground": 1.0, "relevance": 1.0, "keep": 0.0}
    assert card.finetune["foreground"] == ["road", "sidewalk"] and card.finetune["foreground_ids"] == [7, 8]
    assert len(card.finetune["scene_ids"]) == 3


def test_each_seed_draws_its_own_scenes() -> None:
    drawn = {seed: scene_indices(5, 40, seed) for seed in range(3)}
    for seed, indices in drawn.items():
        assert indices == sorted(np.random.default_rng(seed).choice(40, size=5, replace=False))
        assert len(set(indices)) == 5 and all(0 <= i < 40 for i in indices)
    assert len({tuple(v) for v in drawn.values()}) == 3
    assert scene_indices(40, 40, 7) == list(range(40))
