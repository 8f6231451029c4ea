from __future__ import annotations

import gc
import weakref

import psutil
import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import attribute
from gradsum.attribution.adapters import HOOK_TABLES
from gradsum.errors import AttributionError


def _state(model: nn.Module) -> dict[str, object]:
    return {
        "hooks": sum(len(getattr(m, t, {})) for m in model.modules() for t in HOOK_TABLES),
        "training": [m.training for m in model.modules()],
        "fused": [getattr(m, "fused_attn", None) for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
        "dtype": [p.dtype for p in model.parameters()],
    }


def test_a_call_that_raises_leaves_nothing_behind(vit: nn.Module, images: Tensor) -> None:
    vit.train()
    before = _state(vit)
    with pytest.raises(AttributionError, match=r"blocks\.1\.norm1"):
        attribute(vit, images, "gradcam", layer="blocks.1.nrm1")

    def explode(module: nn.Module, args: object, out: Tensor) -> None:
        raise RuntimeError("boom")

    handle = vit.head.register_forward_hook(explode)
    hooked = _state(vit)
    with pytest.raises(RuntimeError, match="boom"):
        attribute(vit, images, "gradcam")
    assert _state(vit) == hooked
    handle.remove()
    assert _state(vit) == before


def test_no_graph_survives_a_call(cnn: nn.Module, images: Tensor) -> None:
    kept: list[weakref.ref[Tensor]] = []
    handle = cnn.features[2].register_forward_hook(lambda m, a, out: kept.append(weakref.ref(out)))
    attribute(cnn, images, "gradcam")
    handle.remove()
    gc.collect()
    assert kept and all(ref() is None for ref in kept)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_are_attributed_in_float32(
    dtype: torch.dtype, cnn: nn.Module, images: Tensor
) -> None:
    reference = attribute(cnn, images, "gradcam")
    half = cnn.to(dtype)
    weights = [p.detach().clone() for p in half.parameters()]
    result = attribute(half, images, "gradcam")
    assert result.maps.dtype == torch.float32
    assert all(p.dtype == dtype for p in half.parameters())
    assert all(torch.equal(p, w) for p, w in zip(half.parameters(), weights, strict=True))
    assert (result.maps - reference.maps).abs().max() < 0.05


#: method → calls after the settling ones: the row-propagated attention methods keep per-block captures
#: and hooks during a call, so a thousand calls of the cheapest show that none of it accumulates
REPEATS = {"gradcam": 30, "rollout": 1000, "gradrollout": 300, "chefer_lrp": 100}


@pytest.mark.parametrize("method", sorted(REPEATS))
def test_repeated_calls_keep_resident_memory_flat(method: str, vit: nn.Module, images: Tensor) -> None:
    process = psutil.Process()
    for _ in range(10):
        attribute(vit, images, method)
    gc.collect()
    settled = process.memory_info().rss
    for _ in range(REPEATS[method]):
        attribute(vit, images, method)
    gc.collect()
    assert process.memory_info().rss <= settled * 1.05
    assert sum(len(getattr(m, t, {})) for m in vit.modules() for t in HOOK_TABLES) == 0
