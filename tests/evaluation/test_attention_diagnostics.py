"""Attention diagnostics equal their definition on whole attention maps, though formed a few rows at a time."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import timm
import torch
from torch import Tensor, nn

from gradsum.aggregation import class_scores, per_image_frame
from gradsum.attribution import attention_math
from gradsum.attribution.adapters import attribution_mode
from gradsum.attribution.attention_capture import forward_capturing, pooled_tokens, readout_weights
from gradsum.attribution.attention_math import read_out
from gradsum.attribution.base import upsample
from gradsum.attribution.normalise import normalise
from gradsum.evaluation.attention import AttentionDiagnostics

SIZE = (32, 64)


def entropy_ratio(attention: Tensor) -> Tensor:
    """The definition on a whole map: mean row entropy per head ÷ a uniform row's, (B, heads, N, N) → (B, heads)."""
    entropy = -(attention * attention.clamp_min(1e-12).log()).sum(-1)
    return entropy.mean(-1) / math.log(attention.shape[-1])


def tiny_vit(global_pool: str) -> nn.Module:
    torch.manual_seed(1)
    pooling = {} if global_pool == "token" else {"class_token": False, "global_pool": global_pool}
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=8, num_classes=1,
        depth=2, embed_dim=32, num_heads=2, **pooling,
    ).eval()  # fmt: skip


@pytest.mark.parametrize("global_pool", ["token", "avg", "max"])
def test_diagnostics_equal_the_whole_attention_maps(
    global_pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_vit(global_pool)
    images = torch.rand(3, 3, *SIZE, generator=torch.Generator().manual_seed(4))
    labels = torch.randint(0, 34, (3, *SIZE), generator=torch.Generator().manual_seed(5))
    whole: dict[int, Tensor] = {}
    with attribution_mode(model, needs_attention=True), torch.no_grad(), pooled_tokens(model) as pooled:
        forward_capturing(model, images, range(2), whole.__setitem__)
    weights, prefix = readout_weights(model, pooled), model.num_prefix_tokens
    # two query rows at a time: 2 heads × 3 images × 33 or 32 tokens × 2 rows
    monkeypatch.setattr(attention_math, "CHUNK_ENTRIES", 3 * 2 * 33 * 2)
    # raw maps: min-max of a near-uniform random-weight readout would magnify float rounding 1,000-fold
    diagnostics = AttentionDiagnostics("vit", normalisation="raw")
    diagnostics.update(model, images, labels, ["a", "b", "c"], resolution="label")
    tables = diagnostics.shard_tables()
    sums = tables["attention_entropy"].set_index(["layer", "head"])["entropy_sum"]
    for layer in range(2):
        want = entropy_ratio(whole[layer]).sum(0)
        got = torch.tensor([sums[(layer, head)] for head in range(2)], dtype=torch.float32)
        assert torch.allclose(got, want, rtol=1e-5), layer
        assert float(want.min()) > 0 and float(want.max()) <= 3 + 1e-6  # a ratio ≤ 1 per image
        row = read_out(whole[layer].mean(1), weights, prefix).reshape(3, 4, 8)
        scores = class_scores(normalise(upsample(row, SIZE), "raw"), labels, resolution="label")
        want_rows = per_image_frame(scores, ["a", "b", "c"], "vit", f"layer {layer}")
        rows = tables["attention_rows"]
        got_rows = rows[rows["method"] == f"layer {layer}"].reset_index(drop=True)
        assert len(got_rows) == len(want_rows) > 0
        pd.testing.assert_frame_equal(got_rows, want_rows, check_exact=False, rtol=1e-5, atol=1e-7)
