"""The label grammar of `gradsum.names`: every kind of label formats and parses back."""

from __future__ import annotations

import pytest

from gradsum.errors import GradSUMError, SpecError
from gradsum.names import (
    CONTROL_SOURCE,
    LIBRARY_SOURCE,
    NULL_SOURCE,
    MethodLabel,
    check_model_name,
    pair_label,
    parse_method,
    parse_pair,
    part_label,
    qualified,
)


@pytest.mark.parametrize(
    ("stored", "formatted", "expected"),
    [
        ("gradcam", "gradcam", MethodLabel("gradcam")),
        ("lib:gradcam", qualified(LIBRARY_SOURCE, "gradcam"), MethodLabel("gradcam", source="lib")),
        ("null:random", qualified(NULL_SOURCE, "random"), MethodLabel("random", source="null")),
        ("control:oracle", qualified(CONTROL_SOURCE, "oracle"), MethodLabel("oracle", source="control")),
        ("split/attention", part_label("split", "attention"), MethodLabel("split", part="attention")),
    ],
)
def test_method_labels_keep_their_stored_form_and_parse_back(
    stored: str, formatted: str, expected: MethodLabel
) -> None:
    assert formatted == stored  # the form results tables (profiles.csv) have always held
    assert parse_method(stored) == expected


@pytest.mark.parametrize(
    ("model", "method"),
    [
        ("hybrid_vit", "gradcam"),
        ("hybrid_vit", "split/attention"),
        ("vit", "lib:gradcam"),
        ("vit", "null:random"),
        ("vit", "control:oracle"),
        ("run1:hybrid_vit", "split/attention"),
        ("run-2.b:vit", "lib:gradcam"),
    ],
)
def test_pair_labels_split_at_the_first_level_separator(model: str, method: str) -> None:
    label = pair_label(model, method)
    assert parse_pair(label) == (model, method)


def test_the_compare_example_of_a_part_names_the_model_alone() -> None:
    assert parse_pair("hybrid/split/attention") == ("hybrid", "split/attention")


@pytest.mark.parametrize("label", ["cnn", "cnn/", "/gradcam"])
def test_a_pair_label_needs_a_model_and_a_method(label: str) -> None:
    with pytest.raises(GradSUMError, match=rf"--pair: '{label}' is not a model/method label"):
        parse_pair(label, "--pair")


@pytest.mark.parametrize("name", ["hybrid/split", "run:vit", ""])
def test_model_names_cannot_hold_a_separator(name: str) -> None:
    with pytest.raises(
        SpecError, match=r"models: model name .* must be non-empty and hold neither '/' nor ':'"
    ):
        check_model_name(name, "models")
    check_model_name("hybrid_vit-2.b", "models")
