"""Architecture registry, introspection helpers and local-file-only timm weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from gradsum.errors import AttributionError, CheckpointError, SpecError, UnknownNameError
from gradsum.models import ARCHITECTURES, build_model, cam_layer, model_family, num_prefix_tokens, token_grid
from gradsum.models import tokenizer as get_tokenizer

SIZE = (96, 192)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_architecture_maps_images_to_one_output(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, SIZE).eval()
    images = torch.rand(3, 3, *SIZE)
    out = model(images)
    assert out.shape == (3, 1)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # the output depends on the image
    assert model_family(model) == ARCHITECTURES.get(name).family  # the declared family is the built one


def test_vit_token_grid_and_prefix_tokens() -> None:
    with_token = build_model("vit", SIZE, patch_size=16)
    pooled = build_model("vit", SIZE, patch_size=8, class_token=False)
    assert token_grid(with_token) == (6, 12)
    assert num_prefix_tokens(with_token) == 1
    assert token_grid(pooled) == (12, 24)
    assert num_prefix_tokens(pooled) == 0
    assert pooled.global_pool == "avg"


@pytest.mark.parametrize("architecture", ["vit", "hybrid_vit"])
def test_deit_tiny_size(architecture: str) -> None:
    model = build_model(architecture, SIZE, size="deit_tiny")
    block = model.blocks[0]
    shape = (model.embed_dim, len(model.blocks), block.attn.num_heads, block.mlp.fc1.out_features)
    assert shape == (192, 12, 3, 768)  # timm's deit_tiny_patch16_224: MLP 4 × 192
    with pytest.raises(SpecError, match="unknown ViT size 'huge'; valid: deit_tiny, narrow, small"):
        build_model(architecture, SIZE, size="huge")


@pytest.mark.parametrize(("stem", "channels"), [("pilot", 64), ("resnet", 128)])
def test_hybrid_exposes_its_cnn_tokenizer(stem: str, channels: int) -> None:
    model = build_model("hybrid_vit", SIZE, stem=stem)
    assert model_family(model) == "hybrid"
    assert token_grid(model) == (6, 12)  # stride-8 stem, then 2×2 patchify
    features = get_tokenizer(model)(torch.rand(1, 3, *SIZE))
    assert features.shape == (1, channels, 12, 24)
    assert cam_layer(model) is get_tokenizer(model)


def test_cnn_cam_layers() -> None:
    pilot = build_model("pilotnet", SIZE)
    assert cam_layer(pilot) is pilot.features[-1]
    resnet = build_model("timm_cnn", SIZE, name="resnet18")
    assert cam_layer(resnet) is resnet.layer4[-1]
    with pytest.raises(AttributionError, match="tokenizer"):
        get_tokenizer(build_model("vit", SIZE))
    with pytest.raises(AttributionError, match="token_grid"):
        token_grid(pilot)


def test_pretrained_without_file_says_downloads_are_impossible() -> None:
    with pytest.raises(CheckpointError, match="downloads are not possible"):
        build_model("timm_cnn", SIZE, name="resnet18", pretrained=True)


def test_bad_names_and_arguments() -> None:
    with pytest.raises(
        UnknownNameError, match="valid: compact_cnn, hybrid_vit, pilotnet, timm_cnn, timm_vit, vit"
    ):
        build_model("pilotnett", SIZE)
    with pytest.raises(SpecError, match="depthh"):
        build_model("vit", SIZE, depthh=2)
    with pytest.raises(SpecError, match="patch_size"):
        build_model("vit", SIZE, patch_size=10)
    with pytest.raises(SpecError, match="class_token"):
        build_model("vit", SIZE, class_token=False, global_pool="token")
    with pytest.raises(SpecError, match="'map' is not one of token, avg, max, avgmax"):
        build_model("vit", SIZE, class_token=False, global_pool="map")
    with pytest.raises(SpecError, match="no model 'resnet1800'"):
        build_model("timm_cnn", SIZE, name="resnet1800")
    with pytest.raises(SpecError, match=r"resnet18: .*img_size.*use timm_cnn"):
        build_model("timm_vit", SIZE, name="resnet18")
    with pytest.raises(SpecError, match="mixer_b16_224 is a MlpMixer, not a timm VisionTransformer"):
        build_model("timm_vit", SIZE, name="mixer_b16_224")


def test_timm_cnn_loads_exact_checkpoint_from_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("resnet18", num_classes=1, pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    safetensors.torch.save_file(source.state_dict(), str(path))
    model = build_model("timm_cnn", SIZE, name="resnet18", checkpoint_path=str(path)).eval()
    images = torch.rand(2, 3, *SIZE)
    # the model takes [0, 1] and standardises inside with timm's statistics for resnet18
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model(images), source.eval()((images - mean) / std))


def test_timm_cnn_takes_imagenet_style_weights_and_refits_the_head(tmp_path: Path) -> None:
    torch.manual_seed(2)
    imagenet = timm.create_model("resnet18", num_classes=1000, pretrained=False)
    path = tmp_path / "resnet18_in1k.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_model("timm_cnn", SIZE, name="resnet18", weights_file=str(path))
    torch.testing.assert_close(model.conv1[1].weight, imagenet.conv1.weight)
    assert model.fc.weight.shape == (1, 512)


def test_timm_vit_takes_local_weights_made_for_another_size(tmp_path: Path) -> None:
    torch.manual_seed(3)
    square = timm.create_model("deit_tiny_patch16_224", num_classes=1000, pretrained=False, depth=2)
    path = tmp_path / "deit_tiny.safetensors"
    safetensors.torch.save_file(square.state_dict(), str(path))
    model = build_model("timm_vit", SIZE, name="deit_tiny_patch16_224", depth=2, weights_file=str(path))
    assert token_grid(model) == (6, 12) and model.pos_embed.shape == (1, 1 + 6 * 12, 192)
    torch.testing.assert_close(model.patch_embed.proj[1].weight, square.patch_embed.proj.weight)
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, square.blocks[1].mlp.fc2.weight)
    # the class token's position is kept; the patch grid is resampled from 14×14 to 6×12
    torch.testing.assert_close(model.pos_embed[:, 0], square.pos_embed[:, 0])
    assert model.head.weight.shape == (1, 192)
    assert model(torch.rand(2, 3, *SIZE)).shape == (2, 1)
