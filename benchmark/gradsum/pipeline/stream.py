"""Streaming a truth set's frames into the attribution stage through a `DataLoader`.

Frames are decoded by loader workers while the models run, batched within a shard (so a shard's batches
are the same whichever process computes it, and results do not depend on how a run was split), and
kept at their own size: frames of different sizes reach the models through `model_input` one by one,
and their labels are scored at each frame's own resolution.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, Dataset

from gradsum.errors import GradSUMError
from gradsum.truthsets import TruthSet
from gradsum.truthsets.base import sample_id

#: A decoded frame (index, id, image, labels), or the error its reader raised.
_Item = tuple[int, str, np.ndarray, np.ndarray] | GradSUMError | OSError


@dataclass
class FrameBatch:
    """Decoded frames of one batch: split indices, sample ids, uint8 (H, W, 3) images, uint8 label maps."""

    indices: list[int]
    ids: list[str]
    images: list[np.ndarray]
    labels: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.indices)

    def by_size(self) -> Iterator[tuple[list[int], np.ndarray]]:
        """(positions, stacked labels) per label size, in order of first appearance."""
        groups: dict[tuple[int, int], list[int]] = {}
        for position, labels in enumerate(self.labels):
            groups.setdefault((int(labels.shape[0]), int(labels.shape[1])), []).append(position)
        for positions in groups.values():
            yield positions, np.stack([self.labels[p] for p in positions])


class _Frames(Dataset[_Item]):
    """(index, id, image, labels) of a truth set's samples; workers decode them in parallel."""

    def __init__(self, truthset: TruthSet) -> None:
        self.truthset = truthset

    def __len__(self) -> int:
        return len(self.truthset)

    def __getitem__(self, index: int) -> _Item:
        try:
            sample = self.truthset[index]
        except (GradSUMError, OSError) as error:
            # returned, not raised: a DataLoader re-raises a worker's exception as a copy whose message
            # holds the worker's traceback, and the reader's one-line message naming the file is what counts
            return error
        return index, sample_id(sample.meta, index), sample.image, sample.labels


def _collate(items: Sequence[_Item]) -> FrameBatch | GradSUMError | OSError:
    frames = []
    for item in items:
        if isinstance(item, GradSUMError | OSError):
            return item
        frames.append(item)
    return FrameBatch(
        indices=[frame[0] for frame in frames],
        ids=[frame[1] for frame in frames],
        images=[frame[2] for frame in frames],
        labels=[frame[3] for frame in frames],
    )


def batches_of(images: Sequence[range], batch_size: int) -> list[list[int]]:
    """Batches of at most `batch_size` indices, cut within each range (one range per shard)."""
    return [
        list(chunk[start : start + batch_size])
        for chunk in images
        for start in range(0, len(chunk), batch_size)
    ]


@dataclass
class FrameStream:
    """Batches of frames for a list of shards, decoded by `workers` loader processes.

    `read_seconds` is how long the consumer waited for decoded frames: with enough workers it is small,
    and when it dominates, decoding (not attribution) limits the run.
    """

    truthset: TruthSet
    shards: Sequence[range]
    batch_size: int
    workers: int = 0
    read_seconds: float = 0.0

    def __iter__(self) -> Iterator[FrameBatch]:
        loader: DataLoader[_Item] = DataLoader(
            _Frames(self.truthset),
            batch_sampler=batches_of(self.shards, self.batch_size),
            num_workers=self.workers,
            collate_fn=_collate,
            persistent_workers=False,
        )
        iterator = iter(loader)
        try:
            while True:
                start = time.perf_counter()
                try:
                    batch: FrameBatch | GradSUMError | OSError = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.read_seconds += time.perf_counter() - start
                if isinstance(batch, GradSUMError | OSError):
                    raise batch
                yield batch
        finally:
            # shut the workers down now: a raised error keeps this frame, and so the iterator, in a reference
            # cycle (error → traceback → frame), and a shutdown left to the garbage collector waits 5 s a worker
            del iterator
