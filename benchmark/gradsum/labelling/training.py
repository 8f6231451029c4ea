"""Training a segmenter on a labelled truth set, then scoring it on a held-out split (`gradsum train-segmenter`).

The output channels are the Cityscapes ids the training split's class table can produce, void excluded.
Frames go through the model input transform (`gradsum.models.inputs`) and label maps are resized to the
input size by nearest neighbour; void pixels are ignored by the loss. Batches are drawn from the split
without replacement (a new permutation each pass) by a generator seeded with `seed`, and the network is
initialised under the same seed, so a run on the CPU repeats bit for bit. Frames are decoded per batch rather
than preloaded: a few hundred steps see only part of a large split. The held-out split is scored at each
frame's own size with `predict` in resize mode, and the card records those metrics with the settings.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from gradsum.errors import CheckpointError, TrainingError
from gradsum.labelling.metrics import VOID_IDS, SegmentationScores, scores, total_confusion
from gradsum.labelling.segmenter import HELD_OUT, Segmenter, predict
from gradsum.labelling.segmenters import (
    DEFAULT_ARCHITECTURE,
    SEGMENTER_ARCHITECTURES,
    build_segmenter,
    save_segmenter,
)
from gradsum.models.inputs import model_input
from gradsum.models.training import DECODE_THREADS, parameter_groups, seeded_module_rng, warmup_cosine
from gradsum.progress import Heartbeat
from gradsum.truthsets import TruthSet, open_truthset, require_labels
from gradsum.truthsets.labels import NUM_CITYSCAPES_IDS
from gradsum.utils import resolve_device

log = logging.getLogger(__name__)

#: the target of a pixel the loss skips (void, or a class the segmenter has no channel for)
IGNORE_INDEX = 255
#: how the held-out split is scored (the mode a user gets from `predict` by default)
EVAL_MODE = "resize"
#: frames decoded and predicted at once while scoring the held-out split
EVAL_CHUNK = 64
#: AdamW's weight decay (not on biases and norms) and the share of steps the learning rate warms up over
WEIGHT_DECAY = 1e-4
WARMUP = 0.05
#: training batches (at most) whose statistics replace the batch-norm running averages after training
CALIBRATION_BATCHES = 25


@dataclass(frozen=True)
class TrainingSettings:
    """What a segmenter was trained with; recorded in its card."""

    architecture: str
    steps: int
    batch_size: int
    input_size: tuple[int, int]
    lr: float
    weight_decay: float
    warmup: float
    seed: int
    split: str
    held_out: str


def train_segmenter(
    truthset: str | Path,
    out: str | Path,
    *,
    architecture: str = DEFAULT_ARCHITECTURE,
    steps: int = 1000,
    batch_size: int = 16,
    input_size: Sequence[int] | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    split: str = "train",
    held_out: str = "val",
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Mapping[str, Any]:
    """Train a segmenter on `truthset`'s `split`, score it on `held_out`, and write its folder to `out`.

    `input_size` (height, width) defaults to the size of the split's first frame. Returns the card.
    """
    target = Path(out)
    if target.exists():
        raise CheckpointError(f"{target}: already exists; choose another --out folder or remove it")
    SEGMENTER_ARCHITECTURES.get(architecture, "architecture")  # an unknown name fails before any work
    if steps < 1:
        raise TrainingError(f"steps={steps}: must be at least 1 (--steps)")
    if batch_size < 2:
        # batch norm needs two samples to estimate a batch's statistics
        raise TrainingError(f"batch_size={batch_size}: must be at least 2 (--batch-size)")
    if not lr > 0:
        raise TrainingError(f"lr={lr}: must be positive (--lr)")
    train = open_truthset(truthset, split)
    evaluation = open_truthset(truthset, held_out)
    for opened in (train, evaluation):
        require_labels(opened)
    classes = trainable_classes(train)
    size = _input_size(input_size, train)
    settings = TrainingSettings(
        architecture, steps, batch_size, size, lr, WEIGHT_DECAY, WARMUP, seed, split, held_out
    )
    where = torch.device(resolve_device(None if device is None else str(device)))
    with seeded_module_rng(seed, where):
        segmenter = build_segmenter(architecture, classes, size)
        losses = _fit(segmenter, train, settings, where, progress)
    held_out_scores = evaluate(segmenter, evaluation, device=where)
    log.info(
        "%s: held-out mIoU %.3f on %d %s frames", target, held_out_scores.miou, len(evaluation), held_out
    )
    card = {
        HELD_OUT: {
            **held_out_scores.to_dict(),
            "split": held_out,
            "frames": len(evaluation),
            "inference": EVAL_MODE,
        },
        "training": {
            **asdict(settings),
            "input_size": list(size),
            "optimizer": "AdamW, warm-up + cosine",
            "loss": "cross-entropy, void pixels ignored",
            "batch_norm": f"running statistics recomputed over {min(steps, CALIBRATION_BATCHES)} training batches",
            "frames": len(train),
            "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
            "device": where.type,
        },
        "truthset": {"path": str(truthset), "kind": train.kind, "train": split, "held_out": held_out},
    }
    trained = Segmenter(segmenter.module.cpu().eval(), classes, size, architecture, card)
    return save_segmenter(trained, target)


def trainable_classes(truthset: TruthSet) -> tuple[int, ...]:
    """The Cityscapes ids the split's class table maps onto, void excluded, in id order."""
    ids = sorted({c.cityscapes_id for c in truthset.class_table.classes} - VOID_IDS)
    if not ids:
        raise TrainingError(
            f"{truthset.root} ({truthset.split}): its class table maps onto no non-void class"
        )
    return tuple(ids)


