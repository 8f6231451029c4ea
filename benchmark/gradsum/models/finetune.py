"""Relevance-guided fine-tuning (Chefer et al. 2022, hila-chefer/RobustViT), adapted to driving models.

The loss pushes a model's relevance map R off the background and onto a foreground mask M while a keep
term holds its predictions near a frozen copy of the original model:

    total = relevance · (background · MSE(R·(1−M), 0) + foreground · MSE(R·M, M)) + keep · keep_term

R is differentiable in the model's parameters: gradient-weighted rollout (Chefer ICCV 2021) for ViTs and
hybrids, GradCAM for CNNs, both from gradients taken with `create_graph=True`, upsampled to the input size
and min-max normalised per image. The math is the attribution package's own (`attention_math`,
`fastcam`, `normalise`), applied to tensors that keep their graph.

`finetune_model` applies the loss to a saved model: foreground masks from named Cityscapes classes on the
K scenes of a split drawn by the seed, AdamW for a number of steps, and a new checkpoint folder whose card records
what was done (`ModelCard.finetune`); the base folder is only read.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from gradsum.attribution.adapters import attribution_mode
from gradsum.attribution.attention_capture import (
    block_indices,
    forward_capturing,
    pooled_tokens,
    readout_weights,
    to_token_grid,
)
from gradsum.attribution.attention_math import gradient_rollout, read_out
from gradsum.attribution.base import upsample
from gradsum.attribution.fastcam import GradCAM
from gradsum.attribution.normalise import minmax
from gradsum.attribution.postprocess import relu
from gradsum.attribution.targets import Target, resolve_target
from gradsum.errors import SpecError, TrainingError
from gradsum.fileio import sha256_file
from gradsum.models.checkpoints import ModelCard, checkpoint_folder, load_model, save_model, weights_file
from gradsum.models.inputs import model_input
from gradsum.models.introspect import cam_layer, model_family, num_prefix_tokens
from gradsum.models.tasks import TRAINING_TASKS
from gradsum.registry import Registry
from gradsum.truthsets import open_truthset
from gradsum.truthsets.base import TruthSet, sample_id
from gradsum.truthsets.labels import cityscapes_class
from gradsum.utils import default_device, library_versions

log = logging.getLogger(__name__)

#: (model, images, target) → (relevance on the model's native grid (B, h, w), model output), with graph
RelevanceFn = Callable[[nn.Module, Tensor, Target], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class LossWeights:
    """The loss weights; the defaults are RobustViT's (λ_bg 2, λ_fg 0.3, relevance 0.8, prediction 0.2)."""

    background: float = 2.0
    foreground: float = 0.3
    relevance: float = 0.8
    keep: float = 0.2

    @classmethod
    def parse(cls, text: str, source: str = "weights") -> LossWeights:
        """Four comma-separated non-negative numbers in field order, e.g. "2,0.3,0.8,0.2"."""
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            values = []
        if len(values) != len(fields(cls)) or not all(math.isfinite(v) and v >= 0 for v in values):
            names = ",".join(f.name for f in fields(cls))
            raise SpecError(
                f"{source}: {text!r} is not four non-negative numbers {names} (e.g. 2,0.3,0.8,0.2)"
            )
        return cls(*values)


@dataclass(frozen=True)
class LossParts:
    """The loss terms (scalars with graph) and the weighted total that is backpropagated."""

    background: Tensor
    foreground: Tensor
    keep: Tensor
    total: Tensor


def rollout_relevance(model: nn.Module, images: Tensor, target: Target) -> tuple[Tensor, Tensor]:
    """Gradient-weighted rollout on the token grid, differentiable in the parameters, and the output.

    The same relevance as `gradient_rollout_map` (read out from R − I by the model's pooling), computed in
    one forward that keeps every block's attention and its graph, so it can itself be backpropagated.
    """
    attentions: list[Tensor] = []
    with pooled_tokens(model) as pooled:
        output = forward_capturing(
            model, images, block_indices(model, 0), lambda _index, attention: attentions.append(attention)
        )
    gradients = torch.autograd.grad(target.select(output).sum(), attentions, create_graph=True)
    relevance = gradient_rollout(attentions, gradients)
    eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
    # the pooling's row weights come from detached tokens: they choose rows, they are not optimised
    rows = read_out(relevance - eye, readout_weights(model, pooled), num_prefix_tokens(model))
    return to_token_grid(model, rows), output


