"""Per-image agreement of a method's class masses with the causal referee, in like units.

The referee's effect of erasing a class is a total (the output change when all its pixels go), so the
method is read as a total too: the class's share of the map's mass (`mass_share`, a sum over the
class's pixels), not its density. Per model × method × image:

- `concordance`: the referee's effect per class is e_c = |Δ erase| for the model's material classes
  and 0 for the others (immaterial classes tie: their order is not a measurement of use). Over the class
  pairs of the image whose e differ by more than the task's margin δ (the pairs the referee separates),
  the fraction the method orders the same way by mass, a method tie counting one half. NaN where the
  referee separates no pair. Chance is 0.5; the uniform map (mass = area) is a legitimate null.
- `image_concordance`: does the map follow the referee from image to image? For each material class c of
  this image and each other evaluated image holding c whose effect of c differs from this one's by more
  than δ, whether the method's mass share of c orders the two images as the referee's effect share does
  (c's share of the image's summed erasure effects: like units, both per-image shares). A class ranking
  that is the same on every image (a map built for another image, or for no image) scores chance here
  even where it orders the classes of every image right. NaN where no such pair exists.
- `material_mass` and `material_area`: the mass share and the area share summed over the image's
  material classes (NaN where it has none). The lift mean(material_mass) / mean(material_area) is 1
  for the uniform map.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS, check_columns
from gradsum.evaluation.agreement import JOIN, tie_rounded
from gradsum.evaluation.materiality import margin_of

log = logging.getLogger(__name__)

#: Columns of the causal check's per-image figures: one row per model × method × image.
CAUSAL_PER_IMAGE_COLUMNS = (
    "model",
    "method",
    "image",
    "concordance",
    "image_concordance",
    "material_mass",
    "material_area",
)
#: Columns of the per model × method figures (`causal_figures`).
FIGURE_COLUMNS = (
    "model",
    "method",
    "concordance",
    "image_concordance",
    "causal_lift",
    "n_material",
    "material_classes",
)
#: The causal-effect columns read here (a subset of `causal.CAUSAL_EFFECT_COLUMNS`).
EFFECT_COLUMNS = ("model", "task", "image", "class", "abs_delta")


def referee_effects(abs_delta: np.ndarray, material: np.ndarray) -> np.ndarray:
    """(I, C) |Δ erase| on the material classes (`material` (C,) bool), 0 on the others; NaN (the class
    is absent from the image) stays NaN."""
    effects = np.asarray(abs_delta, dtype=float)
    return np.where(np.isnan(effects), np.nan, np.where(np.asarray(material, dtype=bool), effects, 0.0))


def pair_concordance(effects: np.ndarray, mass: np.ndarray, margin: float) -> np.ndarray:
    """(I,) per image: over the class pairs whose `effects` differ by more than `margin`, the fraction
    `mass` orders the same way (a tie in mass counts 0.5); NaN where no pair is separated.

    `effects` and `mass` are (I, C) with NaN where a class is absent. Masses equal to `TIE_DIGITS`
    relative digits tie, so float noise in a flat map ranks nothing.
    """
    effects, mass = np.asarray(effects, dtype=float), tie_rounded(np.asarray(mass, dtype=float))
    first, second = np.triu_indices(effects.shape[-1], k=1)
    gap = effects[:, first] - effects[:, second]
    order = mass[:, first] - mass[:, second]
    with np.errstate(invalid="ignore"):
        separated = (np.abs(gap) > margin) & np.isfinite(order)
    # sign agreement 1, tie 0.5, disagreement 0: (1 + sign(gap) · sign(order)) / 2
    agreement = (1.0 + np.sign(np.nan_to_num(gap)) * np.sign(np.nan_to_num(order))) / 2.0
    pairs = separated.sum(axis=1)
    total = np.where(separated, agreement, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, total / pairs, np.nan)


def image_concordance(
    effects: np.ndarray, mass: np.ndarray, material: np.ndarray, margin: float
) -> np.ndarray:
    """(I,) per image: over (material class c, other image j) pairs whose |Δ| of c differs by more than
    `margin`, the fraction `mass` (mass shares) orders the two images as the effect shares do (a tie in
    mass counts 0.5, a tie in effect share is not separated); NaN where no pair exists.

    `effects` (I, C) are the raw |Δ erase| (NaN: absent), `material` (C,) bool.
    """
    effects, mass = np.asarray(effects, dtype=float), np.round(np.asarray(mass, dtype=float), 12)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = effects / np.nansum(effects, axis=1, keepdims=True)
    total, pairs = np.zeros(effects.shape[0]), np.zeros(effects.shape[0])
    for c in np.flatnonzero(np.asarray(material, dtype=bool)):
        e, s, m = effects[:, c], shares[:, c], mass[:, c]
        gap, order = s[:, None] - s[None, :], m[:, None] - m[None, :]
        with np.errstate(invalid="ignore"):
            separated = (np.abs(e[:, None] - e[None, :]) > margin) & (gap != 0) & np.isfinite(gap + order)
        agreement = (1.0 + np.sign(np.nan_to_num(gap)) * np.sign(np.nan_to_num(order))) / 2.0
        total += np.where(separated, agreement, 0.0).sum(axis=1)
        pairs += separated.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, total / pairs, np.nan)


def material_shares(
    mass_share: np.ndarray, area_share: np.ndarray, material: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(I,) mass share and area share summed over the material classes present in each image (NaN
    where none is present). A present class with an undefined mass share (a map of zero mass) makes the
    image's mass NaN: no mass figure, rather than a mass of 0."""
    present = np.isfinite(np.asarray(area_share, dtype=float)) & np.asarray(material, dtype=bool)
    any_present = present.any(axis=1)
    mass = np.where(present, mass_share, 0.0).sum(axis=1)
    area = np.where(present, area_share, 0.0).sum(axis=1)
    return np.where(any_present, mass, np.nan), np.where(any_present, area, np.nan)


