"""Per-image tables built from seeded random scores, so profile and comparison tests need no maps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradsum.aggregation import PER_IMAGE_COLUMNS
from gradsum.truthsets.labels import CITYSCAPES

#: road, sidewalk, building, vegetation, sky, person, car
CLASS_IDS = (7, 8, 11, 21, 23, 24, 26)


def make_per_image(
    model: str, method: str, n_images: int = 30, shift: dict[int, float] | None = None, seed: int = 0
) -> pd.DataFrame:
    """A per_image table whose score for class c is c/40 plus seeded noise (plus `shift[c]`)."""
    rng = np.random.default_rng(seed)
    rows = []
    for image in range(n_images):
        for class_id in CLASS_IDS:
            score = class_id / 40 + rng.normal(0, 0.05) + (shift or {}).get(class_id, 0.0)
            rows.append(
                {
                    "model": model,
                    "method": method,
                    "image": f"img{image:03d}",
                    "class_id": class_id,
                    "class": CITYSCAPES.by_id[class_id].name,
                    "pixels": 100,
                    "area_share": 1 / len(CLASS_IDS),
                    "score": score,
                    "mass_share": score / 4,
                    "lift": score * 2,
                }
            )
    return pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))
