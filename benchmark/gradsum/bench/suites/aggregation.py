"""Aggregation cost: batched class scores vs GradCAM on PilotNet and vs a per-class numpy masking loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gradsum.aggregation import class_scores, prepare_labels
from gradsum.attribution import attribute
from gradsum.bench import BenchSuite, timeit
from gradsum.models import ARCHITECTURES
from gradsum.truthsets.labels import NUM_CITYSCAPES_IDS, ignored_cityscapes_ids

LABEL_SIZE = (1024, 2048)
GRID = (64, 128)
#: aggregation may cost at most this share of the attribution of the same batch
TARGET_SHARE = 0.05
#: and must beat the numpy loop by at least this factor
TARGET_SPEEDUP = 20.0


def blob_labels(batch: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Random Cityscapes ids in rectangular blobs (a 16×32 grid of random ids, nearest-upsampled)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, NUM_CITYSCAPES_IDS, (batch, 1, 16, 32), generator=generator, dtype=torch.uint8)
    return F.interpolate(coarse.float(), size=size, mode="nearest")[:, 0].to(torch.uint8)


def numpy_loop(maps: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The naive reference: one boolean mask per image and kept class, maps already at the label resolution."""
    scores = np.full((maps.shape[0], NUM_CITYSCAPES_IDS), np.nan)
    kept = sorted(set(range(NUM_CITYSCAPES_IDS)) - set(ignored_cityscapes_ids()))
    for image in range(maps.shape[0]):
        for class_id in kept:
            mask = labels[image] == class_id
            count = mask.sum()
            if count:
                scores[image, class_id] = maps[image][mask].sum() / count
    return scores


def run(quick: bool, device: str) -> dict[str, Any]:
    """Time class_scores (one-shot and on prepared labels), GradCAM on PilotNet and the numpy loop on one batch.

    Targets are judged on the one-shot label-resolution call; the prepared path (labels turned into
    per-class cell weights once, then one matrix product per model × method) is reported beside it.
    """
    batch, repeats = (2, 1) if quick else (4, 3)
    labels = blob_labels(batch, LABEL_SIZE).to(device)
    maps = torch.rand(batch, *GRID, generator=torch.Generator().manual_seed(1)).to(device)
    label_s = timeit(lambda: class_scores(maps, labels), repeats=repeats)
    grid_s = timeit(lambda: class_scores(maps, labels, resolution="grid"), repeats=repeats)
    prepare_s = timeit(lambda: prepare_labels(labels, GRID), repeats=repeats)
    prepared = prepare_labels(labels, GRID)
    prepared_s = timeit(lambda: class_scores(maps, prepared), repeats=max(repeats, 5))

    model = ARCHITECTURES.get("pilotnet")(img_size=LABEL_SIZE).to(device).eval()
    images = torch.rand(batch, 3, *LABEL_SIZE, generator=torch.Generator().manual_seed(2)).to(device)
    attribution_s = timeit(lambda: attribute(model, images, "gradcam"), repeats=repeats)

    upsampled = F.interpolate(maps[:, None], size=LABEL_SIZE, mode="bilinear", align_corners=False)[:, 0]
    maps_np, labels_np = upsampled.cpu().numpy(), labels.cpu().numpy()
    numpy_s = timeit(lambda: numpy_loop(maps_np, labels_np), repeats=repeats)
    reference = numpy_loop(maps_np, labels_np)
    agree = all(
        np.allclose(reference, scores.score.cpu().numpy(), rtol=1e-4, equal_nan=True)
        for scores in (class_scores(maps, labels), class_scores(maps, prepared))
    )

    share, speedup = label_s / attribution_s, numpy_s / label_s
    return {
        "batch": batch,
        "label_size": list(LABEL_SIZE),
        "map_grid": list(GRID),
        "classes": NUM_CITYSCAPES_IDS,
        "attribution": "gradsum.attribution.attribute(pilotnet, gradcam)",
        "class_scores_label_seconds": round(label_s, 4),
        "class_scores_grid_seconds": round(grid_s, 4),
        "prepare_labels_seconds": round(prepare_s, 4),
        "class_scores_prepared_seconds": round(prepared_s, 5),
        "attribution_seconds": round(attribution_s, 4),
        "numpy_loop_seconds": round(numpy_s, 4),
        "aggregation_share_of_attribution": round(share, 4),
        "share_target": TARGET_SHARE,
        "meets_share_target": share <= TARGET_SHARE,
        "speedup_vs_numpy_loop": round(speedup, 1),
        "grid_speedup_vs_numpy_loop": round(numpy_s / grid_s, 1),
        "prepared_share_of_attribution": round(prepared_s / attribution_s, 5),
        "prepared_speedup_vs_numpy_loop": round(numpy_s / prepared_s, 1),
        "speedup_target": TARGET_SPEEDUP,
        "meets_speedup_target": speedup >= TARGET_SPEEDUP,
        "numpy_loop_agrees": bool(agree),
    }


SUITE = BenchSuite(
    "aggregation",
    "class scores at 1024×2048 labels: share of GradCAM time and speed-up over a numpy masking loop",
    run,
)
