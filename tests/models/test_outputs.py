"""`output_values`: the one scalar per image that a model's output is."""

from __future__ import annotations

import pytest
import torch

from gradsum.errors import AttributionError
from gradsum.models.outputs import output_values


def test_a_column_head_and_a_flat_output_give_the_same_values() -> None:
    column = torch.tensor([[0.5], [-2.0], [0.0]])
    assert output_values(column).tolist() == [0.5, -2.0, 0.0]
    assert output_values(torch.tensor([0.5, -2.0])).tolist() == [0.5, -2.0]


def test_a_wider_output_is_refused_naming_the_argument() -> None:
    with pytest.raises(
        AttributionError, match=r"logits: expected a \(B,1\) or \(B,\) model output, got \(3, 2\)"
    ):
        output_values(torch.zeros(3, 2), "logits")
