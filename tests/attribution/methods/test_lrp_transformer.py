from __future__ import annotations

import sys

import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import attribute, list_methods
from gradsum.attribution.methods.lrp_transformer import PATCHED_ATTRIBUTES, lrp_patched, lrp_relevance
from gradsum.errors import GradSUMError

LXT_REASON = "lxt is not installed (pip install 'gradsum[lrp]')"


def needs_lxt() -> None:
    pytest.importorskip("lxt.efficient", reason=LXT_REASON)


def total_relevance(model: nn.Module, images: Tensor, signs: Tensor, variant: str) -> Tensor:
    """Per-sample relevance of all inputs: pixels, class token and position embedding, all biases at 0.

    Biases absorb relevance (gradient×input gives them none); the class token and the position embedding
    are inputs added to the tokens, so they get their share."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
    offsets = [p for n, p in model.named_parameters() if n in ("cls_token", "pos_embed")]
    leaf = images.clone().requires_grad_(True)
    totals = []
    with lrp_patched(model, variant):
        explained = signs * model(leaf)[:, 0]
        for i in range(len(images)):
            grads = torch.autograd.grad(explained[i], [leaf, *offsets], retain_graph=True)
            parts = [(leaf[i] * grads[0][i]).sum()] + [
                (p * g).sum() for p, g in zip(offsets, grads[1:], strict=True)
            ]
            totals.append(sum(parts))
    return torch.stack(totals).detach() / explained.detach()


def test_methods_are_listed_and_say_how_to_enable_them(
    monkeypatch: pytest.MonkeyPatch, vit: nn.Module, images: Tensor
) -> None:
    listed = {info.name: info for info in list_methods()}
    for name in ("attnlrp", "cplrp", "chefer_lrp"):
        assert listed[name].applies_to == ("hybrid", "vit")
    assert "gradsum[lrp]" in listed["attnlrp"].description
    # without lxt: one clear error naming the extra, and the model untouched
    monkeypatch.setitem(sys.modules, "lxt.efficient.rules", None)
    monkeypatch.setitem(sys.modules, "lxt.efficient.patches", None)
    model = vit
    for name in ("attnlrp", "cplrp"):
        with pytest.raises(GradSUMError, match=r"method \w+: needs the optional library lxt.*gradsum\[lrp\]"):
            attribute(model, images, name)
    assert not any(name in vars(m) for m in model.modules() for name in PATCHED_ATTRIBUTES)


@pytest.mark.parametrize("name", ["vit", "vit_avg", "hybrid"])
def test_relevance_is_conserved(name: str, images: Tensor, request: pytest.FixtureRequest) -> None:
    needs_lxt()
    model = request.getfixturevalue(name)
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0])
    # CP-LRP is conservative layer by layer: the input relevance is the explained output
    assert torch.allclose(total_relevance(model, images, signs, "cplrp"), torch.ones(4), atol=1e-5)
    # AttnLRP's softmax rule (gradient×input on the logits) lets the softmax absorb or add relevance, as
    # the paper says; on these random tiny models the total stays within 35% (measured 0.68-1.09)
    ratio = total_relevance(model, images, signs, "attnlrp")
    assert ((ratio - 1).abs() < 0.35).all(), ratio
    # the method's map is the pixel part of that relevance
    grid = attribute(model, images, "cplrp", target=signs.tolist(), normalise="raw").grid
    pixels = lrp_relevance(model, images, lambda out: signs * out[:, 0], "cplrp").sum(1)
    assert torch.allclose(grid, pixels, atol=1e-7)


def torchvision_twin() -> tuple[nn.Module, nn.Module]:
    """A 2-layer torchvision ViT and the timm ViT holding the same weights (same function)."""
    from timm.models.vision_transformer import VisionTransformer
    from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

    torch.manual_seed(4)
    theirs = TorchvisionViT(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=1).eval()
    nn.init.normal_(theirs.heads.head.weight)  # torchvision starts the head at zero
    ours = VisionTransformer(32, 8, num_classes=1, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2).eval()
    names = {
        "conv_proj": "patch_embed.proj",
        "class_token": "cls_token",
        "encoder.pos_embedding": "pos_embed",
        "encoder.ln": "norm",
        "heads.head": "head",
    }
    for i in range(2):
        layer = f"encoder.layers.encoder_layer_{i}"
        names |= {
            f"{layer}.ln_1": f"blocks.{i}.norm1",
            f"{layer}.self_attention.in_proj_": f"blocks.{i}.attn.qkv.",
            f"{layer}.self_attention.out_proj": f"blocks.{i}.attn.proj",
            f"{layer}.ln_2": f"blocks.{i}.norm2",
            f"{layer}.mlp.0": f"blocks.{i}.mlp.fc1",
            f"{layer}.mlp.3": f"blocks.{i}.mlp.fc2",
        }
    state = {}
    for key, value in theirs.state_dict().items():
        prefix = next(p for p in names if key.startswith(p))
        state[names[prefix] + key[len(prefix) :]] = value
    ours.load_state_dict(state)
    return theirs, ours


def test_cplrp_equals_lxt_own_torchvision_path() -> None:
    needs_lxt()
    from lxt.efficient import monkey_patch
    from lxt.efficient.models import vit_torch

    theirs, ours = torchvision_twin()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(theirs(images), ours(images), atol=1e-5)
    # lxt patches torch's classes for the whole process; put them back after
    classes = list(vit_torch.cp_LRP)
    saved = {cls: {k: vars(cls)[k] for k in PATCHED_ATTRIBUTES if k in vars(cls)} for cls in classes}
    try:
        monkey_patch(vit_torch.vision_transformer, vit_torch.cp_LRP)
        leaf = images.clone().requires_grad_(True)
        theirs(leaf).sum().backward()
        assert leaf.grad is not None
        want = (leaf * leaf.grad).sum(1).detach()
    finally:
        for cls in classes:
            for key in PATCHED_ATTRIBUTES:
                if key in saved[cls]:
                    setattr(cls, key, saved[cls][key])
                elif key in vars(cls):
                    delattr(cls, key)
    assert all(vars(cls).get("forward") is saved[cls].get("forward") for cls in classes)
    got = attribute(ours, images, "cplrp", target="output", normalise="raw").grid
    assert want.abs().max() > 0
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_patches_are_scoped_to_the_call_and_the_model(vit: nn.Module, images: Tensor) -> None:
    needs_lxt()
    class_forwards = {cls: vars(cls).get("forward") for cls in {type(m) for m in vit.modules()}}
    with torch.no_grad():
        before = vit(images)
    relevance = lrp_relevance(vit, images, lambda out: out[:, 0], "attnlrp")
    with lrp_patched(vit, "cplrp"):
        patched = [m for m in vit.modules() if "forward" in vars(m)]
        assert len(patched) == 2 * 3 + 2 * 2 + 1  # per block: attn, mlp, 2 norms; 2 GELUs; final norm
    assert not any(name in vars(m) for m in vit.modules() for name in PATCHED_ATTRIBUTES)
    assert class_forwards == {cls: vars(cls).get("forward") for cls in class_forwards}
    with torch.no_grad():
        assert torch.equal(vit(images), before)
    assert relevance.shape == images.shape
