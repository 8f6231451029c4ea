"""The pipeline's outputs: the tables of a results folder, its model cards and its manifest."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gradsum import contract
from gradsum.contract import write_table
from gradsum.evaluation.attention import (
    ATTENTION_ENTROPY,
    ATTENTION_ROWS,
    entropy_table,
    layer_profile_table,
)
from gradsum.fileio import atomic_write_json
from gradsum.models import model_family
from gradsum.models.inputs import INPUT_TRANSFORM
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import RunConfig
from gradsum.truthsets import TruthSet
from gradsum.utils import library_versions


def write_tables(
    folder: Path,
    per_image: pd.DataFrame,
    profile_table: pd.DataFrame,
    comparisons: pd.DataFrame | None,
    truth: pd.DataFrame,
    attention: dict[str, pd.DataFrame],
    models: list[LoadedModel],
    n_resamples: int,
    seed: int,
    input_data: pd.DataFrame | None = None,
) -> list[Path]:
    """Write the aggregation tables; `attention` holds the shards' attention tables, concatenated, and
    `input_data` the void shares and outlier distances (None where the shards predate them)."""
    written = [
        write_table(folder, contract.PER_IMAGE, per_image),
        write_table(folder, contract.PROFILES, profile_table),
        write_table(folder, contract.GROUND_TRUTH, truth),
    ]
    if input_data is not None:
        written.append(write_table(folder, contract.INPUT_DATA, input_data))
    if comparisons is not None:
        written.append(write_table(folder, contract.COMPARISONS, comparisons))
    rows, sums = attention.get(ATTENTION_ROWS), attention.get(ATTENTION_ENTROPY)
    if rows is not None and sums is not None and not sums.empty:
        written.append(write_table(folder, contract.ATTENTION, entropy_table(sums)))
        written.append(
            write_table(folder, contract.ATTENTION_PROFILES, layer_profile_table(rows, n_resamples, seed))
        )
    for model in models:
        written.append(folder / contract.CARDS / f"{model.name}.json")
        atomic_write_json(written[-1], model.card)
    return written


def manifest(
    config: RunConfig,
    truthset: TruthSet,
    models: list[LoadedModel],
    started: datetime,
    timings: dict[str, float],
    device: str,
) -> dict[str, Any]:
    return {
        "config": asdict(config),
        "truthset": truthset.describe(),
        "models": {m.name: m.card for m in models},
        "families": {m.name: model_family(m.module) for m in models},
        "methods": [asdict(m) for m in config.methods],
        "normalisation": config.normalise,
        "precision": config.precision,
        "resolution": config.resolution,
        "input_transform": INPUT_TRANSFORM,
        "targets": dict(config.targets),
        "versions": library_versions(),
        "seeds": {"run": config.seed, "bootstrap": config.seed},
        "device": device,
        # CPU float sums follow the thread count's split of the work: repeating a run bit for bit needs it
        "torch_threads": torch.get_num_threads(),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "stage_seconds": timings,
    }


def frame_sizes(frames: pd.DataFrame, models: list[LoadedModel]) -> dict[str, object]:
    """The split's frame sizes, and for each model whether (and how) they were resized to its input."""
    sizes = frames.groupby(["height", "width"]).size().sort_index()
    seen = [{"height": int(h), "width": int(w), "frames": int(n)} for (h, w), n in sizes.items()]
    return {
        "frames": seen,
        "resized": {
            m.name: [
                f"{s['height']}×{s['width']} → {m.img_size[0]}×{m.img_size[1]}"
                for s in seen
                if (s["height"], s["width"]) != m.img_size
            ]
            for m in models
        },
    }
