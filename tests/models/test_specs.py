"""Declarative model specs: built-ins, unknown fields and names."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradsum.errors import SpecError, UnknownNameError
from gradsum.models import ModelSpec, builtin_specs, load_spec, model_family

DEFAULTS = {
    "pilotnet": ("steering", "cnn"),
    "vit": ("steering", "vit"),
    "vit_avg": ("steering", "vit"),
    "hybrid_vit": ("steering", "hybrid"),
    "compact_cnn": ("obstacle", "cnn"),
    "vit_obstacle": ("obstacle", "vit"),
    "hybrid_obstacle": ("obstacle", "hybrid"),
    "resnet18": ("steering", "cnn"),
    "deit_tiny": ("steering", "vit"),
    "hybrid_deit": ("steering", "hybrid"),
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_builtin_specs_load_and_build(name: str) -> None:
    spec = load_spec(name)
    assert spec.name == name
    assert (spec.task, model_family(spec.build())) == DEFAULTS[name]
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_builtin_names_are_the_pipeline_names() -> None:
    assert set(builtin_specs().names()) == set(DEFAULTS)
    assert load_spec("vit").arch["class_token"] is True
    assert load_spec("vit_avg").arch["global_pool"] == "avg"


def test_spec_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\narchitecture: compact_cnn\ntask: obstacle\ntrain: {epochs: 2, lr: 1}\n")
    spec = load_spec(path)
    assert (spec.name, spec.train.epochs, spec.train.lr) == ("mine", 2, 1.0)
    assert spec.img_size == (96, 192)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("name: x\narchitecture: vit\ntask: steering\nlayers: 3\n", SpecError, "unknown field 'layers'"),
        ("name: x\narchitecture: vit\ntask: steering\ntrain: {epoch: 3}\n", SpecError, "'train.epoch'"),
        (
            "name: x\narchitecture: vit\ntask: steering\ntrain: {augment: {hflip: 0.5}}\n",
            SpecError,
            "'train.augment.hflip'",
        ),
        ("name: x\narchitecture: vit\ntask: steering\narch: {depthh: 2}\n", SpecError, "depthh"),
        ("name: x\narchitecture: vit\ntask: steering\ntrain: {lr: fast}\n", SpecError, "'train.lr'"),
        ("name: x\narchitecture: vit\ntask: braking\n", SpecError, "'task'"),
        ("architecture: vit\ntask: steering\n", SpecError, "missing field 'name'"),
        ("name: x\narchitecture: vitt\ntask: steering\n", UnknownNameError, "did you mean vit"),
        ("name: [x\n", SpecError, "not valid YAML"),
    ],
)
def test_bad_spec_files_name_file_and_field(tmp_path: Path, text: str, error: type, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(error, match=message) as caught:
        load_spec(path)
    assert "bad.yaml" in str(caught.value)


def test_unknown_builtin_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean pilotnet.*valid: compact_cnn"):
        load_spec("pilotnett")
