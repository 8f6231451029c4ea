"""Per-image tables and dataset profiles (class means with bootstrap confidence intervals)."""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.scores import ClassScores
from gradsum.contract import PER_IMAGE, PROFILES
from gradsum.errors import GradSUMError
from gradsum.truthsets.labels import CITYSCAPES

#: Columns of the per_image table, in order (declared by the results contract).
PER_IMAGE_COLUMNS = PER_IMAGE.names
#: The per-image figures that get a profile mean and a confidence interval.
PROFILE_STATISTICS = ("score", "mass_share", "lift")
#: Columns of the profiles table, in order (declared by the results contract).
PROFILE_COLUMNS = PROFILES.names
_PROFILE_NAMES = {"score": "score_mean", "mass_share": "mass_share", "lift": "lift"}


def per_image_frame(scores: ClassScores, image_ids: Sequence[str], model: str, method: str) -> pd.DataFrame:
    """The per_image rows of one batch: one per image × present, non-ignored class."""
    if len(image_ids) != scores.num_images:
        raise GradSUMError(f"image_ids has {len(image_ids)} ids for {scores.num_images} images")
    cpu = scores.cpu()
    image_index, class_ids = (part.numpy() for part in cpu.present.nonzero(as_tuple=True))
    names = np.array([_class_name(c) for c in range(scores.num_classes)], dtype=object)

    def pick(values: object) -> np.ndarray:
        return np.asarray(values)[image_index, class_ids]

    frame = pd.DataFrame(
        {
            "model": model,
            "method": method,
            "image": np.asarray([str(i) for i in image_ids], dtype=object)[image_index],
            "class_id": class_ids.astype(np.int64),
            "class": names[class_ids],
            "pixels": pick(cpu.pixels.numpy()).astype(np.int64),
            "area_share": pick(cpu.area_share.numpy()),
            "score": pick(cpu.score.numpy()),
            "mass_share": pick(cpu.mass_share.numpy()),
            "lift": pick(cpu.lift.numpy()),
        },
        columns=list(PER_IMAGE_COLUMNS),
    )
    return frame


def _class_name(class_id: int) -> str:
    info = CITYSCAPES.by_id.get(class_id)
    return info.name if info is not None else f"class_{class_id}"


def profiles(
    per_image: pd.DataFrame,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> pd.DataFrame:
    """One row per model × method × class: means over images containing the class, with bootstrap CIs."""
    check_columns(per_image, PER_IMAGE_COLUMNS, "per_image")
    rows = []
    for (model, method_name, class_id), group in per_image.groupby(
        ["model", "method", "class_id"], sort=True
    ):
        row: dict[str, object] = {
            "model": model,
            "method": method_name,
            "class": group["class"].iloc[0],
            "class_id": int(class_id),
            "category": _category(int(class_id)),
        }
        for statistic in PROFILE_STATISTICS:
            key = f"{model}\0{method_name}\0{class_id}\0{statistic}"
            rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
            mean, low, high = mean_ci(group[statistic].to_numpy(float), rng, n_resamples, confidence, method)
            name = _PROFILE_NAMES[statistic]
            row.update({name: mean, f"{statistic}_ci_low": low, f"{statistic}_ci_high": high})
        row["n_images"] = int(group["image"].nunique())
        rows.append(row)
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


def _category(class_id: int) -> str:
    info = CITYSCAPES.by_id.get(class_id)
    return info.category if info is not None else ""


def mean_ci(
    values: np.ndarray,
    rng: np.random.Generator,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    method: str = "percentile",
) -> tuple[float, float, float]:
    """Mean and bootstrap CI of the finite `values`; a single or constant sample gets the value as its CI."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(finite.mean())
    # The bootstrap of one value or of a constant sample is degenerate (BCa divides by zero).
    if finite.size == 1 or np.ptp(finite) == 0:
        return mean, mean, mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(
            (finite,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method=method,
            vectorized=True,
            rng=rng,
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        # BCa can fail on nearly degenerate samples; the percentile interval is always defined.
        return mean_ci(finite, rng, n_resamples, confidence, "percentile")
    return mean, low, high


def check_columns(frame: pd.DataFrame, columns: Sequence[str], table: str) -> None:
    """Raise naming the `table` and the first missing column when `frame` lacks one of `columns`."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise GradSUMError(f"{table}: missing column(s) {', '.join(missing)}")
