"""The fine-tuning loop: AdamW on the relevance-guided loss, and `finetune_model`, which applies it to a
saved model and writes a new checkpoint folder whose card records what was done."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from gradsum.errors import TrainingError
from gradsum.fileio import sha256_file
from gradsum.finetune.data import FinetuneData, finetune_data, foreground_ids
from gradsum.finetune.loss import frozen_copy, loss_values, relevance_loss
from gradsum.finetune.settings import FinetuneSettings
from gradsum.models.checkpoints import ModelCard, checkpoint_folder, load_model, save_model, weights_file
from gradsum.truthsets import open_truthset
from gradsum.utils import library_versions, resolve_device

log = logging.getLogger(__name__)


def optimise(
    model: nn.Module,
    original: nn.Module,
    data: FinetuneData,
    task: str,
    settings: FinetuneSettings,
) -> list[dict[str, float]]:
    """AdamW on `relevance_loss` over random batches of the scenes; the loss terms of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    history = []
    for step in range(settings.steps):
        picked = torch.randperm(len(data.ids), generator=generator)[: settings.batch_size]
        picked = picked.to(data.images.device)
        parts = relevance_loss(
            model, original, data.images[picked], data.masks[picked], task, settings.weights
        )
        if not torch.isfinite(parts.total):
            raise TrainingError(f"step {step}: the loss is not finite ({loss_values(parts)}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        history.append(loss_values(parts))
        log.debug("fine-tuning step %d: %s", step, history[-1])
    return history


def finetune_model(
    base: str | Path,
    truthset: str | Path,
    out: str | Path,
    settings: FinetuneSettings,
    *,
    device: str | None = None,
) -> ModelCard:
    """Fine-tune the model at `base` so its relevance moves onto the `settings.foreground` classes; write
    it at `out`.

    `settings.samples` scenes of `settings.split` drawn by the seed are used; each step takes a seeded
    random batch of them. The base folder is only read. The new card keeps the base's spec and training
    record, drops its metrics (they describe other weights) and records in `finetune` the settings
    (`FinetuneSettings.to_dict`) beside the base, the truth set, the scenes drawn and the loss before and
    after.
    """
    source, target = checkpoint_folder(base), Path(out)
    if target.resolve() == source.resolve():
        raise TrainingError(
            f"out: {target} is the base model folder; fine-tuning writes a new folder and never its base's"
        )
    settings.check()
    classes = foreground_ids(settings.foreground)
    run_device = resolve_device(device)
    base_sha256 = sha256_file(weights_file(source))
    model, card = load_model(source, run_device)
    original = frozen_copy(model)
    size = card.model_spec().img_size
    scenes = open_truthset(truthset, settings.split)
    data = finetune_data(scenes, settings.samples, classes, size, run_device, settings.seed)
    started = time.perf_counter()
    history = optimise(model, original, data, card.task, settings)
    record = {
        "base": str(source),
        "base_weights_sha256": base_sha256,
        **settings.to_dict(),
        "foreground_ids": classes,
        "truthset": str(truthset),
        "scene_ids": data.ids,
        "loss_first": history[0],
        "loss_last": history[-1],
    }
    finetuned = replace(
        card,
        metrics={},
        libraries=library_versions(),
        device=str(run_device),
        training_seconds=round(time.perf_counter() - started, 2),
        finetune=record,
    )
    log.info("fine-tuned %s for %d steps: loss %s -> %s", source, settings.steps, history[0], history[-1])
    return save_model(model, finetuned, target)
