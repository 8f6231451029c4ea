"""Tiny generated truth sets whose targets are simple functions of the image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from gradsum.models import ModelSpec
from gradsum.truthsets import ArrayTruthSet, TruthSet

SIZE = (64, 128)
SPLITS = {"train": 256, "val": 64, "test": 64}


def make_split(count: int, seed: int) -> ArrayTruthSet:
    """Scenes with a bright vertical bar whose column is the steering value, maybe a red square (obstacle)."""
    rng = np.random.default_rng(seed)
    height, width = SIZE
    images = rng.uniform(0.2, 0.5, (count, height, width, 3)).astype(np.float32)
    column = rng.integers(4, width - 12, count)
    obstacle = rng.random(count) < 0.5
    labels = np.zeros((count, height, width), dtype=np.uint8)
    for i in range(count):
        images[i, :, column[i] : column[i] + 8] = 0.95
        labels[i, :, column[i] : column[i] + 8] = 7  # road
        if obstacle[i]:
            row, col = rng.integers(4, height - 28), rng.integers(4, width - 28)
            images[i, row : row + 24, col : col + 24] = [0.9, 0.1, 0.1]
            labels[i, row : row + 24, col : col + 24] = 26  # car
    steering = (column + 4) / width * 2.0 - 1.0
    pixels = (images * 255).round().astype(np.uint8)
    targets = {"steering": steering.astype(np.float32), "obstacle": obstacle.astype(np.float32)}
    return ArrayTruthSet(pixels, labels, targets)


@pytest.fixture(scope="session")
def tiny_splits() -> dict[str, TruthSet]:
    """train/val/test splits at 64×128 with both tasks."""
    return {name: make_split(count, seed) for seed, (name, count) in enumerate(SPLITS.items())}


def tiny_spec(architecture: str, task: str = "steering", epochs: int = 3, **arch: object) -> ModelSpec:
    """A spec for the tiny sets: small batches, quick schedule, no augmentation noise to speak of."""
    return ModelSpec.from_dict(
        {
            "name": f"tiny_{architecture}",
            "architecture": architecture,
            "task": task,
            "img_size": list(SIZE),
            "arch": arch,
            "train": {
                "epochs": epochs,
                "batch_size": 32,
                "lr": 2e-3,
                "warmup": 0.1,
                "patience": 10,
                "augment": {"noise": 0.0},
            },
        },
        "tiny spec",
    )


@pytest.fixture(name="make_spec")
def make_spec_fixture() -> Callable[..., ModelSpec]:
    """`tiny_spec` as a fixture (test modules are not a package, so they cannot import it)."""
    return tiny_spec
