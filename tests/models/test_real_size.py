"""Real-size transformers: the DeiT-tiny-size specs at 192×384, their training step, the attention methods on
them, and timm's deit_tiny_patch16_224 loaded from a local weight file with its positions resampled."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from gradsum.attribution import attribute
from gradsum.errors import CheckpointError
from gradsum.models import (
    ModelSpec,
    load_model,
    load_spec,
    model_family,
    num_prefix_tokens,
    token_grid,
    train_model,
)
from gradsum.models.training import seeded_module_rng
from gradsum.truthsets.synthetic import generate

REAL_SIZE = (192, 384)
#: stride 16 on 192×384
GRID = (12, 24)
#: spec → model family
SPECS = {"deit_tiny": "vit", "hybrid_deit": "hybrid"}
#: the first weight each spec's input meets
FIRST_LAYER = {"deit_tiny": "patch_embed.proj.1.weight", "hybrid_deit": "patch_embed.backbone.stem.0.weight"}
ATTENTION_METHODS = ("rollout", "gradrollout", "gradcam")


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    """Each real-size spec built once, seeded, in eval mode."""
    models = {}
    for name in SPECS:
        torch.manual_seed(0)
        models[name] = load_spec(name).build().eval()
    return models


@pytest.mark.parametrize("name", sorted(SPECS))
def test_real_size_specs_have_deit_tiny_shape_on_a_stride_16_grid(
    name: str, built: dict[str, nn.Module]
) -> None:
    spec, model = load_spec(name), built[name]
    assert (spec.task, spec.img_size, model_family(model)) == ("steering", REAL_SIZE, SPECS[name])
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    # DeiT-tiny (Touvron et al. 2021): 12 blocks of width 192, 3 heads of 64, MLP 4 × 192
    assert len(model.blocks) == 12 and model.embed_dim == 192
    assert {block.attn.num_heads for block in model.blocks} == {3}
    assert {block.mlp.fc1.out_features for block in model.blocks} == {768}
    assert token_grid(model) == GRID and num_prefix_tokens(model) == 1
    assert model.pos_embed.shape == (1, 1 + 12 * 24, 192)  # 288 patch tokens and the class token
    tokens = model.forward_features(torch.rand(1, 3, *REAL_SIZE))
    assert tokens.shape == (1, 289, 192)


@pytest.fixture(scope="module")
def real_size_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic scenes rendered at 192×384: four to train on (one batch), one each to validate and test."""
    return generate(tmp_path_factory.mktemp("real_size") / "set", count=6, seed=0, size=REAL_SIZE)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_one_training_step_through_train_model(name: str, real_size_set: Path, tmp_path: Path) -> None:
    spec = load_spec(name).with_train(epochs=1, batch_size=4)
    card = train_model(spec, real_size_set, out=tmp_path / name, progress=False, device="cpu")
    assert card.splits == {"train": 4, "val": 1, "test": 1}
    assert card.epochs_run == card.best_epoch == 1
    assert len(card.history) == 1 and math.isfinite(card.history[0]["train_loss"])
    # the saved weights are the seeded initial ones after the one optimiser step, first layer to head
    with seeded_module_rng(spec.train.seed, "cpu"):
        initial = spec.build().state_dict()
    trained, _ = load_model(tmp_path / name)
    unchanged = {key for key, value in trained.state_dict().items() if torch.equal(value, initial[key])}
    assert unchanged.isdisjoint({FIRST_LAYER[name], "pos_embed", "blocks.11.mlp.fc2.weight", "head.weight"})


@pytest.mark.parametrize("method", ATTENTION_METHODS)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_attention_methods_map_a_real_size_image(name: str, method: str, built: dict[str, nn.Module]) -> None:
    torch.manual_seed(1)
    result = attribute(built[name], torch.rand(1, 3, *REAL_SIZE), method, normalise="raw")
    assert result.raw.shape == (1, *GRID) and result.maps.shape == (1, *REAL_SIZE)
    assert torch.isfinite(result.maps).all() and result.maps.abs().sum() > 0


@pytest.fixture(scope="module")
def deit_tiny_224() -> nn.Module:
    """timm's deit_tiny_patch16_224 as a user would save it: 224×224, 1000 classes, seeded random weights."""
    torch.manual_seed(3)
    return timm.create_model("deit_tiny_patch16_224", pretrained=False)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_deit_tiny_loads_from_a_local_file_through_a_spec(
    deit_tiny_224: nn.Module, tmp_path: Path, suffix: str
) -> None:
    weights = tmp_path / f"deit_tiny_patch16_224{suffix}"
    saved = {key: value.contiguous() for key, value in deit_tiny_224.state_dict().items()}
    if suffix == ".safetensors":
        safetensors.torch.save_file(saved, str(weights))
    else:
        torch.save(saved, weights)
    spec_file = tmp_path / "deit_tiny_timm.yaml"
    spec_file.write_text(
        "name: deit_tiny_timm\narchitecture: timm_vit\ntask: steering\nimg_size: [192, 384]\n"
        f"arch: {{name: deit_tiny_patch16_224, weights_file: {weights}}}\n"
    )
    model = load_spec(spec_file).build()
    assert token_grid(model) == GRID and model_family(model) == "vit"
    assert torch.equal(model.blocks[7].attn.qkv.weight, saved["blocks.7.attn.qkv.weight"])
    assert torch.equal(model.patch_embed.proj[1].weight, saved["patch_embed.proj.weight"])
    # the 14×14 positions resampled to 12×24 by timm, the class token's own position kept
    expected = resample_abs_pos_embed(saved["pos_embed"], new_size=list(GRID), num_prefix_tokens=1)
    assert expected.shape == (1, 289, 192)
    assert torch.equal(model.pos_embed, expected)
    assert model.head.weight.shape == (1, 192)  # the 1000-class head is refitted to one output
    assert model(torch.rand(1, 3, *REAL_SIZE)).shape == (1, 1)


def test_timm_weights_from_a_missing_or_foreign_file_name_it(tmp_path: Path) -> None:
    spec = {"name": "t", "architecture": "timm_vit", "task": "steering", "img_size": list(REAL_SIZE)}
    missing = tmp_path / "nowhere.safetensors"
    arch = {"name": "deit_tiny_patch16_224", "weights_file": str(missing)}
    with pytest.raises(CheckpointError, match=f"weights_file: weight file {missing} does not exist"):
        ModelSpec.from_dict({**spec, "arch": arch}).build()
    # a DeiT-small file: every shape is twice as wide
    torch.manual_seed(4)
    small = timm.create_model("deit_small_patch16_224", pretrained=False, depth=1)
    foreign = tmp_path / "deit_small.safetensors"
    safetensors.torch.save_file(small.state_dict(), str(foreign))
    arch = {"name": "deit_tiny_patch16_224", "depth": 1, "weights_file": str(foreign)}
    with pytest.raises(
        CheckpointError, match=rf"weights_file: {foreign}: does not load into timm's .*size mismatch"
    ):
        ModelSpec.from_dict({**spec, "arch": arch}).build()