def gradcam_relevance(model: nn.Module, images: Tensor, target: Target) -> tuple[Tensor, Tensor]:
    """GradCAM (ReLU'd) on the model's default CAM layer, differentiable in the parameters, and the output."""
    kept: list[Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
        kept.append(output)

    handle = cam_layer(model).register_forward_hook(keep)
    try:
        output = model(images)
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(target.select(output).sum(), kept, create_graph=True)
    return relu(GradCAM().cam(kept[0], gradient)), output


#: model family → its differentiable relevance map
RELEVANCE_MAPS: Registry[RelevanceFn] = Registry("model family")
RELEVANCE_MAPS.add("vit", rollout_relevance)
RELEVANCE_MAPS.add("hybrid", rollout_relevance)
RELEVANCE_MAPS.add("cnn", gradcam_relevance)

#: task → the target the keep term fits to the original model's output: the value itself for steering,
#: the original's own predicted class for obstacle (RobustViT's cross-entropy against its top-1)
KEEP_TARGETS: Registry[Callable[[Tensor], Tensor]] = Registry("task")
KEEP_TARGETS.add("steering", lambda output: output)
KEEP_TARGETS.add("obstacle", lambda logit: (logit > 0).to(logit.dtype))


def relevance_map(model: nn.Module, images: Tensor, task: str) -> tuple[Tensor, Tensor]:
    """R (B, H, W) at the input size, min-max normalised per image with graph, and the output (B,).

    The task's default attribution target is explained (the predicted direction or class). The model
    runs in attribution mode (eval, fused attention off) so the maps optimised are the maps measured.
    """
    target = resolve_target(None, task)
    method = RELEVANCE_MAPS.get(model_family(model), "model")
    with attribution_mode(model, needs_attention=True):
        grid, output = method(model, images, target)
    size = (int(images.shape[-2]), int(images.shape[-1]))
    return minmax(upsample(grid, size)), output.reshape(-1)


def background_term(relevance: Tensor, foreground: Tensor) -> Tensor:
    """MSE(R·(1−M), 0): relevance left on the background."""
    return functional.mse_loss(relevance * (1 - foreground), torch.zeros_like(relevance))


def foreground_term(relevance: Tensor, foreground: Tensor) -> Tensor:
    """MSE(R·M, M): foreground pixels whose relevance falls short of 1."""
    return functional.mse_loss(relevance * foreground, foreground)


def keep_term(output: Tensor, original: Tensor, task: str) -> Tensor:
    """The task's training loss of the output against the original model's output made a target."""
    return TRAINING_TASKS.get(task, "task").loss(output, KEEP_TARGETS.get(task, "task")(original))


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with frozen parameters: the original the keep term compares to."""
    original = copy.deepcopy(model).eval()
    for parameter in original.parameters():
        parameter.requires_grad_(False)
    return original


def relevance_loss(
    model: nn.Module,
    original: nn.Module,
    images: Tensor,
    foreground: Tensor,
    task: str,
    weights: LossWeights | None = None,
) -> LossParts:
    """The relevance-guided loss of `model` on model-input `images` (B, 3, H, W) and masks (B, H, W)."""
    if tuple(foreground.shape) != (images.shape[0], *images.shape[-2:]):
        raise TrainingError(
            f"foreground: mask shape {tuple(foreground.shape)} does not match images {tuple(images.shape)}"
        )
    weights = weights or LossWeights()
    mask = foreground.to(images.dtype)
    relevance, output = relevance_map(model, images, task)
    with torch.no_grad():
        reference = original(images).reshape(-1)
    background = background_term(relevance, mask)
    fore = foreground_term(relevance, mask)
    keep = keep_term(output, reference, task)
    total = (
        weights.relevance * (weights.background * background + weights.foreground * fore)
        + weights.keep * keep
    )
    return LossParts(background=background, foreground=fore, keep=keep, total=total)


@dataclass(frozen=True)
class FinetuneSchedule:
    """How fine-tuning optimises: loss weights, AdamW learning rate, steps, batch size and batch seed."""

    weights: LossWeights
    lr: float
    steps: int
    batch_size: int
    seed: int

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name}={getattr(self, name)}: must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainingError(f"lr={self.lr}: must be a positive number")


@dataclass(frozen=True)
class FinetuneData:
    """The K scenes fine-tuning sees: model input, foreground masks at the input size, and scene ids."""

    images: Tensor  # (K, 3, H, W) float in [0, 1]
    masks: Tensor  # (K, H, W) float 0/1
    ids: list[str]


def foreground_ids(names: Sequence[str]) -> list[int]:
    """The Cityscapes ids of the named classes; an unknown name raises `SpecError` listing the valid ones."""
    if not names:
        raise SpecError("foreground: name at least one Cityscapes class (e.g. road,car)")
    try:
        return sorted({cityscapes_class(name).id for name in names})
    except SpecError as error:
        raise SpecError(f"foreground: {error}") from None


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
    seed: int = 0,
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


def loss_values(parts: LossParts) -> dict[str, float]:
    """The loss terms as plain numbers, for logs and the card."""
    # not asdict: it deep-copies the tensors, which their graphs forbid
    return {f.name: float(getattr(parts, f.name).item()) for f in fields(parts)}


def optimise(
    model: nn.Module,
    original: nn.Module,
    data: FinetuneData,
    task: str,
    schedule: FinetuneSchedule,
) -> list[dict[str, float]]:
    """AdamW on `relevance_loss` over random batches of the scenes; the loss terms of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr)
    generator = torch.Generator().manual_seed(schedule.seed)
    history = []
    for step in range(schedule.steps):
        picked = torch.randperm(len(data.ids), generator=generator)[: schedule.batch_size]
        picked = picked.to(data.images.device)
        parts = relevance_loss(
            model, original, data.images[picked], data.masks[picked], task, schedule.weights
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
    foreground: Sequence[str],
    out: str | Path,
    *,
    samples: int = 50,
    weights: LossWeights | None = None,
    lr: float = 1e-5,
    steps: int = 100,
    batch_size: int = 8,
    split: str = "train",
    seed: int = 0,
    device: str | torch.device | None = None,
) -> ModelCard:
    """Fine-tune the model at `base` so its relevance moves onto the `foreground` classes; write it at `out`.

    `samples` scenes of `split` drawn by `seed` are used; each step takes a seeded random batch of them. The
    base folder is only read. The new card keeps the base's spec and training record, drops its metrics
    (they describe other weights) and records the fine-tuning in `finetune`.
    """
    source, target = checkpoint_folder(base), Path(out)
    if target.resolve() == source.resolve():
        raise TrainingError(
            f"out: {target} is the base model folder; fine-tuning writes a new folder and never its base's"
        )
    classes = foreground_ids(foreground)
    schedule = FinetuneSchedule(weights or LossWeights(), lr, steps, batch_size, seed)
    run_device = device or default_device()
    base_sha256 = sha256_file(weights_file(source))
    model, card = load_model(source, run_device)
    original = frozen_copy(model)
    size = card.model_spec().img_size
    data = finetune_data(open_truthset(truthset, split), samples, classes, size, run_device, seed)
    started = time.perf_counter()
    history = optimise(model, original, data, card.task, schedule)
    record = {
        "base": str(source),
        "base_weights_sha256": base_sha256,
        "foreground": list(foreground),
        "foreground_ids": classes,
        "weights": asdict(schedule.weights),
        "samples": samples,
        "lr": lr,
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "truthset": str(truthset),
        "split": split,
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
    log.info("fine-tuned %s for %d steps: loss %s -> %s", source, steps, history[0], history[-1])
    return save_model(model, finetuned, target)
