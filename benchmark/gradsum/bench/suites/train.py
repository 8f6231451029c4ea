"""Bench suite `train`: what each step of the training path costs, as ratios measured in one process, then
the default models trained on the synthetic set (seconds and held-out metrics).

Ratios, not seconds, are the figures to compare across machines and loads:
- `input`: decoding the validation split's images only, on `DECODE_THREADS` threads (`preload`), against decoding
  whole samples one by one (labels, instances and scene record included), the path it replaced;
- `step`: per architecture, a training step with the fused AdamW update against the per-tensor
  (`foreach`) one, and the share of a step spent gathering and augmenting its batch;
- `models`: per default model, seconds (total and per epoch) and held-out metrics.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradsum.bench import BenchSuite
from gradsum.models import load_spec, train_model
from gradsum.models.inputs import resize_uint8
from gradsum.models.specs import ModelSpec
from gradsum.models.tasks import TRAINING_TASKS
from gradsum.models.training import SplitData, parameter_groups, preload, training_batch
from gradsum.truthsets import TruthSet, open_truthset
from gradsum.truthsets.layout import MANIFEST

#: the default models the pipeline uses, then the obstacle hybrid (the ViT quality target covers it too)
MODELS = ("pilotnet", "vit", "hybrid_vit", "compact_cnn", "vit_obstacle", "hybrid_obstacle")
#: truth set to train on (override with GRADSUM_BENCH_TRUTHSET)
TRUTHSET = Path("datasets/synthetic")
#: steps timed per optimizer (quick, full)
STEPS = (2, 6)


def _decode_whole_samples(truthset: TruthSet, size: tuple[int, int]) -> torch.Tensor:
    """The input path `preload` replaced: whole samples decoded one after another."""
    frames = [
        resize_uint8(torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1)[None], size)
        for sample in truthset
    ]
    return torch.cat(frames)


def _seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _input_ratio(split: TruthSet, size: tuple[int, int]) -> tuple[dict[str, Any], SplitData]:
    """Both input paths over `split`, and what `preload` made of it."""
    old = _seconds(lambda: _decode_whole_samples(split, size))
    start = time.perf_counter()
    data = preload(split, split.tasks[0], size)
    new = time.perf_counter() - start
    figures = {"images": len(split), "whole_samples_s": round(old, 2), "preload_s": round(new, 2)}
    return {**figures, "ratio": new / old}, data


def _step_ratios(spec: ModelSpec, data: SplitData, steps: int) -> dict[str, float]:
    """Seconds per step with the foreach and the fused AdamW, and the batch's share of the fused step."""
    task = TRAINING_TASKS.get(spec.task, "task")
    config = spec.train
    generator = torch.Generator().manual_seed(0)
    seconds: dict[str, float] = {"batch": 0.0}
    for fused in (False, True):
        model = spec.build()
        model.train()
        groups = parameter_groups(model, config.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=config.lr, foreach=not fused, fused=fused or None)
        elapsed = 0.0
        for step in range(steps + 1):  # the first step warms allocators and kernels up
            start = time.perf_counter()
            index = torch.randperm(len(data), generator=generator)[: config.batch_size]
            images, target = training_batch(data, index, config.augment, generator, "cpu")
            gathered = time.perf_counter()
            loss = task.loss(model(images).reshape(-1).float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step:
                elapsed += time.perf_counter() - start
                if fused:
                    seconds["batch"] += gathered - start
        seconds["fused" if fused else "foreach"] = elapsed / steps
    return {
        "foreach_step_s": round(seconds["foreach"], 3),
        "fused_step_s": round(seconds["fused"], 3),
        "fused_ratio": seconds["fused"] / seconds["foreach"],
        "batch_share": seconds["batch"] / steps / seconds["fused"],
    }


def _run(quick: bool, device: str) -> dict[str, Any]:
    root = Path(os.environ.get("GRADSUM_BENCH_TRUTHSET", TRUTHSET))
    if not (root / MANIFEST).is_file():
        return {"skipped": f"no truth set at {root}; run `gradsum generate --out {root}` first"}
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(min(threads, 2))  # the quality targets are stated for a 2-core CPU
    names = MODELS[:2] if quick else MODELS
    figures: dict[str, Any] = {"truthset": str(root), "threads": torch.get_num_threads(), "models": {}}
    try:
        # the validation split: the same images and decoders as the training split, a tenth of them
        figures["input"], data = _input_ratio(open_truthset(root, "val"), load_spec(names[0]).img_size)
        figures["step"] = {name: _step_ratios(load_spec(name), data, STEPS[not quick]) for name in names}
        with tempfile.TemporaryDirectory() as scratch:
            for name in names:
                spec = load_spec(name)
                spec = spec.with_train(epochs=1) if quick else spec
                start = time.perf_counter()
                card = train_model(spec, root, out=Path(scratch) / name, device=device, progress=False)
                seconds = time.perf_counter() - start
                figures["models"][name] = {
                    "task": card.task,
                    "seconds_total": round(seconds, 1),
                    "seconds_per_epoch": round(seconds / max(1, card.epochs_run), 1),
                    "epochs_run": card.epochs_run,
                    "best_epoch": card.best_epoch,
                    "metrics": card.metrics,
                }
    finally:
        torch.set_num_threads(threads)
    return figures


SUITE = BenchSuite(
    "train", "train the default models on the synthetic set: input and step ratios, seconds, metrics", _run
)
