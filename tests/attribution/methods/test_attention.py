from __future__ import annotations

import weakref

import pytest
import torch
from matrix_oracle import capture
from torch import Tensor, nn

from gradsum.attribution import attention_math, attribute
from gradsum.attribution.adapters import HOOK_TABLES
from gradsum.attribution.attention_math import (
    POOLING_WEIGHTS,
    HeadTensors,
    discard_lowest,
    gradient_rollout,
    read_out,
    residual_attention,
    rollout,
)
from gradsum.errors import AttributionError, UnknownNameError

ATTENTION_METHODS = ["attention", "rollout", "gradrollout", "attention_gradcam"]


def heads(*maps: list[list[float]]) -> Tensor:
    """One image's attention (1, heads, N, N) from per-head matrices."""
    return torch.tensor([maps], dtype=torch.float32)


def hooks_left(model: nn.Module) -> int:
    return sum(len(getattr(m, table, {})) for m in model.modules() for table in HOOK_TABLES)


def test_rollout_equals_a_hand_computation() -> None:
    # block 1: heads swap/identity → mean ½ everywhere → (A+I) rows [.75 .25; .25 .75]
    first = heads([[1, 0], [0, 1]], [[0, 1], [1, 0]])
    # block 2: both heads look at token 0 → (A+I) rows [1 0; .5 .5]
    second = heads([[1, 0], [1, 0]], [[1, 0], [1, 0]])
    expected = torch.tensor([[[0.75, 0.25], [0.5, 0.5]]])
    assert torch.allclose(rollout([first, second]), expected)
    # max fusion: block 1 becomes [1 1; 1 1] → [2/3 1/3; 1/3 2/3]
    assert torch.allclose(
        rollout([first, second], head_fusion="max"), torch.tensor([[[2 / 3, 1 / 3], [0.5, 0.5]]])
    )
    assert torch.allclose(rollout([first, second], start_layer=1), torch.tensor([[[1.0, 0.0], [0.5, 0.5]]]))


def test_rows_are_normalised_per_row_and_discard_keeps_the_class_entry() -> None:
    # vit-explain divides by sum(-1) without keepdim, i.e. column j by row-sum j
    assert torch.allclose(
        residual_attention(torch.tensor([[[1.0, 0.0], [3.0, 1.0]]])), torch.tensor([[[1.0, 0.0], [0.6, 0.4]]])
    )
    fused = torch.tensor([[[0.1, 0.2], [0.3, 0.4]], [[0.4, 0.3], [0.2, 0.1]]])
    kept = discard_lowest(fused, 0.5, protect_first=True)
    assert torch.equal(kept, torch.tensor([[[0.1, 0.0], [0.0, 0.4]], [[0.4, 0.3], [0.0, 0.0]]]))
    assert torch.equal(
        discard_lowest(fused, 0.5, protect_first=False)[0], torch.tensor([[0.0, 0.0], [0.3, 0.4]])
    )


def test_gradient_rollout_equals_a_hand_computation() -> None:
    half = [[0.5, 0.5], [0.5, 0.5]]
    attentions = [heads(half, half), heads([[1, 0], [0, 1]], [[1, 0], [0, 1]])]
    gradients = [heads([[1, -1], [2, 0]], [[1, 1], [-2, 0]]), heads([[2, 5], [1, -1]], [[2, 5], [1, -1]])]
    # block 1: mean_h (G⊙A)⁺ = [.5 .25; .5 0], R = I + that; block 2: Ā = [2 0; 0 0], R += Ā·R
    expected = torch.tensor([[[4.5, 0.75], [0.5, 1.0]]])
    assert torch.allclose(gradient_rollout(attentions, gradients), expected)
    assert torch.allclose(
        gradient_rollout(attentions, gradients, start_layer=1), torch.tensor([[[3.0, 0.0], [0.0, 1.0]]])
    )


