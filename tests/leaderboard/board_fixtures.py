"""A two-seed, three-image leaderboard fixture whose pooled figures, ranks and Kendall's W are worked out by hand
in tests/leaderboard/test_board.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from gradsum.evaluation.base import CHANCE, CONTROL, Criterion

MODEL = "pilotnet"
SEEDS = (0, 2)
IMAGES = ("im0", "im1", "im2")
ORACLE, NULL = "control:oracle", "null:random"
METHODS = ("gradcam", "ig", "saliency")
ROLES = {ORACLE: CONTROL, NULL: CHANCE}
CAUSAL = Criterion("causal", "causal", threshold=0.5)
LOCALISATION = Criterion("localisation", "localisation", denominator="localisation_area")
CRITERIA = (CAUSAL, LOCALISATION)
#: criterion → row → (seed 0 figure, seed 2 figure); each seed's per-image values are figure + SPREAD
FIGURES: dict[str, dict[str, tuple[float, float]]] = {
    "causal": {
        ORACLE: (1.0, 1.0),
        "gradcam": (0.8, 0.7),
        "ig": (0.7, 0.8),
        "saliency": (0.5, 0.4),
        NULL: (0.5, 0.5),
    },
    "localisation": {
        ORACLE: (0.9, 0.9),
        "gradcam": (0.6, 0.5),
        "ig": (0.8, 0.7),
        "saliency": (0.5, 0.6),
        NULL: (0.2, 0.3),
    },
}
SPREAD = (-0.1, 0.0, 0.1)
#: seed → every image's denominator of the ratio criterion (localisation): value = figure-ish × it
AREA = {0: 2.0, 2: 1.0}


def per_seed(
    figures: Mapping[str, Mapping[str, tuple[float, float]]] = FIGURES, spread: Sequence[float] = SPREAD
) -> dict[int, pd.DataFrame]:
    """training seed → the `criteria_per_image` rows of MODEL on that seed (image values figure + spread)."""
    frames = {}
    for position, seed in enumerate(SEEDS):
        rows = []
        for criterion in CRITERIA:
            ratio = criterion.denominator is not None
            for method, values in figures[criterion.key].items():
                for image, offset in zip(IMAGES, spread, strict=True):
                    value = values[position] + offset
                    rows.append(
                        {
                            "model": f"{MODEL}_s{seed}",
                            "method": method,
                            "role": ROLES.get(method, "method"),
                            "criterion": criterion.key,
                            "image": image,
                            "value": value * AREA[seed] if ratio else value,
                            "denominator": AREA[seed] if ratio else float("nan"),
                        }
                    )
        frames[seed] = pd.DataFrame(rows)
    return frames