def causal_per_image(
    gradsum_rows: pd.DataFrame,
    effects: pd.DataFrame,
    material: Mapping[str, Sequence[str]],
    margins: Mapping[str, float],
) -> pd.DataFrame:
    """`CAUSAL_PER_IMAGE_COLUMNS` for every model × method of `gradsum_rows` whose model has effects,
    over the images both hold. `material` maps a model to its material classes (`material_classes`)."""
    check_columns(gradsum_rows, PER_IMAGE_COLUMNS, "gradsum rows")
    check_columns(effects, EFFECT_COLUMNS, "causal effects")
    frames = []
    for (model, method), group in gradsum_rows.groupby(["model", "method"], sort=True):
        model_effects = effects[effects["model"] == model]
        if model_effects.empty:
            log.warning("model %s has no causal effects; no causal figures for method %s", model, method)
            continue
        margin = margin_of(str(model_effects["task"].iloc[0]), margins)
        frames.append(
            _per_image(str(model), str(method), group, model_effects, material.get(str(model), ()), margin)
        )
    if not frames:
        return pd.DataFrame(columns=list(CAUSAL_PER_IMAGE_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def _per_image(
    model: str,
    method: str,
    gradsum: pd.DataFrame,
    effects: pd.DataFrame,
    material: Sequence[str],
    margin: float,
) -> pd.DataFrame:
    images = sorted(set(gradsum["image"]) & set(effects["image"]))
    classes = sorted(set(gradsum["class"]) | set(effects["class"]))
    mass, area, change = (
        _matrix(frame, column, images, classes)
        for frame, column in ((gradsum, "mass_share"), (gradsum, "area_share"), (effects, "abs_delta"))
    )
    is_material = np.isin(classes, list(material))
    material_mass, material_area = material_shares(mass, area, is_material)
    return pd.DataFrame(
        {
            "model": model,
            "method": method,
            "image": images,
            "concordance": pair_concordance(referee_effects(change, is_material), mass, margin),
            "image_concordance": image_concordance(change, mass, is_material, margin),
            "material_mass": material_mass,
            "material_area": material_area,
        },
        columns=list(CAUSAL_PER_IMAGE_COLUMNS),
    )


def _matrix(frame: pd.DataFrame, column: str, images: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """images × classes of `column`, NaN where the class is absent from the image."""
    table = frame.pivot_table(index="image", columns="class", values=column, aggfunc="mean", dropna=False)
    return table.reindex(index=list(images), columns=list(classes)).to_numpy(float)


def causal_figures(per_image: pd.DataFrame, material: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """`FIGURE_COLUMNS` per model × method of `causal_per_image` rows: concordance is the plain mean over
    the images that define it, the lift the ratio of the means of material mass and material area over
    the images holding a material class (a ratio of means, as the verdict recomputes it)."""
    check_columns(per_image, CAUSAL_PER_IMAGE_COLUMNS, "causal per-image figures")
    rows = []
    for (model, method), group in per_image.groupby(["model", "method"], sort=True):
        classes = tuple(material.get(str(model), ()))
        rows.append(
            {
                "model": model,
                "method": method,
                "concordance": _mean(group["concordance"].to_numpy(float)),
                "image_concordance": _mean(group["image_concordance"].to_numpy(float)),
                "causal_lift": _ratio_of_means(
                    group["material_mass"].to_numpy(float), group["material_area"].to_numpy(float)
                ),
                "n_material": len(classes),
                "material_classes": JOIN.join(classes),
            }
        )
    return pd.DataFrame(rows, columns=list(FIGURE_COLUMNS))


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _ratio_of_means(numerator: np.ndarray, denominator: np.ndarray) -> float:
    both = np.isfinite(numerator) & np.isfinite(denominator)
    if not both.any() or denominator[both].sum() <= 0:
        return math.nan
    return float(numerator[both].mean() / denominator[both].mean())
