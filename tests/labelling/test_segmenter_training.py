"""Training a segmenter on a tiny generated synthetic set: it learns, its card is honest, a seed repeats it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gradsum.contract import WEIGHTS
from gradsum.errors import CheckpointError, TruthSetError, UnknownNameError
from gradsum.labelling.metrics import scores, total_confusion
from gradsum.labelling.segmenters import load_segmenter
from gradsum.labelling.training import (
    IGNORE_INDEX,
    channel_targets,
    evaluate,
    recalibrate_batch_norm,
    train_segmenter,
)
from gradsum.truthsets import open_truthset

#: the rendered set and the network's input: labels and frames are resized on the way in
SET_SIZE, INPUT_SIZE = (48, 96), (32, 64)
SETTINGS: dict[str, Any] = {"batch_size": 4, "input_size": INPUT_SIZE, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def truthset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gradsum.truthsets.synthetic import generate

    return generate(tmp_path_factory.mktemp("segtrain") / "set", count=40, seed=0, size=SET_SIZE)


@pytest.fixture(scope="module")
def trained(truthset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("segmenter") / "seg"
    card = train_segmenter(truthset, out, steps=30, lr=3e-3, seed=0, **SETTINGS)
    return out, dict(card)


def test_a_few_dozen_steps_beat_the_constant_predictor(
    truthset: Path, trained: tuple[Path, dict[str, Any]]
) -> None:
    val = open_truthset(truthset, "val")
    truths = [val.label_map(i) for i in range(len(val))]
    counts = np.bincount(np.concatenate([t.ravel() for t in truths]), minlength=34)
    counts[0] = 0
    majority = int(counts.argmax())  # the most common labelled class, predicted everywhere
    constant = scores(total_confusion((t, np.full_like(t, majority)) for t in truths)).miou
    _, card = trained
    assert card["metrics"]["miou"] > 2 * constant


def test_card_metrics_equal_a_reload_scored_again(
    truthset: Path, trained: tuple[Path, dict[str, Any]]
) -> None:
    out, card = trained
    rescored = evaluate(load_segmenter(out), open_truthset(truthset, "val"), device="cpu").to_dict()
    assert {key: card["metrics"][key] for key in rescored} == rescored
    assert card["metrics"]["split"] == "val" and card["metrics"]["inference"] == "resize"


def test_channels_are_the_set_s_non_void_classes(
    truthset: Path, trained: tuple[Path, dict[str, Any]]
) -> None:
    out, card = trained
    table = open_truthset(truthset, "train").class_table
    expected = sorted(c.cityscapes_id for c in table.classes if not c.ignore)
    segmenter = load_segmenter(out)
    assert list(segmenter.classes) == expected and segmenter.input_size == INPUT_SIZE
    assert card["training"]["steps"] == 30 and card["training"]["architecture"] == "lraspp_mobilenet_v3_large"


def test_same_seed_same_weights_other_seed_other_weights(truthset: Path, tmp_path: Path) -> None:
    def weights(name: str, seed: int) -> bytes:
        train_segmenter(truthset, tmp_path / name, steps=2, seed=seed, **SETTINGS)
        return (tmp_path / name / WEIGHTS).read_bytes()

    first = weights("a", 3)
    assert weights("b", 3) == first
    assert weights("c", 4) != first


def test_channel_targets_resize_by_nearest_and_ignore_void_and_unknown() -> None:
    labels = np.array([[7, 26], [0, 23]], np.uint8)  # road, car, unlabeled, sky (no channel for sky)
    targets = channel_targets([labels], (7, 26), (4, 4))
    row_top = [0, 0, 1, 1]
    row_bottom = [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert targets.tolist() == [[row_top, row_top, row_bottom, row_bottom]]


def test_recalibration_averages_each_batch_s_statistics() -> None:
    norm = nn.BatchNorm2d(1, momentum=0.01)
    batches = [torch.tensor([1.0, 3.0]).view(2, 1, 1, 1), torch.tensor([2.0, 6.0, 10.0]).view(3, 1, 1, 1)]
    recalibrate_batch_norm(nn.Sequential(norm), batches)
    # means 2 and 6; unbiased variances 2 and 16; each batch weighs the same
    assert norm.running_mean.item() == pytest.approx(4.0)
    assert norm.running_var.item() == pytest.approx(9.0)
    assert norm.momentum == 0.01 and not norm.training


def test_bad_input_fails_before_anything_is_written(truthset: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="lraspp_mobilenet_v3_large"):
        train_segmenter(truthset, tmp_path / "x", architecture="unet", **SETTINGS)
    with pytest.raises(TruthSetError):
        train_segmenter(truthset, tmp_path / "x", held_out="nope", **SETTINGS)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "taken").mkdir()
    with pytest.raises(CheckpointError, match="already exists"):
        train_segmenter(truthset, tmp_path / "taken", **SETTINGS)
