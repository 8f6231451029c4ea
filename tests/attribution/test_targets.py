from __future__ import annotations

import pytest
import torch

from gradsum.attribution.targets import TARGETS, per_sample, resolve_target
from gradsum.errors import AttributionError, UnknownNameError

OUT = torch.tensor([[0.5], [-2.0], [0.0]])


@pytest.mark.parametrize(
    ("task", "name", "expected"),
    [
        ("steering", "output", [0.5, -2.0, 0.0]),
        ("steering", "negative", [-0.5, 2.0, 0.0]),
        ("steering", "direction", [0.5, 2.0, 0.0]),
        ("obstacle", "positive", [0.5, -2.0, 0.0]),
        ("obstacle", "negative", [-0.5, 2.0, 0.0]),
        ("obstacle", "predicted", [0.5, 2.0, 0.0]),
    ],
)
def test_named_targets_select_signed_outputs(task: str, name: str, expected: list[float]) -> None:
    assert resolve_target(name, task).select(OUT).tolist() == expected


def test_default_targets_follow_the_task() -> None:
    assert resolve_target(None, "steering").name == "direction"
    assert resolve_target(None, "obstacle").name == "positive"


def test_per_sample_signs_apply_row_by_row_and_keep_the_gradient() -> None:
    output = OUT.clone().requires_grad_(True)
    target = resolve_target([1, -1, -1])
    target.select(output).sum().backward()
    assert output.grad is not None
    assert output.grad[:, 0].tolist() == [1.0, -1.0, -1.0]
    assert per_sample(torch.tensor([1.0, -1.0])).fixed == (1.0, -1.0)


def test_per_sample_count_must_match_the_batch() -> None:
    with pytest.raises(AttributionError, match="2 per-sample targets for a batch of 3"):
        resolve_target([1, -1]).select(OUT)


def test_bad_targets_are_named() -> None:
    with pytest.raises(UnknownNameError, match="direction"):
        resolve_target("predicted", "steering")
    with pytest.raises(AttributionError, match=r"\+1 or -1"):
        per_sample([2.0])
    assert set(TARGETS) == {"steering", "obstacle"}
