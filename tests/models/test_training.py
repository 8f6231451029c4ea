"""Training: each architecture learns a tiny set; resume, NaN loss, bad tasks, shuffled labels."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gradsum.errors import TrainingError
from gradsum.models import ModelSpec, load_model, train_model
from gradsum.models.training import state_folder, warmup_cosine
from gradsum.truthsets import ArrayTruthSet, TruthSet

SMALL_VIT = {"embed_dim": 64, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize(
    ("architecture", "task", "arch", "epochs", "metric", "floor"),
    [
        ("pilotnet", "steering", {}, 3, "r2", 0.5),
        ("compact_cnn", "obstacle", {}, 3, "accuracy", 0.85),
        ("vit", "obstacle", SMALL_VIT, 6, "accuracy", 0.85),
        # average pooling ranks well long before its logits cross zero on a tiny set
        ("vit", "obstacle", {**SMALL_VIT, "class_token": False, "global_pool": "avg"}, 6, "auroc", 0.85),
        ("vit", "obstacle", {**SMALL_VIT, "class_token": False, "global_pool": "max"}, 6, "accuracy", 0.85),
        ("hybrid_vit", "obstacle", SMALL_VIT, 4, "auroc", 0.85),
    ],
)
def test_architecture_learns_a_tiny_set(
    tiny_splits: dict[str, TruthSet],
    tmp_path: Path,
    make_spec: Callable[..., ModelSpec],
    architecture: str,
    task: str,
    arch: dict[str, object],
    epochs: int,
    metric: str,
    floor: float,
) -> None:
    spec = make_spec(architecture, task, epochs=epochs, **arch)
    card = train_model(spec, tiny_splits, out=tmp_path / "m", progress=False)
    assert card.metrics[metric] is not None and card.metrics[metric] > floor, card.history
    assert card.splits == {"train": 256, "val": 64, "test": 64}
    assert 1 <= card.best_epoch <= card.epochs_run == epochs
    _, loaded = load_model(tmp_path / "m")
    assert loaded.metrics == card.metrics
    assert not state_folder(tmp_path / "m").exists()


def test_timm_cnn_fits_its_training_data(
    tiny_splits: dict[str, TruthSet], tmp_path: Path, make_spec: Callable[..., ModelSpec]
) -> None:
    # resnet18's BatchNorm statistics need more than a few tiny epochs to generalise; it must still fit
    card = train_model(make_spec("timm_cnn", "obstacle", epochs=2), tiny_splits, out=tmp_path, progress=False)
    assert card.history[-1]["train_loss"] < 0.6 * card.history[0]["train_loss"]


def test_resume_continues_from_the_saved_epoch(
    tiny_splits: dict[str, TruthSet], tmp_path: Path, make_spec: Callable[..., ModelSpec]
) -> None:
    spec = make_spec("compact_cnn", "obstacle", epochs=3)
    straight = train_model(spec, tiny_splits, out=tmp_path / "straight", progress=False)

    def interrupt(epoch: int, record: dict[str, float]) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(spec, tiny_splits, out=tmp_path / "cut", progress=False, on_epoch_end=interrupt)
    assert (state_folder(tmp_path / "cut") / "resume.pt").is_file()
    assert not (tmp_path / "cut").exists()
    seen: list[int] = []
    resumed = train_model(
        spec, tiny_splits, out=tmp_path / "cut", progress=False, on_epoch_end=lambda e, r: seen.append(e)
    )
    assert seen == [3]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history == straight.history
    assert resumed.metrics == straight.metrics


def test_nan_loss_stops_and_keeps_the_good_checkpoint(
    tiny_splits: dict[str, TruthSet], tmp_path: Path, make_spec: Callable[..., ModelSpec]
) -> None:
    spec = make_spec("compact_cnn", "steering", epochs=1)
    good = train_model(spec, tiny_splits, out=tmp_path / "m", progress=False)
    poisoned = dict(tiny_splits)
    train = tiny_splits["train"]
    targets = train.targets("steering").copy()
    targets[:] = math.nan
    poisoned["train"] = ArrayTruthSet(
        train._images,  # type: ignore[attr-defined]
        train._labels,  # type: ignore[attr-defined]
        {"steering": targets},
    )
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 1, batch 1"):
        train_model(spec, poisoned, out=tmp_path / "m", progress=False, resume=False)
    _, card = load_model(tmp_path / "m")
    assert card.metrics == good.metrics


def test_task_missing_from_truthset_names_it(
    tiny_splits: dict[str, TruthSet], tmp_path: Path, make_spec: Callable[..., ModelSpec]
) -> None:
    train = tiny_splits["train"]
    only_obstacle = ArrayTruthSet(
        train._images,  # type: ignore[attr-defined]
        train._labels,  # type: ignore[attr-defined]
        {"obstacle": train.targets("obstacle")},
    )
    with pytest.raises(TrainingError, match=r"task 'steering' is not in truth set .*it has: obstacle"):
        train_model(make_spec("pilotnet"), {"train": only_obstacle}, out=tmp_path, progress=False)


def test_shuffled_labels_learn_nothing(
    tiny_splits: dict[str, TruthSet], tmp_path: Path, make_spec: Callable[..., ModelSpec]
) -> None:
    spec = make_spec("compact_cnn", "obstacle", epochs=3)
    card = train_model(spec, tiny_splits, out=tmp_path, progress=False, shuffle_labels=True)
    assert card.shuffled_labels
    assert card.metrics["auroc"] is not None and card.metrics["auroc"] < 0.8


def test_warmup_then_cosine_schedule() -> None:
    factor = warmup_cosine(total_steps=100, warmup=0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5, abs=0.02)
    assert factor(99) < 0.01
    assert torch.tensor([factor(s) for s in range(10, 100)]).diff().le(0).all()
