"""Training's input path and randomness: in-memory batches equal the per-sample reference path, the process's
RNGs are left alone, and a damaged resume state is reported by name."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from gradsum.models import ModelSpec, train_model
from gradsum.models.inputs import model_input
from gradsum.models.specs import AugmentConfig
from gradsum.models.tasks import TRAINING_TASKS
from gradsum.models.training import Trainer, augment, preload, state_folder, training_batch
from gradsum.truthsets import TruthSet, open_truthset

JITTER = AugmentConfig(brightness=0.3, contrast=0.2, saturation=0.25, noise=0.05)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> TruthSet:
    from gradsum.truthsets.synthetic import generate

    root = generate(tmp_path_factory.mktemp("synthetic") / "set", count=20, seed=3, size=[48, 96], workers=1)
    return open_truthset(root, "train")


def reference_inputs(truthset: TruthSet, size: tuple[int, int]) -> torch.Tensor:
    """Each whole sample decoded on its own, through the pipeline's one input transform."""
    return torch.cat([model_input([truthset[i].image], size) for i in range(len(truthset))])


@pytest.mark.parametrize("size", [(48, 96), (32, 64)], ids=["own size", "resized"])
def test_preload_decodes_the_images_and_targets_of_the_reference_path(
    synthetic: TruthSet, size: tuple[int, int]
) -> None:
    data = preload(synthetic, "steering", size)
    assert torch.equal(data.images.float().div(255.0), reference_inputs(synthetic, size))
    expected = torch.tensor([sample.targets["steering"] for sample in synthetic], dtype=torch.float32)
    assert torch.equal(data.targets, expected)


def test_a_training_batch_equals_the_reference_batch_for_the_same_generator_state(
    synthetic: TruthSet,
) -> None:
    size = (48, 96)
    data = preload(synthetic, "obstacle", size)
    reference = reference_inputs(synthetic, size)
    generator = torch.Generator().manual_seed(11)
    index = torch.randperm(len(data), generator=generator)[:7]
    twin = torch.Generator()
    twin.set_state(generator.get_state())

    images, targets = training_batch(data, index, JITTER, generator, "cpu")

    expected = augment(reference[index], JITTER, twin)
    assert torch.equal(images, expected)
    assert targets.tolist() == [float(synthetic[int(i)].targets["obstacle"]) for i in index]
    # the jitter did something: the batch is not the plain inputs
    assert not torch.equal(images, reference[index])


def test_constructing_and_training_leave_the_global_rngs_alone(
    tiny_splits: dict[str, TruthSet], tmp_path: Path, make_spec: Callable[..., ModelSpec]
) -> None:
    torch.manual_seed(1234)
    np.random.seed(99)
    before_torch, before_numpy = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    spec = make_spec("compact_cnn", "obstacle", epochs=1)
    data = {name: preload(split, "obstacle", spec.img_size) for name, split in tiny_splits.items()}

    trainer = Trainer(spec, TRAINING_TASKS.get("obstacle"), data, tmp_path / "state", "cpu", {})
    assert torch.equal(torch.random.get_rng_state(), before_torch)
    first = train_model(spec, tiny_splits, out=tmp_path / "a", progress=False)
    assert torch.equal(torch.random.get_rng_state(), before_torch)
    assert np.array_equal(np.random.get_state()[1], before_numpy)

    # the weights come from the spec's seed, whatever the process drew before
    torch.manual_seed(7)
    torch.rand(1000)
    again = train_model(spec, tiny_splits, out=tmp_path / "b", progress=False)
    assert again.history == first.history
    same = Trainer(spec, TRAINING_TASKS.get("obstacle"), data, tmp_path / "state2", "cpu", {})
    for mine, theirs in zip(
        trainer.model.state_dict().values(), same.model.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize(
    "content",
    [b"", b"PK\x03\x04 truncated zip", b"not a torch file at all"],
    ids=["empty", "truncated", "junk"],
)
def test_an_unreadable_resume_state_is_named_and_training_starts_afresh(
    tiny_splits: dict[str, TruthSet],
    tmp_path: Path,
    make_spec: Callable[..., ModelSpec],
    caplog: pytest.LogCaptureFixture,
    content: bytes,
) -> None:
    spec = make_spec("compact_cnn", "obstacle", epochs=1)
    out = tmp_path / "m"
    resume = state_folder(out) / "resume.pt"
    resume.parent.mkdir(parents=True)
    resume.write_bytes(content)
    seen: list[int] = []
    with caplog.at_level(logging.WARNING, logger="gradsum.models.training"):
        train_model(spec, tiny_splits, out=out, progress=False, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(resume) in message and "unreadable resume state" in message for message in warnings)


def test_a_resume_state_of_other_content_is_named_too(
    tiny_splits: dict[str, TruthSet],
    tmp_path: Path,
    make_spec: Callable[..., ModelSpec],
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = make_spec("compact_cnn", "obstacle", epochs=1)
    out = tmp_path / "m"
    resume = state_folder(out) / "resume.pt"
    resume.parent.mkdir(parents=True)
    torch.save({"weights": torch.zeros(2)}, resume)
    with caplog.at_level(logging.WARNING, logger="gradsum.models.training"):
        card = train_model(spec, tiny_splits, out=out, progress=False)
    assert card.epochs_run == 1
    assert any(
        str(resume) in r.getMessage() and "not a GradSUM resume state" in r.getMessage()
        for r in caplog.records
    )


def test_an_unexpected_error_while_reading_a_resume_state_is_not_swallowed(
    tiny_splits: dict[str, TruthSet],
    tmp_path: Path,
    make_spec: Callable[..., ModelSpec],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = make_spec("compact_cnn", "obstacle", epochs=1)
    out = tmp_path / "m"
    resume = state_folder(out) / "resume.pt"
    resume.parent.mkdir(parents=True)
    resume.write_bytes(b"x")

    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("a bug, not a damaged file")

    monkeypatch.setattr(torch, "load", broken)
    with pytest.raises(ZeroDivisionError):
        train_model(spec, tiny_splits, out=out, progress=False)
