"""Segmenter architectures, the segmenter folder, `segmenter.yaml` checkpoints and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml

from gradsum.contract import CARD, WEIGHTS
from gradsum.errors import CheckpointError, SpecError, UnknownNameError
from gradsum.labelling.segmenter import Segmenter, predict
from gradsum.labelling.segmenters import (
    DEFAULT_ARCHITECTURE,
    SEGMENTER_ARCHITECTURES,
    SEGMENTER_SPEC,
    SegmentationNet,
    build_segmenter,
    load_segmenter,
    save_segmenter,
)
from gradsum.truthsets.labels import CITYSCAPES

#: road, car, sky: Cityscapes labelIds
CLASSES = (7, 26, 23)
SIZE = (32, 64)


@pytest.fixture(scope="module")
def trained() -> Segmenter:
    torch.manual_seed(0)
    return build_segmenter(DEFAULT_ARCHITECTURE, CLASSES, SIZE, card={"metrics": {"miou": 0.5}})


def logits(segmenter: Segmenter, seed: int = 0) -> torch.Tensor:
    images = torch.rand((2, 3, *segmenter.input_size), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return segmenter.module.eval()(images)


@pytest.mark.parametrize("name", SEGMENTER_ARCHITECTURES.names())
def test_every_architecture_builds_offline_with_one_channel_per_class(name: str) -> None:
    segmenter = build_segmenter(name, CLASSES, SIZE)
    out = logits(segmenter)
    assert out.shape == (2, len(CLASSES), *SIZE)
    # no auxiliary head: it is only a training loss, and a folder holds what inference uses
    assert not any(key.startswith("aux_classifier") for key in segmenter.module.state_dict())


def test_folder_round_trip_keeps_logits_classes_and_card(trained: Segmenter, tmp_path: Path) -> None:
    card = save_segmenter(trained, tmp_path / "seg")
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == sorted([CARD, WEIGHTS])
    assert card["classes"] == ["road", "car", "sky"]
    assert json.loads((tmp_path / "seg" / CARD).read_text())["metrics"] == {"miou": 0.5}
    loaded = load_segmenter(tmp_path / "seg")
    assert (loaded.classes, loaded.input_size, loaded.architecture) == (CLASSES, SIZE, DEFAULT_ARCHITECTURE)
    torch.testing.assert_close(logits(loaded), logits(trained), rtol=0, atol=0)
    assert loaded.card["metrics"] == {"miou": 0.5}


def test_save_refuses_an_existing_folder_and_leaves_no_staging(trained: Segmenter, tmp_path: Path) -> None:
    save_segmenter(trained, tmp_path / "seg")
    with pytest.raises(CheckpointError, match="already exists"):
        save_segmenter(trained, tmp_path / "seg")
    assert [p.name for p in tmp_path.iterdir()] == ["seg"]


def write_spec(folder: Path, **fields: object) -> Path:
    spec = folder / SEGMENTER_SPEC
    spec.write_text(yaml.safe_dump(fields))
    return spec


def net_state(segmenter: Segmenter) -> dict[str, torch.Tensor]:
    assert isinstance(segmenter.module, SegmentationNet)
    return {k: v.clone() for k, v in segmenter.module.net.state_dict().items()}


def test_yaml_spec_loads_a_nested_pt_with_names_and_ids(trained: Segmenter, tmp_path: Path) -> None:
    # a torchvision training script's file: nested under 'state_dict', with the auxiliary head's weights
    state = net_state(trained) | {"aux_classifier.0.weight": torch.zeros(1)}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "mine.pt")
    write_spec(tmp_path, architecture=DEFAULT_ARCHITECTURE, weights="mine.pt", classes=["road", 26, "sky"],
               input_size=list(SIZE))  # fmt: skip
    loaded = load_segmenter(tmp_path)  # the folder holding segmenter.yaml
    assert loaded.classes == CLASSES and loaded.card["classes"] == ["road", "car", "sky"]
    torch.testing.assert_close(logits(loaded), logits(trained), rtol=0, atol=0)
    frame = np.random.default_rng(0).integers(0, 256, size=(40, 70, 3), dtype=np.uint8)
    [a], [b] = predict(loaded, [frame], device="cpu"), predict(trained, [frame], device="cpu")
    np.testing.assert_array_equal(a.labels, b.labels)


def test_yaml_spec_mean_and_std_normalise_inside(trained: Segmenter, tmp_path: Path) -> None:
    safetensors.torch.save_file(net_state(trained), str(tmp_path / "w.safetensors"))
    spec = write_spec(tmp_path, architecture=DEFAULT_ARCHITECTURE, weights="w.safetensors", classes=list(CLASSES),
                      input_size=list(SIZE), mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])  # fmt: skip
    loaded = load_segmenter(spec)
    images = torch.rand((1, 3, *SIZE), generator=torch.Generator().manual_seed(1))
    assert isinstance(loaded.module, SegmentationNet)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(images), loaded.module.net((images - 0.5) / 0.25)["out"])


def spec_error(tmp_path: Path, trained: Segmenter, **changes: object) -> str:
    """The message `load_segmenter` raises for a spec of `trained`'s weights with `changes`."""
    safetensors.torch.save_file(net_state(trained), str(tmp_path / "w.safetensors"))
    fields = {"architecture": DEFAULT_ARCHITECTURE, "weights": "w.safetensors", "classes": list(CLASSES),
              "input_size": list(SIZE)} | changes  # fmt: skip
    spec = write_spec(tmp_path, **fields)
    with pytest.raises((CheckpointError, SpecError, UnknownNameError)) as caught:
        load_segmenter(spec)
    message = str(caught.value)
    assert "\n" not in message and str(spec) in message
    return message


