"""Model randomisation: block order per family, exact edits on a copy, seeded draws."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradsum.errors import UnknownNameError
from gradsum.evaluation.randomise import (
    NORM_WEIGHT_STD,
    RAW_PARAMETER_STD,
    cascade_names,
    cascading,
    depth_to,
    independent,
    randomisation_blocks,
    randomised,
)
from gradsum.models import build_model

VIT = {"patch_size": 16, "embed_dim": 16, "depth": 2, "num_heads": 2}


def scrambled(model: nn.Module) -> nn.Module:
    """Every tensor set away from any initialiser's values (trained-like), so each reset shows."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 3.0)
            else:
                tensor.fill_(5)
    return model.eval()


@pytest.fixture(scope="module")
def pilotnet() -> nn.Module:
    return scrambled(build_model("pilotnet", (64, 128)))


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return scrambled(build_model("vit", (32, 64), **VIT))


@pytest.fixture(scope="module")
def hybrid() -> nn.Module:
    return scrambled(build_model("hybrid_vit", (32, 64), embed_dim=16, depth=2, num_heads=2))


def names(model: nn.Module) -> list[str]:
    return [block.name for block in randomisation_blocks(model)]


def test_pilotnet_blocks_run_from_the_head_down(pilotnet: nn.Module) -> None:
    assert names(pilotnet) == [
        "head.7",
        "head.5",
        "head.3",
        "head.1",
        "features.4",
        "features.3",
        "features.2",
        "features.1",
        "features.0",
    ]


def test_vit_blocks_end_with_the_embedding_and_its_tokens(vit: nn.Module) -> None:
    assert names(vit) == ["head", "norm", "blocks.1", "blocks.0", "patch_embed"]
    embedding = randomisation_blocks(vit)[-1]
    assert embedding.parameters == ("cls_token", "pos_embed")


def test_hybrid_blocks_walk_through_projection_then_tokenizer(hybrid: nn.Module) -> None:
    assert names(hybrid) == [
        "head",
        "norm",
        "blocks.1",
        "blocks.0",
        "patch_embed.proj",
        "patch_embed.backbone.4",
        "patch_embed.backbone.3",
        "patch_embed.backbone.2",
        "patch_embed.backbone.1",
    ]
    assert randomisation_blocks(hybrid)[4].parameters == ("cls_token", "pos_embed")


@pytest.mark.parametrize("fixture", ["pilotnet", "vit", "hybrid"])
def test_blocks_cover_every_parameter_once(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    owned = []
    for block in randomisation_blocks(model):
        owned += list(block.parameters)
        for path in block.modules:
            owned += [f"{path}.{name}" for name, _ in model.get_submodule(path).named_parameters()]
    assert sorted(owned) == sorted(name for name, _ in model.named_parameters())


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict(keep_vars=True).items()}


def in_blocks(name: str, model: nn.Module, chosen: list[str]) -> bool:
    blocks = {b.name: b for b in randomisation_blocks(model)}
    for block in (blocks[c] for c in chosen):
        if name in block.parameters or any(name.startswith(f"{m}.") for m in block.modules):
            return True
    return False


@pytest.mark.parametrize(
    ("fixture", "chosen"),
    [
        ("pilotnet", ["head.7", "features.2"]),
        ("vit", ["blocks.0", "patch_embed"]),
        ("hybrid", ["norm", "patch_embed.proj", "patch_embed.backbone.3"]),
    ],
)
def test_exactly_the_named_blocks_change_and_the_original_stays(
    fixture: str, chosen: list[str], request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(fixture)
    before = tensors(model)
    ids = {name: id(tensor) for name, tensor in model.state_dict(keep_vars=True).items()}
    copy = randomised(model, chosen, seed=3)
    after = copy.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {name for name in before if in_blocks(name, model, chosen)}
    # every tensor of the caller's model is the same object with the same values
    assert {name: id(t) for name, t in model.state_dict(keep_vars=True).items()} == ids
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())
    assert copy is not model


def test_raw_parameters_are_drawn_from_the_stated_truncated_normal(vit: nn.Module) -> None:
    pos_embed = randomised(vit, ["patch_embed"], seed=0).get_parameter("pos_embed")
    assert pos_embed.std().item() == pytest.approx(RAW_PARAMETER_STD, rel=0.2)


