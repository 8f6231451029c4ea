"""Bench suite `finetune`: relevance-guided fine-tuning of the default ViT with K = 50 scenes.

The budget is five minutes on 2 cores for the default ViT at K = 50. Beside the seconds, the
ratio to plain training steps (same model, batches and optimiser, steering loss only) shows what the
differentiable relevance map costs: a forward that keeps every block's attention and a double backward.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional

from gradsum.bench import BenchSuite
from gradsum.finetune.data import finetune_data, foreground_ids
from gradsum.finetune.loop import finetune_model
from gradsum.finetune.settings import FinetuneSettings
from gradsum.models import load_spec, save_model
from gradsum.truthsets import open_truthset
from gradsum.truthsets.synthetic import generate

MODEL = "vit"
#: the defaults (K = 50 scenes, 100 steps, batches of 8) on the road
SETTINGS = FinetuneSettings(foreground=("road",))


def _plain_steps(model: torch.nn.Module, images: torch.Tensor, steps: int, seed: int) -> float:
    """Seconds of `steps` AdamW steps of the steering loss on random batches of `images`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        picked = torch.randperm(len(images), generator=generator)[: SETTINGS.batch_size]
        loss = functional.mse_loss(model(images[picked]).reshape(-1), torch.zeros(len(picked)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def _run(quick: bool, device: str) -> dict[str, Any]:
    settings = replace(SETTINGS, steps=10) if quick else SETTINGS
    steps = settings.steps
    spec = load_spec(MODEL)
    with tempfile.TemporaryDirectory() as scratch:
        root = generate(Path(scratch) / "set", count=settings.samples + 20, size=spec.img_size, seed=0)
        torch.manual_seed(spec.train.seed)
        base = Path(scratch) / "base"
        save_model(spec.build().eval(), spec, base)
        start = time.perf_counter()
        finetune_model(base, root, Path(scratch) / "tuned", settings, device=device)
        tuned = time.perf_counter() - start
        scenes = open_truthset(root, settings.split)
        ids = foreground_ids(settings.foreground)
        data = finetune_data(scenes, settings.samples, ids, spec.img_size, device, settings.seed)
        torch.manual_seed(spec.train.seed)
        plain = _plain_steps(spec.build().to(device), data.images, steps, settings.seed)
    return {
        "model": MODEL,
        "samples": settings.samples,
        "steps": steps,
        "batch_size": settings.batch_size,
        "threads": torch.get_num_threads(),
        "seconds_total": round(tuned, 1),
        "seconds_per_step": round(tuned / steps, 3),
        "plain_seconds_per_step": round(plain / steps, 3),
        "ratio_to_plain_steps": round(tuned / max(plain, 1e-9), 2),
        "budget_seconds": 300,
    }


SUITE = BenchSuite(
    "finetune",
    "relevance-guided fine-tuning of the default ViT at K = 50: seconds, and the ratio to plain training steps",
    _run,
)