def evaluate(
    segmenter: Segmenter, truthset: TruthSet, *, device: str | torch.device | None = None
) -> SegmentationScores:
    """Scores of `predict` (resize mode) on every frame of `truthset` at the frame's own size."""

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(truthset), EVAL_CHUNK):
            indices = range(start, min(start + EVAL_CHUNK, len(truthset)))
            predictions = predict(
                segmenter, [truthset.image(i) for i in indices], mode=EVAL_MODE, device=device
            )
            for i, prediction in zip(indices, predictions, strict=True):
                yield truthset.label_map(i), prediction.labels

    return scores(total_confusion(pairs()))


def channel_targets(
    labels: Sequence[np.ndarray], classes: Sequence[int], size: tuple[int, int]
) -> torch.Tensor:
    """(B, *size) int64 channel indices from Cityscapes id maps: nearest-neighbour resized, and
    `IGNORE_INDEX` where the id is void or has no channel."""
    lookup = torch.full((NUM_CITYSCAPES_IDS,), IGNORE_INDEX, dtype=torch.int64)
    lookup[list(classes)] = torch.arange(len(classes))
    maps = torch.stack([torch.from_numpy(np.ascontiguousarray(label)) for label in labels])[:, None]
    resized = F.interpolate(maps.float(), size=size, mode="nearest")[:, 0].long()
    return lookup[resized]


def _fit(
    segmenter: Segmenter, train: TruthSet, settings: TrainingSettings, device: torch.device, progress: bool
) -> list[float]:
    """AdamW on the cross-entropy of non-void pixels for `settings.steps` batches; the losses per step."""
    module = segmenter.module.to(device).train()
    optimizer = torch.optim.AdamW(parameter_groups(module, settings.weight_decay), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings.steps, settings.warmup))
    heartbeat = Heartbeat(f"train segmenter on {train.root} ({train.split})", settings.steps, unit="steps")
    losses: list[float] = []
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for indices in _batches(len(train), settings):
            frames = list(pool.map(train.image, indices))
            labels = list(pool.map(train.label_map, indices))
            images = model_input(frames, settings.input_size, device)
            targets = channel_targets(labels, segmenter.classes, settings.input_size).to(device)
            logits = module(images)
            # summed over labelled pixels and divided by their count: a batch with none gives 0, not NaN
            loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
            loss = loss / (targets != IGNORE_INDEX).sum().clamp(min=1)
            if not math.isfinite(loss.item()):
                raise TrainingError(f"loss is {loss.item()} at step {len(losses) + 1}; try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if progress:
                heartbeat.add()
        calibration = dataclasses.replace(
            settings, steps=min(settings.steps, CALIBRATION_BATCHES), seed=settings.seed + 1
        )
        recalibrate_batch_norm(
            module,
            (
                model_input(list(pool.map(train.image, indices)), settings.input_size, device)
                for indices in _batches(len(train), calibration)
            ),
        )
    return losses


def recalibrate_batch_norm(module: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every batch norm's running mean and variance by their plain average over `batches`.

    torchvision's MobileNetV3 updates its running averages with momentum 0.01, so after a few hundred
    steps they still remember the random initial network and eval mode predicts one class everywhere;
    the statistics of the trained network, measured once, are what eval mode should normalise with.
    Leaves the module in eval mode. torch's `update_bn` (from stochastic weight averaging) does the
    measuring: running statistics reset, a cumulative average over the batches, the momenta restored.
    """
    update_bn(batches, module)
    module.eval()


def _batches(count: int, settings: TrainingSettings) -> Iterator[list[int]]:
    """`settings.steps` batches of frame indices, each pass over the split a fresh seeded permutation."""
    generator = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    for _ in range(settings.steps):
        batch: list[int] = []
        while len(batch) < settings.batch_size:
            if not order:
                order = torch.randperm(count, generator=generator).tolist()
            batch.append(order.pop())
        yield batch


def _input_size(requested: Sequence[int] | None, train: TruthSet) -> tuple[int, int]:
    if requested is None:
        height, width = train.image(0).shape[:2]
        return int(height), int(width)
    if len(requested) != 2 or min(requested) < 1:
        raise TrainingError(f"input_size={list(requested)}: expected two positive integers, height and width")
    return int(requested[0]), int(requested[1])