def test_readouts_drop_prefix_tokens() -> None:
    matrix = torch.arange(16.0).reshape(1, 4, 4)
    tokens = torch.zeros(1, 4, 3)

    def readout(pool: str, prefix: int) -> Tensor:
        return read_out(matrix, POOLING_WEIGHTS.get(pool)(tokens, prefix), prefix)

    assert torch.equal(readout("token", 2), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(readout("avg", 2), torch.tensor([[12.0, 13.0]]))
    assert torch.equal(readout("avg", 0), torch.tensor([[6.0, 7.0, 8.0, 9.0]]))


def test_max_pooling_weights_rows_by_the_channels_each_token_wins() -> None:
    # one prefix token (never pooled), three patch tokens, four channels: the maxima of channels 0, 1
    # come from patch 1, of channel 2 from patch 2, of channel 3 from patch 3
    tokens = torch.tensor(
        [[[9.0, 9.0, 9.0, 9.0], [5.0, 4.0, 0.0, 0.0], [1.0, 1.0, 3.0, 0.0], [0.0, 0.0, 1.0, 2.0]]]
    )
    assert torch.equal(POOLING_WEIGHTS.get("max")(tokens, 1), torch.tensor([[0.0, 0.5, 0.25, 0.25]]))
    avgmax = POOLING_WEIGHTS.get("avgmax")(tokens, 1)
    assert torch.allclose(avgmax, torch.tensor([[0.0, 5 / 12, 7 / 24, 7 / 24]]))
    # the weights are max pooling's gradient: d(sum of pooled channels)/d(token) summed over channels
    leaf = tokens.clone().requires_grad_(True)
    leaf[:, 1:].amax(1).sum().backward()
    assert leaf.grad is not None
    assert torch.equal(leaf.grad.sum(-1) / 4, POOLING_WEIGHTS.get("max")(tokens, 1))


def test_attention_gradcam_weights_heads_by_their_gradient(hybrid: nn.Module, images: Tensor) -> None:
    attentions, gradients, _ = capture(hybrid, images)
    rows, grads = attentions[-1][:, :, 0, 1:], gradients[-1][:, :, 0, 1:]
    want = (grads.mean(-1, keepdim=True) * rows).mean(1).clamp(min=0).reshape(len(images), 4, 8)
    got = attribute(hybrid, images, "attention_gradcam", normalise="raw").grid
    assert want.max() > 0
    assert torch.allclose(got, want, atol=1e-7)


def test_batched_gradient_rollout_equals_one_image_at_a_time(vit_avg: nn.Module, images: Tensor) -> None:
    batched = attribute(vit_avg, images, "gradrollout", normalise="raw").grid
    alone = torch.cat(
        [attribute(vit_avg, images[i : i + 1], "gradrollout", normalise="raw").grid for i in range(4)]
    )
    assert torch.allclose(batched, alone, atol=1e-6)


def test_state_is_restored_after_calls_and_after_a_call_that_raised(vit: nn.Module, images: Tensor) -> None:
    vit.blocks[0].attn.fused_attn = True
    vit.blocks[1].attn.fused_attn = False
    for method in ATTENTION_METHODS:
        attribute(vit, images, method)
        assert [b.attn.fused_attn for b in vit.blocks] == [True, False]
        assert hooks_left(vit) == 0
        assert not vit.training

    def fail(*_args: object) -> None:
        raise RuntimeError("boom")

    handle = vit.blocks[1].register_forward_hook(fail)
    for method in ATTENTION_METHODS:
        with pytest.raises(RuntimeError, match="boom"):
            attribute(vit, images, method)
        assert [b.attn.fused_attn for b in vit.blocks] == [True, False]
        assert hooks_left(vit) == 1
    handle.remove()
    assert hooks_left(vit) == 0


def test_attention_methods_refuse_cnns_and_non_timm_attention(
    cnn: nn.Module, vit: nn.Module, images: Tensor
) -> None:
    for method in ATTENTION_METHODS:
        with pytest.raises(AttributionError, match="applies to hybrid/vit, not cnn"):
            attribute(cnn, images, method)
    del vit.blocks[1].attn.q_norm
    with pytest.raises(AttributionError, match=r"blocks\.1\.attn \(Attention\) has no q_norm"):
        attribute(vit, images, "rollout")
    assert hooks_left(vit) == 0


def test_bad_options_and_unsupported_pooling(vit: nn.Module, images: Tensor) -> None:
    with pytest.raises(AttributionError, match="start_layer: 2 is outside"):
        attribute(vit, images, "gradrollout", start_layer=2)
    with pytest.raises(AttributionError, match="discard_ratio"):
        attribute(vit, images, "rollout", discard_ratio=1.0)
    with pytest.raises(AttributionError, match="recompute must be true or false, got 'no'"):
        attribute(vit, images, "gradrollout", recompute="no")
    with pytest.raises(UnknownNameError, match="head_fusion"):
        attribute(vit, images, "rollout", head_fusion="median")
    vit.global_pool = "map"  # timm's attention pooling: no readout through token rows
    with pytest.raises(AttributionError, match=r"global_pool='map'.*avg, avgmax, max, token"):
        attribute(vit, images, "attention")


def test_discarding_changes_rollout_but_keeps_it_finite(vit: nn.Module, images: Tensor) -> None:
    plain = attribute(vit, images, "rollout", normalise="raw").grid
    sparse = attribute(vit, images, "rollout", normalise="raw", discard_ratio=0.9, head_fusion="max").grid
    assert torch.isfinite(sparse).all() and (sparse >= 0).all()
    assert not torch.allclose(plain, sparse)


def test_an_output_selected_by_name_is_explained(vit: nn.Module, images: Tensor) -> None:
    class TwoOutputs(nn.Module):
        """Stands in for a model whose forward returns named parts: the ViT's output and its double."""

        def forward(self, output: Tensor) -> dict[str, Tensor]:
            return {"steer": output, "twice": 2 * output}

    plain = attribute(vit, images, "gradrollout", normalise="raw").grid
    vit.head = nn.Sequential(vit.head, TwoOutputs())
    twice = attribute(vit, images, "gradrollout", normalise="raw", output="twice").grid
    assert torch.allclose(twice, 2 * plain, atol=1e-6)


def test_no_graph_outlives_the_call_and_no_attention_is_formed_whole(
    vit: nn.Module, images: Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a budget of three query rows of (4 images × 2 heads × 33 tokens): the 33×33 attention of a block
    # is only ever formed three rows at a time
    monkeypatch.setattr(attention_math, "CHUNK_ENTRIES", 4 * 2 * 33 * 3)
    formed: list[tuple[int, ...]] = []
    refs: list[weakref.ref[Tensor]] = []
    scores = HeadTensors.scores

    def watch_scores(self: HeadTensors, rows: slice) -> Tensor:
        out = scores(self, rows)
        formed.append(tuple(out.shape))
        refs.append(weakref.ref(out))
        return out

    monkeypatch.setattr(HeadTensors, "scores", watch_scores)
    handles = [
        block.attn.qkv.register_forward_hook(lambda _m, _a, o: refs.append(weakref.ref(o)))
        for block in vit.blocks
    ]
    try:
        for method in ("rollout", "gradrollout", "chefer_lrp", "attention", "attention_gradcam"):
            attribute(vit, images, method)
        attribute(vit, images, "gradrollout", recompute=True)
    finally:
        for handle in handles:
            handle.remove()
    assert formed and max(shape[-2] for shape in formed) == 3
    assert all(shape[-1] == 33 for shape in formed)
    assert all(ref() is None for ref in refs)
    assert all(param.grad is None for param in vit.parameters())


@pytest.mark.parametrize("recompute", [False, True])
def test_recompute_holds_one_block_graph_at_a_time(recompute: bool, vit: nn.Module, images: Tensor) -> None:
    # the attention output of each block's graph forward: without recompute every block's is alive until
    # the backward; with it, the previous block's is gone before the next block is re-run
    refs: list[weakref.ref[Tensor]] = []
    alive: list[int] = []

    def watch(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        if args[0].requires_grad:
            alive.append(sum(ref() is not None for ref in refs))
            refs.append(weakref.ref(args[0]))

    handles = [block.attn.norm.register_forward_pre_hook(watch) for block in vit.blocks]
    try:
        attribute(vit, images, "gradrollout", recompute=recompute)
    finally:
        for handle in handles:
            handle.remove()
    assert alive == ([0, 0] if recompute else [0, 1])
