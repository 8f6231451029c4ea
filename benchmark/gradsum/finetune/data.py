"""The scenes fine-tuning sees: K scenes of a truth-set split drawn by the seed, as model input and
foreground masks of named Cityscapes classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from gradsum.errors import TrainingError
from gradsum.models.inputs import model_input
from gradsum.truthsets.base import TruthSet, sample_id
from gradsum.truthsets.labels import cityscapes_class


@dataclass(frozen=True)
class FinetuneData:
    """The K scenes fine-tuning sees: model input, foreground masks at the input size, and scene ids."""

    images: Tensor  # (K, 3, H, W) float in [0, 1]
    masks: Tensor  # (K, H, W) float 0/1
    ids: list[str]


def foreground_ids(names: Sequence[str]) -> list[int]:
    """The sorted Cityscapes ids of the named classes (`FinetuneSettings.check` has vetted the names)."""
    return sorted({cityscapes_class(name).id for name in names})


def foreground_masks(labels: Sequence[np.ndarray], ids: Sequence[int], size: tuple[int, int]) -> Tensor:
    """(B, *size) 0/1 masks of the `ids` pixels, each label map resized to `size` by nearest neighbour."""
    # nearest-exact samples pixel centres (as cv2 and PIL do); plain "nearest" shifts by half a pixel
    return torch.cat(
        [
            functional.interpolate(
                torch.from_numpy(np.isin(label, ids)).float()[None, None], size=size, mode="nearest-exact"
            )[:, 0]
            for label in labels
        ]
    )


def scene_indices(count: int, available: int, seed: int) -> list[int]:
    """`count` distinct scene indices of `available`, drawn by `seed` and sorted: each seed its own scenes,
    so seeds of a fine-tuning vary the data as a new sample of K labelled scenes would."""
    return sorted(int(i) for i in np.random.default_rng(seed).choice(available, size=count, replace=False))


def finetune_data(
    truthset: TruthSet,
    count: int,
    ids: Sequence[int],
    size: tuple[int, int],
    device: str | torch.device,
    seed: int,
) -> FinetuneData:
    """`count` scenes of `truthset` drawn by `seed` (`scene_indices`) as model input and foreground masks."""
    if not 1 <= count <= len(truthset):
        raise TrainingError(
            f"samples={count}: must lie in 1..{len(truthset)}, the scenes in split {truthset.split!r}"
        )
    indices = scene_indices(count, len(truthset), seed)
    scenes = [truthset[index] for index in indices]
    masks = foreground_masks([scene.labels for scene in scenes], ids, size)
    if masks.sum().item() == 0:
        raise TrainingError(f"foreground: the classes {list(ids)} cover no pixel of the {count} scenes drawn")
    return FinetuneData(
        images=model_input([scene.image for scene in scenes], size, device),
        masks=masks.to(device),
        ids=[sample_id(scene.meta, index) for index, scene in zip(indices, scenes, strict=True)],
    )
