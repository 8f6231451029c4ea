"""Bench suite `train`: train the default models on the synthetic set; record time and held-out metrics."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gradsum.bench import BenchSuite
from gradsum.models import load_spec, train_model
from gradsum.truthsets.layout import MANIFEST

#: the default models the pipeline uses, then the obstacle hybrid (the ViT quality target covers it too)
MODELS = ("pilotnet", "vit", "hybrid_vit", "compact_cnn", "vit_obstacle", "hybrid_obstacle")
#: truth set to train on (override with GRADSUM_BENCH_TRUTHSET)
TRUTHSET = Path("datasets/synthetic")


def _run(quick: bool, device: str) -> dict[str, Any]:
    root = Path(os.environ.get("GRADSUM_BENCH_TRUTHSET", TRUTHSET))
    if not (root / MANIFEST).is_file():
        return {"skipped": f"no truth set at {root}; run `gradsum generate --out {root}` first"}
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(min(threads, 2))  # the quality targets are stated for a 2-core CPU
    figures: dict[str, Any] = {"truthset": str(root), "threads": torch.get_num_threads(), "models": {}}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for name in MODELS[:2] if quick else MODELS:
                spec = load_spec(name)
                spec = spec.with_train(epochs=1) if quick else spec
                start = time.perf_counter()
                card = train_model(spec, root, out=Path(scratch) / name, device=device, progress=False)
                figures["models"][name] = {
                    "task": card.task,
                    "seconds_total": round(time.perf_counter() - start, 1),
                    "epochs_run": card.epochs_run,
                    "best_epoch": card.best_epoch,
                    "metrics": card.metrics,
                }
    finally:
        torch.set_num_threads(threads)
    return figures


SUITE = BenchSuite(
    "train", "train the default models on the synthetic set: seconds and held-out metrics", _run
)
