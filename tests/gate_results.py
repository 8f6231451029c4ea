"""Small results folders with known figures, for the gate's tests (written with the results contract).

Every image holds every class (car only on images whose number is not a multiple of 4), and each class's
figures are a fixed level plus a per-image wobble that sums to zero over each block of five images, so a
class mean over all 40 images is its level: the baseline's mass-share ranks are road 1, car 2,
building 3, vegetation 4, sky 5 (score ranks: the same order).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradsum.contract import CARDS, MANIFEST, PER_IMAGE, RECOMMENDATIONS, TRUST, write_table
from gradsum.fileio import atomic_write_json

#: class name → (Cityscapes id, score level, mass-share level)
CLASSES: dict[str, tuple[int, float, float]] = {
    "road": (7, 0.60, 0.40),
    "car": (26, 0.50, 0.25),
    "building": (11, 0.30, 0.15),
    "vegetation": (21, 0.20, 0.12),
    "sky": (23, 0.10, 0.08),
}
IMAGES = [f"img{i:03d}" for i in range(40)]
MODEL, METHODS = "vit", ("gradcam", "gradrollout")
TRUTHSET = {
    "kind": "synthetic",
    "root": "datasets/synthetic",
    "split": "test",
    "size": len(IMAGES),
    "tasks": ["steering", "obstacle"],
    "parameters": {"seed": 0, "count": 400, "shortcut": 0.0},
}
CARD = {
    "name": MODEL,
    "task": "steering",
    "architecture": "vit",
    "metrics": {"r2": 0.95, "mae": 0.04, "rmse": 0.07},
}


def wobble(index: int) -> float:
    """A per-image offset that sums to zero over each block of five images: -0.02, -0.01, 0, 0.01, 0.02."""
    return 0.01 * (index % 5 - 2)


def per_image(
    model: str = MODEL, methods: tuple[str, ...] = METHODS, images: list[str] | None = None
) -> pd.DataFrame:
    """The per_image rows of `model` under each method: every class's level plus its image's wobble."""
    rows = []
    for method in methods:
        for index, image in enumerate(images or IMAGES):
            for name, (class_id, score, share) in CLASSES.items():
                if name == "car" and index % 4 == 0:
                    continue
                rows.append(
                    {
                        "model": model,
                        "method": method,
                        "image": image,
                        "class_id": class_id,
                        "class": name,
                        "pixels": 100,
                        "area_share": 0.2,
                        "score": score + wobble(index),
                        "mass_share": share + wobble(index),
                        "lift": (share + wobble(index)) / 0.2,
                    }
                )
    return pd.DataFrame(rows, columns=list(PER_IMAGE.names))


def shifted(frame: pd.DataFrame, name: str, statistic: str, by: float | np.ndarray) -> pd.DataFrame:
    """`frame` with class `name`'s `statistic` raised by `by` (a constant, or one value per row of it)."""
    out = frame.copy()
    rows = out["class"] == name
    out.loc[rows, statistic] = out.loc[rows, statistic] + (
        by if np.isscalar(by) else np.asarray(by)[: rows.sum()]
    )
    return out


def trust(verdicts: Mapping[str, str], model: str = MODEL) -> pd.DataFrame:
    """A trust table with one row per method: its verdict."""
    return pd.DataFrame(
        [
            {
                "model": model,
                "method": m,
                "role": "method",
                "null": False,
                "verdict": v,
                "failed": "",
                "summary": "",
            }
            for m, v in verdicts.items()
        ],
        columns=list(TRUST.names),
    )


def recommendations(method: str, model: str = MODEL) -> pd.DataFrame:
    """The model's recommended method (empty: none)."""
    return pd.DataFrame(
        [{"model": model, "method": method, "passed": 1, "sentence": ""}], columns=list(RECOMMENDATIONS.names)
    )


def write_results(
    folder: Path,
    frame: pd.DataFrame | None = None,
    *,
    truthset: dict[str, Any] | None = None,
    cards: Mapping[str, dict[str, Any]] | None = None,
    verdicts: Mapping[str, str] | None = None,
    recommended: str | None = "gradcam",
) -> Path:
    """A results folder: per_image (default: `per_image()`), trust and recommendations, one card per model,
    and a manifest describing the truth set."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = per_image() if frame is None else frame
    write_table(folder, PER_IMAGE, frame)
    model = str(frame["model"].iloc[0])
    write_table(folder, TRUST, trust(verdicts or dict.fromkeys(METHODS, "pass"), model))
    if recommended is not None:
        write_table(folder, RECOMMENDATIONS, recommendations(recommended, model))
    for name, card in (cards or {model: CARD}).items():
        atomic_write_json(folder / CARDS / f"{name}.json", card)
    atomic_write_json(folder / MANIFEST, {"truthset": truthset or TRUTHSET, "files": {}})
    return folder
