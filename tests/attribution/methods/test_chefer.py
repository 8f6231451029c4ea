from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import attribute
from gradsum.attribution.attention_math import gradient_rollout
from gradsum.attribution.methods.chefer import (
    linear_relevance,
    product_relevance,
    residual_relevance,
    safe_divide,
)


def test_linear_rule_gives_relevance_to_positive_contributions_only() -> None:
    # y = 2·x0 − 1·x1 + 3·x2 at x = (1, 2, −1): contributions 2, −2, −3; only 2 is positive
    weight = torch.tensor([[2.0, -1.0, 3.0]])
    inputs = torch.tensor([[1.0, 2.0, -1.0]])
    assert torch.allclose(
        linear_relevance(inputs, weight, torch.tensor([[1.0]])), torch.tensor([[1.0, 0, 0]])
    )
    # two outputs: the second (w = (1, 1, −2)) has positive contributions 1, 2, 2 → relevance 4 split 1:2:2
    weight = torch.tensor([[2.0, -1.0, 3.0], [1.0, 1.0, -2.0]])
    got = linear_relevance(inputs, weight, torch.tensor([[1.0, 4.0]]))
    assert torch.allclose(got, torch.tensor([[1.0 + 0.8, 1.6, 1.6]]))
    # a per-sample signed head: −W makes −2·x1 and −3·x2 the positive contributions (2 and 3 → 2:3)
    signed = torch.tensor([-1.0]).reshape(1, 1, 1) * weight[:1]
    got = linear_relevance(inputs[:, None], signed, torch.ones(1, 1, 1))
    assert torch.allclose(got, torch.tensor([[[0.0, 0.4, 0.6]]]))


def test_residual_rule_rescales_each_branch_to_its_share() -> None:
    skip = torch.tensor([[1.0, 3.0]])
    branch = torch.tensor([[1.0, -1.0]])
    relevance = torch.tensor([[2.0, 4.0]])
    # gradient×input: skip (1, 6), branch (1, −2); sums 7, −1 → shares 7/8, 1/8 of the total 6
    to_skip, to_branch = residual_relevance(skip, branch, relevance)
    assert torch.allclose(to_skip, torch.tensor([[1.0, 6.0]]) * (6 * 7 / 8) / 7)
    assert torch.allclose(to_branch, torch.tensor([[1.0, -2.0]]) * (6 / 8) / -1)
    assert torch.allclose(to_skip.sum() + to_branch.sum(), relevance.sum())


def test_product_rule_halves_gradient_times_input() -> None:
    attention = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    values = torch.tensor([[2.0], [4.0]])
    relevance = torch.tensor([[6.0], [2.0]])  # outputs A·v = (3, 2)
    to_attention, to_values = product_relevance(attention, values, relevance)
    # row 0: 0.5·2 and 0.5·4 of 3 → relevance 6 split 2:4, halved; row 1: all of 2 to v0, halved
    assert torch.allclose(to_attention, torch.tensor([[1.0, 2.0], [1.0, 0.0]]))
    assert torch.allclose(to_values, torch.tensor([[2.0], [2.0]]))
    assert torch.equal(safe_divide(torch.ones(2), torch.zeros(2)), torch.zeros(2))


def test_two_block_rollout_of_relevance_equals_a_hand_computation() -> None:
    # the ICCV toy with LRP relevances in place of the attention: Ā = mean_h (∇A ⊙ R_A)⁺, R ← R + Ā·R
    relevances = [torch.tensor([[[[0.5, 0.0], [0.25, 0.25]], [[0.0, 1.0], [0.5, 0.0]]]])]
    relevances.append(torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]]))
    gradients = [torch.tensor([[[[2.0, 1.0], [-4.0, 2.0]], [[1.0, 2.0], [2.0, 0.0]]]])]
    gradients.append(torch.tensor([[[[1.0, 3.0], [1.0, 1.0]], [[3.0, 0.0], [0.0, -1.0]]]]))
    # block 1: heads (1, 0; 0, .5) and (0, 2; 1, 0) → Ā1 = (.5, 1; .5, .25); block 2: Ā2 = (2, 0; 0, 0)
    first = torch.eye(2) + torch.tensor([[0.5, 1.0], [0.5, 0.25]])
    expected = first + torch.tensor([[2.0, 0.0], [0.0, 0.0]]) @ first
    assert torch.allclose(gradient_rollout(relevances, gradients), expected[None])


@pytest.mark.parametrize("name", ["vit", "vit_avg", "vit_max", "hybrid"])
def test_relevance_is_conserved_through_the_blocks(
    name: str, images: Tensor, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rules are conservative: the relevance 1 that starts at the output reaches the lowest block's
    # input whole (here with the attention formed two query rows at a time)
    from gradsum.attribution import attention_math
    from gradsum.attribution.methods import chefer

    monkeypatch.setattr(attention_math, "CHUNK_ENTRIES", 4 * 2 * 33 * 2)
    model = request.getfixturevalue(name)
    below: list[Tensor] = []
    original = chefer.block_relevance

    def spy(*args: Any, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
        out = original(*args, **(kwargs | {"below": True}))
        below.append(out[1])
        return out

    monkeypatch.setattr(chefer, "block_relevance", spy)
    grid = attribute(model, images, "chefer_lrp", target=[1.0, -1.0, 1.0, -1.0], normalise="raw").grid
    assert torch.isfinite(grid).all()
    assert len(below) == len(model.blocks)
    assert torch.allclose(below[-1].sum((1, 2)), torch.ones(4), atol=1e-4)


def test_differs_from_gradient_rollout_where_it_should(vit: nn.Module, images: Tensor) -> None:
    # the same aggregation with LRP relevance R_A in place of the attention A: a different map, not a
    # rescaled copy of gradrollout's
    lrp = attribute(vit, images, "chefer_lrp", normalise="raw").grid
    grad = attribute(vit, images, "gradrollout", normalise="raw").grid
    ratio = lrp / grad.clamp(min=1e-12)
    assert ratio.std() / ratio.mean() > 0.1
    # R_A starts from relevance 1 at the output: scaling the head scales only the gradient factor ∇A, so
    # the last block's relevance map is unchanged, while the attention map of gradrollout never depends on it
    from gradsum.attribution.methods.chefer import head_relevance

    tokens = torch.randn(2, 5, 32)
    pooled = tokens[:, 0]
    before = head_relevance(vit, tokens, pooled, torch.tensor([1.0, -1.0]))
    with torch.no_grad():
        vit.head.weight *= 10
    after = head_relevance(vit, tokens, pooled, torch.tensor([1.0, -1.0]))
    assert torch.allclose(before, after) and torch.allclose(before.sum((1, 2)), torch.ones(2))
