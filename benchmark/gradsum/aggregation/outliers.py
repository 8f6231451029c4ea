"""Issues in the input data: mass on void pixels and images whose profile lies far from the rest.

Two per-image figures for every model × method, written as the results folder's `input_data` table:

- **void share**: the share of the map's mass on void / ignored ids (`ClassScores.void_share`), which no
  profile counts. Where it is large, the profile is blind to much of what the model uses.
- **outlier distance**: how far the image's profile lies from the model × method's median profile, in
  robust standard deviations. Far images are where the model does something unusual, or the label is wrong.

The profile vector of an image is its per-class mass shares. They sum to one over the image's present
classes whatever the map's normalisation, so images compare without rescaling, and unlike the score or
the lift they do not blow up on a class covering a few pixels. The price: an image with an unusual class
composition (most of it sky) lies far too; that is an input-data issue worth seeing as well.

The centre is the per-class median over the images holding the class, the scale the per-class median
absolute deviation (MAD) × 1.4826, the standard deviation of a normal sample with that MAD. An image's
distance is the root mean square over its present classes of (share − median) ÷ scale: absent classes are
missing, never zeros, so an image is not far for lacking a class. The cut-off is the usual robust
3-sigma rule applied to the distances themselves: an image is an outlier where its distance exceeds
median + 3 × 1.4826 × MAD of the model × method's distances (C. Leys, C. Ley, O. Klein, P. Bernard,
L. Licata, "Detecting outliers: Do not use standard deviation around the mean, use absolute deviation
around the median", Journal of Experimental Social Psychology 49(4), 2013).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.profiles import check_columns
from gradsum.aggregation.scores import ClassScores
from gradsum.contract import INPUT_DATA, PER_IMAGE
from gradsum.errors import GradSUMError

#: The per-image figure an image's profile vector is made of (see the module's docstring for why).
PROFILE_FIGURE = "mass_share"
#: The MAD of a normal sample times this is its standard deviation (1 / Φ⁻¹(3/4) ≈ 1.4826), the factor
#: scipy's `median_abs_deviation(scale="normal")` divides by the reciprocal of.
MAD_TO_SD = float(1 / stats.norm.ppf(0.75))
#: A class whose share barely varies over images (MAD 0: the class on one image, or a constant share)
#: gets one percentage point of mass share as its scale, so that a deviation of a hundredth of the map's
#: mass counts as one robust standard deviation rather than an infinite one.
SCALE_FLOOR = 0.01
#: Outliers lie more than this many robust standard deviations of the distances above their median
#: (Leys et al. 2013 propose 3 as the default, 2.5 as moderately conservative).
CUTOFF_SDS = 3.0
#: The void columns the pipeline's per-batch rows carry (the distance and flag are added once all are in).
VOID_COLUMNS = ("model", "method", "image", "void_share", "void_area_share")
_KEYS = ["model", "method"]


def void_frame(scores: ClassScores, image_ids: Sequence[str], model: str, method: str) -> pd.DataFrame:
    """One row per image of a batch: the shares of its map's mass and of its area on void ids."""
    if len(image_ids) != scores.num_images:
        raise GradSUMError(f"image_ids has {len(image_ids)} ids for {scores.num_images} images")
    cpu = scores.cpu()
    return pd.DataFrame(
        {
            "model": model,
            "method": method,
            "image": np.asarray([str(i) for i in image_ids], dtype=object),
            "void_share": cpu.void_share.numpy().astype(np.float64),
            "void_area_share": cpu.void_area_share.numpy().astype(np.float64),
        },
        columns=list(VOID_COLUMNS),
    )


def robust_scale(values: np.ndarray) -> float:
    """MAD × 1.4826 of the finite `values` (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    return float(stats.median_abs_deviation(finite, scale="normal"))


def cutoff(distances: np.ndarray) -> float:
    """The outlier cut-off of one model × method's distances: median + 3 × MAD × 1.4826 (NaN if none)."""
    finite = distances[np.isfinite(distances)]
    if finite.size == 0:
        return float("nan")
    return float(np.median(finite)) + CUTOFF_SDS * robust_scale(finite)


def outlier_distances(per_image: pd.DataFrame) -> pd.DataFrame:
    """model, method, image, distance and outlier flag of every image of the per_image table.

    An image whose every share is undefined (a map of no mass) gets a NaN distance and is no outlier.
    """
    check_columns(per_image, PER_IMAGE.names, PER_IMAGE.name)
    parts = [_distances(group) for _, group in per_image.groupby(_KEYS, sort=True)]
    if not parts:
        return pd.DataFrame(columns=[*_KEYS, "image", "distance", "outlier"])
    return pd.concat(parts, ignore_index=True)


def _distances(rows: pd.DataFrame) -> pd.DataFrame:
    """The distances of one model × method's images (an image × class grid, NaN where absent)."""
    grid = rows.pivot_table(
        index="image", columns="class_id", values=PROFILE_FIGURE, aggfunc="first", dropna=False
    )
    shares = grid.to_numpy(np.float64)
    with warnings.catch_warnings():
        # a class whose every share is undefined (maps of no mass) has no centre: its column stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        centre = np.nanmedian(shares, axis=0)
        scale = stats.median_abs_deviation(shares, axis=0, scale="normal", nan_policy="omit")
    scale = np.fmax(scale, SCALE_FLOOR)
    standardised = (shares - centre) / scale
    present = np.isfinite(standardised)
    counts = present.sum(axis=1)
    squares = np.where(present, standardised**2, 0.0).sum(axis=1)
    distance = np.full(len(grid), np.nan)
    np.divide(squares, counts, out=distance, where=counts > 0)
    distance = np.sqrt(distance)
    limit = cutoff(distance)
    return pd.DataFrame(
        {
            "model": rows["model"].iloc[0],
            "method": rows["method"].iloc[0],
            "image": grid.index.astype(str).to_numpy(dtype=object),
            "distance": distance,
            "outlier": np.isfinite(distance) & (distance > limit),
        }
    )


def input_data_table(per_image: pd.DataFrame, voids: pd.DataFrame) -> pd.DataFrame:
    """The results folder's `input_data` table: the void rows with each image's distance and flag."""
    check_columns(voids, VOID_COLUMNS, "void rows")
    keys = [*_KEYS, "image"]
    merged = voids.merge(outlier_distances(per_image), on=keys, how="left", validate="one_to_one")
    # an image with no row in per_image (all of it void) has no profile: no distance, no outlier
    merged["outlier"] = merged["outlier"].eq(True)
    return merged.sort_values(keys, kind="stable").reset_index(drop=True)[list(INPUT_DATA.names)]
