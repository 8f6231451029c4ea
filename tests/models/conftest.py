"""Tiny generated truth sets whose targets are simple functions of the image."""

from __future__ import annotations

import numpy as np
import pytest

from gradsum.models import ModelSpec
from gradsum.truthsets import ArrayTruthSet, TruthSet

SIZE = (64, 128)
SPLITS = {"train": 256, "val": 64, "test": 64}


def make_split(count: int, seed: int) -> ArrayTruthSet:
    """Scenes with a left/right brightness difference (steering) and maybe a bright square (obstacle)."""
    rng = np.random.default_rng(seed)
    height, width = SIZE
    left = rng.uniform(0.2, 0.8, count)
    right = rng.uniform(0.2, 0.8, count)
    images = np.empty((count, height, width, 3), dtype=np.float32)
    images[:, :, : width // 2] = left[:, None, None, None]
    images[:, :, width // 2 :] = right[:, None, None, None]
    images += rng.normal(0, 0.03, images.shape)
    obstacle = rng.random(count) < 0.5
    for i in np.flatnonzero(obstacle):
        row, col = rng.integers(8, height - 24), rng.integers(8, width - 24)
        images[i, row : row + 16, col : col + 16] = [1.0, 0.1, 0.1]
    labels = np.zeros((count, height, width), dtype=np.uint8)
    pixels = (images.clip(0, 1) * 255).round().astype(np.uint8)
    targets = {"steering": (left - right).astype(np.float32), "obstacle": obstacle.astype(np.float32)}
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