def test_unknown_class_lists_valid_names(trained: Segmenter, tmp_path: Path) -> None:
    message = spec_error(tmp_path, trained, classes=["road", "cra", "sky"])
    assert "classes[1]" in message and "'cra'" in message and "traffic light" in message
    assert "classes[2]" in spec_error(tmp_path, trained, classes=[7, 26, 99])


def test_class_count_differs_from_output_channels(trained: Segmenter, tmp_path: Path) -> None:
    message = spec_error(tmp_path, trained, classes=["road", "car"])
    assert "classes: 2 entries" in message and "3 output channels" in message


def test_unknown_architecture_lists_valid_ones(trained: Segmenter, tmp_path: Path) -> None:
    message = spec_error(tmp_path, trained, architecture="unet")
    assert "architecture" in message and all(name in message for name in SEGMENTER_ARCHITECTURES.names())


def test_weights_of_another_architecture_name_keys(trained: Segmenter, tmp_path: Path) -> None:
    message = spec_error(tmp_path, trained, architecture="deeplabv3_mobilenet_v3_large")
    assert "does not fit architecture 'deeplabv3_mobilenet_v3_large'" in message and "keys" in message


def test_truncated_weights_are_named(trained: Segmenter, tmp_path: Path) -> None:
    safetensors.torch.save_file(net_state(trained), str(tmp_path / "cut.safetensors"))
    data = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    spec = write_spec(tmp_path, architecture=DEFAULT_ARCHITECTURE, weights="cut.safetensors",
                      classes=list(CLASSES), input_size=list(SIZE))  # fmt: skip
    with pytest.raises(CheckpointError, match=r"segmenter\.yaml: weights: .*cut\.safetensors: corrupt"):
        load_segmenter(spec)


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"input_size": [32]}, "input_size"), ({"std": [1, 0, 1]}, "std"), ({"weight": "x"}, "unknown field")],
)
def test_bad_fields_are_named(
    trained: Segmenter, tmp_path: Path, changes: dict[str, object], field: str
) -> None:
    assert field in spec_error(tmp_path, trained, **changes)


def test_replaced_folder_weights_fail_the_checksum(trained: Segmenter, tmp_path: Path) -> None:
    save_segmenter(trained, tmp_path / "seg")
    other = build_segmenter(DEFAULT_ARCHITECTURE, CLASSES, SIZE)
    safetensors.torch.save_file(net_state(other), str(tmp_path / "seg" / WEIGHTS))
    with pytest.raises(CheckpointError, match="weights_sha256"):
        load_segmenter(tmp_path / "seg")


def test_a_path_that_is_no_segmenter_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such segmenter"):
        load_segmenter(tmp_path / "missing")
    with pytest.raises(CheckpointError, match=SEGMENTER_SPEC):
        load_segmenter(tmp_path)


def test_card_class_names_are_cityscapes_names(trained: Segmenter, tmp_path: Path) -> None:
    card = save_segmenter(trained, tmp_path / "seg")
    assert [CITYSCAPES.by_name[name].id for name in card["classes"]] == list(CLASSES)
