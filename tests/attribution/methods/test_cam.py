from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import tqdm
from torch import Tensor

from gradsum.attribution import METHODS, attribute
from gradsum.attribution.methods.cam import FAST, LIBRARY_BAR_MODULES, SPECS
from gradsum.errors import AttributionError

LIBRARY = sorted(SPECS)


@pytest.mark.parametrize("model_name", ["cnn", "hybrid", "vit", "vit_avg"])
@pytest.mark.parametrize("method", LIBRARY)
def test_every_library_method_runs_where_it_applies(
    method: str, model_name: str, images: Tensor, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(model_name)
    cls = METHODS.get(f"lib:{method}")
    family = "cnn" if model_name == "cnn" else "hybrid" if model_name == "hybrid" else "vit"
    if family not in cls.applies_to:
        with pytest.raises(AttributionError, match=f"not {family}"):
            attribute(model, images[:2], f"lib:{method}")
        return
    result = attribute(model, images[:2], f"lib:{method}")
    assert result.grid.shape == (2, 32, 64)
    assert torch.isfinite(result.maps).all()
    # the library min–max normalises every map after ReLU: each spans [0, 1] or is all zero
    assert result.maps.amin(dim=(1, 2)).max() == 0
    peaks = result.maps.amax(dim=(1, 2))
    assert ((peaks > 0.99) | (peaks == 0)).all()
    assert "pytorch-grad-cam" in result.describe()["grid"]


def test_methods_without_fast_path_keep_their_plain_name(cnn: torch.nn.Module, images: Tensor) -> None:
    plain = attribute(cnn, images[:2], "eigencam")
    lib = attribute(cnn, images[:2], "lib:eigencam")
    assert torch.equal(plain.maps, lib.maps)
    assert "finercam" not in METHODS


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_the_librarys_per_call_bars_stay_out_of_the_log(
    method: str, cnn: torch.nn.Module, images: Tensor, capfd: pytest.CaptureFixture[str]
) -> None:
    modules = [importlib.import_module(name) for name in LIBRARY_BAR_MODULES]
    attribute(cnn, images[:1], method)
    assert "it/s" not in capfd.readouterr().err
    # the library's modules are as they were: a direct call still draws its bar
    assert all(module.tqdm is tqdm for module in modules)


def test_shapleycam_refuses_token_layers(
    vit: torch.nn.Module, hybrid: torch.nn.Module, images: Tensor
) -> None:
    with pytest.raises(AttributionError, match="applies to cnn/hybrid, not vit"):
        attribute(vit, images[:2], "lib:shapleycam")
    with pytest.raises(AttributionError, match="needs a 4-D feature map"):
        attribute(hybrid, images[:2], "lib:shapleycam", layer="transformer")


def test_shapleycam_reads_a_hybrid_at_its_tokenizer_when_no_layer_is_named(
    hybrid: torch.nn.Module, images: Tensor
) -> None:
    # the default a run uses for every model the method applies to (the leaderboard names no layer)
    plain = attribute(hybrid, images[:2], "shapleycam")
    named = attribute(hybrid, images[:2], "shapleycam", layer="tokenizer")
    assert torch.equal(plain.maps, named.maps) and plain.layer == named.layer


class _Signed:
    """The oracle's target, written apart from GradSUM's: a fixed sign times the sample's scalar output."""

    def __init__(self, sign: float) -> None:
        self.sign = sign

    def __call__(self, row: Tensor) -> Tensor:
        return self.sign * row.sum()


def _tokens_to_grid(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, 1 + h·w, C) ViT tokens → (B, C, h, w): the class token dropped, patches in row-major order."""
    patches = tokens[:, 1:, :]
    return patches.reshape(tokens.shape[0], *grid, tokens.shape[2]).permute(0, 3, 1, 2)


#: methods compared with a direct pytorch-grad-cam call; RandomCAM's weights are GradSUM's own seeded draw,
#: not the library's (numpy's global generator), so no direct call reproduces them
ORACLE = sorted(set(LIBRARY) - {"randomcam"})
SIGNS = [1.0, -1.0, -1.0, 1.0]


@pytest.mark.parametrize("model_name", ["cnn", "vit"])
@pytest.mark.parametrize("method", ORACLE)
def test_library_path_equals_a_direct_pytorch_grad_cam_call(
    method: str, model_name: str, images: Tensor, request: pytest.FixtureRequest
) -> None:
    """Same model, target layer and per-sample signed target: the maps agree value for value, GradSUM's
    min–max on top of the library's own (which leaves a map already in [0, 1] as it is)."""
    library = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit

    model = request.getfixturevalue(model_name)
    spec = SPECS[method]
    family = "cnn" if model_name == "cnn" else "vit"
    if family not in spec.applies_to or (family == "vit" and not spec.token_layers):
        pytest.skip(f"{method} does not apply to a {family}")
    if family == "vit" and spec.needs_attention:
        pytest.skip(f"{method}: double backward through timm's fused attention is not implemented on CPU")
    ours = attribute(model, images, f"lib:{method}", target=SIGNS, normalise="minmax")
    kwargs: dict[str, object] = {}
    if method == "ablationcam":
        kwargs = {
            "ablation_layer": AblationLayerVit() if family == "vit" else AblationLayer(),
            "batch_size": 32,
        }
    layers = [] if not spec.uses_layer else [model.get_submodule(p) for p in ours.layer.split("+")]
    reshape = None if family == "cnn" else (lambda t: _tokens_to_grid(t, (4, 8)))
    cam = getattr(library, spec.class_name)(
        model=model, target_layers=layers, reshape_transform=reshape, **kwargs
    )
    if method == "scorecam":
        cam.batch_size = 16
    oracle = cam(input_tensor=images, targets=[_Signed(s) for s in SIGNS])
    # emptied before release: the library's own clear() fails on ShapleyCAM's view gradients
    store = cam.activations_and_grads
    store.activations, store.gradients = [], []
    store.release()
    assert oracle.shape == tuple(ours.maps.shape)
    assert np.abs(oracle).max() > 0
    np.testing.assert_allclose(ours.maps.cpu().numpy(), oracle, atol=1e-5, rtol=0)
    if method in FAST:
        # the fast path's own torch code against the same direct call (test_fastcam compares it to `lib:`)
        fast = attribute(model, images, method, target=SIGNS, normalise="minmax")
        np.testing.assert_allclose(fast.maps.cpu().numpy(), oracle, atol=1e-4, rtol=0)