def test_same_seed_same_weights_and_the_global_rng_untouched(pilotnet: nn.Module) -> None:
    torch.manual_seed(11)
    state = torch.random.get_rng_state()
    first = randomised(pilotnet, ["head.7", "features.4"], seed=5).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    second = randomised(pilotnet, ["head.7", "features.4"], seed=5).state_dict()
    other = randomised(pilotnet, ["head.7", "features.4"], seed=6).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["head.7.weight"], other["head.7.weight"])


def test_cascading_grows_from_the_top_and_independent_takes_one_block(pilotnet: nn.Module) -> None:
    original = pilotnet.state_dict()
    steps = list(cascading(pilotnet, depth=3, seed=1))
    assert [name for name, _ in steps] == ["head.7", "head.5", "head.3"]
    last = steps[-1][1].state_dict()
    assert not torch.equal(last["head.5.weight"], original["head.5.weight"])
    assert torch.equal(last["head.1.weight"], original["head.1.weight"])
    # a block draws from its own seed: the same weights in every step and in the independent mode
    assert torch.equal(steps[0][1].state_dict()["head.7.weight"], last["head.7.weight"])
    alone = dict(independent(pilotnet, depth=3, seed=1))
    assert torch.equal(alone["head.5"].state_dict()["head.5.weight"], last["head.5.weight"])
    assert torch.equal(alone["head.5"].state_dict()["head.7.weight"], original["head.7.weight"])
    assert len(list(cascading(pilotnet, seed=1))) == len(randomisation_blocks(pilotnet))


def test_unknown_block_names_the_valid_ones(pilotnet: nn.Module) -> None:
    with pytest.raises(UnknownNameError, match=r"'head\.9'.*valid: head\.7"):
        randomised(pilotnet, ["head.9"])


def test_a_randomised_layernorm_is_a_random_affine_map_not_the_identity(vit: nn.Module) -> None:
    """`reset_parameters` alone sets a LayerNorm to the identity affine map, which randomises nothing."""
    copy = randomised(vit, ["norm"], seed=0)
    norm = copy.get_submodule("norm")
    assert isinstance(norm, nn.LayerNorm)
    assert norm.weight.mean().item() == pytest.approx(1.0, abs=3 * NORM_WEIGHT_STD / 4)
    assert norm.weight.std().item() == pytest.approx(NORM_WEIGHT_STD, rel=0.5)
    assert norm.bias.std().item() == pytest.approx(NORM_WEIGHT_STD, rel=0.5)
    # the layer's function changed: its output differs from the identity-affine LayerNorm's
    tokens = torch.randn(2, 5, norm.normalized_shape[0], generator=torch.Generator().manual_seed(0))
    identity = nn.functional.layer_norm(tokens, norm.normalized_shape, eps=norm.eps)
    expected = identity * norm.weight + norm.bias
    with torch.no_grad():
        torch.testing.assert_close(norm(tokens), expected)
        assert (norm(tokens) - identity).abs().mean() > 0.2
        # and the model's output changes with it
        images = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(1))
        assert not torch.allclose(copy(images), vit(images))


def test_a_randomised_batchnorm_draws_its_affine_and_resets_its_statistics(pilotnet: nn.Module) -> None:
    norm = randomised(pilotnet, ["features.4"], seed=0).get_submodule("features.4.1")
    assert isinstance(norm, nn.BatchNorm2d)
    mean, variance = norm.running_mean, norm.running_var
    assert mean is not None and variance is not None
    assert torch.equal(mean, torch.zeros_like(mean)) and torch.equal(variance, torch.ones_like(variance))
    assert norm.weight.std().item() == pytest.approx(NORM_WEIGHT_STD, rel=0.5)
    assert not torch.equal(norm.weight, torch.ones_like(norm.weight))


def test_depth_to_counts_the_blocks_at_and_above_a_layer(pilotnet: nn.Module, vit: nn.Module) -> None:
    assert depth_to(pilotnet, ["features.4"]) == 5
    # a module inside a block: its block; a parameter-free module: down to the block above it
    assert depth_to(pilotnet, ["features.2.0"]) == 7
    assert depth_to(pilotnet, ["head.0"]) == 4
    # a container holding several blocks: its deepest; several layers: the deepest of them
    assert depth_to(pilotnet, ["features"]) == 9
    assert depth_to(pilotnet, ["head.3", "features.3"]) == 6
    assert depth_to(vit, ["blocks.1.norm1"]) == 3
    assert depth_to(vit, ["blocks.0.attn.qkv"]) == 4
    assert cascade_names(vit, 2) == ["head", "norm"]
    with pytest.raises(UnknownNameError, match=r"no module 'features\.9'"):
        depth_to(pilotnet, ["features.9"])
