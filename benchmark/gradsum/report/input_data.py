"""The report's "Issues in the input data" section: map mass on void pixels, and the images whose profile
lies far from the rest (`gradsum.aggregation.outliers`), drawn as thumbnails of the frame under its labels
and under the map.

The thumbnails need frames and maps, which a results folder does not keep: the pipeline draws them
(`Thumbnail`, at most `MAX_SHOWN` per model, chosen by `shown_outliers`) and `gradsum report` re-embeds
the PNGs already under plots/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradsum.aggregation.outliers import CUTOFF_SDS, MAD_TO_SD, SCALE_FLOOR, cutoff
from gradsum.contract import INPUT_DATA
from gradsum.errors import ShapeError
from gradsum.report.page import paragraph, table
from gradsum.report.plots import label
from gradsum.report.results import Results

#: A model × method whose median image puts more than this share of the map's mass on void pixels gets a
#: sentence: a tenth of what the map marks is more than most classes' whole share, and no profile sees it.
VOID_WARNING = 0.10
#: Outlier thumbnails per model, the farthest first: enough to see a pattern, few enough to look at.
MAX_SHOWN = 4
#: Outlier thumbnails in all: a run of many models (a compression study's 36) shows the farthest of them,
#: as many as five models fill, not a page of a hundred photographs (every outlier stays in the table).
MAX_SHOWN_IN_ALL = 5 * MAX_SHOWN
#: Frame rows of a thumbnail: full-resolution frames are shrunk to this height (aspect kept).
THUMBNAIL_HEIGHT = 96
#: How the page heads `void_summary`'s columns and the listed outliers' figures.
HEADERS = {
    "void_mass_median": "void mass share, median image",
    "void_mass_max": "void mass share, most",
    "void_area_median": "void area share, median image",
    "outliers": "outliers",
    "cutoff": "distance cut-off",
    "distance": "distance (robust SDs)",
    "void_share": "void mass share",
}


@dataclass(frozen=True)
class Thumbnail:
    """One outlier to draw: the frame (H, W, 3), its Cityscapes ids (H, W) and the map (H, W), at one
    display size, with the model × method and image it belongs to."""

    model: str
    method: str
    image: str
    frame: np.ndarray
    labels: np.ndarray
    heat: np.ndarray

    def __post_init__(self) -> None:
        if self.labels.shape != self.heat.shape or self.frame.shape != (*self.heat.shape, 3):
            raise ShapeError(
                f"thumbnail {self.image!r}: frame {self.frame.shape}, labels {self.labels.shape} and map "
                f"{self.heat.shape} must share one (H, W)"
            )


def thumbnail_size(height: int, width: int) -> tuple[int, int]:
    """The display size of a frame of `height` × `width`: `THUMBNAIL_HEIGHT` rows at most, aspect kept."""
    if height <= THUMBNAIL_HEIGHT:
        return height, width
    return THUMBNAIL_HEIGHT, max(1, round(width * THUMBNAIL_HEIGHT / height))


def shown_outliers(input_data: pd.DataFrame) -> pd.DataFrame:
    """The outliers the report draws: per model the `MAX_SHOWN` farthest flagged images over its methods
    (an image once, under the method that finds it farthest), and of those the `MAX_SHOWN_IN_ALL` farthest;
    farthest first, models in name order."""
    order = ["model", "distance", "method", "image"]
    ascending = [True, False, True, True]
    flagged = input_data[input_data["outlier"]].sort_values(order, ascending=ascending, kind="stable")
    once = flagged.drop_duplicates(["model", "image"])
    per_model = once.groupby("model", sort=True).head(MAX_SHOWN)
    farthest = per_model.sort_values("distance", ascending=False, kind="stable").head(MAX_SHOWN_IN_ALL)
    return farthest.sort_values(order, ascending=ascending, kind="stable").reset_index(drop=True)


def thumbnail_caption(row: pd.Series, cutoffs: dict[tuple[str, str], float]) -> str:
    """What a thumbnail shows: the model · method, the image and its distance against the cut-off."""
    limit = cutoffs[(str(row["model"]), str(row["method"]))]
    return (
        f"{label(str(row['model']), str(row['method']))}, image {row['image']}: {row['distance']:.1f} robust "
        f"SDs from the median profile (cut-off {limit:.1f}); left its labels, right its map"
    )


def outlier_cutoffs(input_data: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(model, method) → the distance above which an image is an outlier."""
    return {
        (str(model), str(method)): cutoff(group["distance"].to_numpy(np.float64))
        for (model, method), group in input_data.groupby(["model", "method"], sort=True)
    }


def void_summary(input_data: pd.DataFrame) -> pd.DataFrame:
    """Per model × method: images, the void mass share's median and maximum over images, the void area
    share's median, the outliers and the cut-off."""
    cutoffs = outlier_cutoffs(input_data)
    groups = input_data.groupby(["model", "method"], sort=True)
    summary = groups.agg(
        images=("image", "size"),
        void_mass_median=("void_share", "median"),
        void_mass_max=("void_share", "max"),
        void_area_median=("void_area_share", "median"),
        outliers=("outlier", "sum"),
    ).reset_index()
    summary["cutoff"] = [
        cutoffs[(str(m), str(k))] for m, k in zip(summary["model"], summary["method"], strict=True)
    ]
    return summary


def void_sentences(summary: pd.DataFrame) -> list[str]:
    """One sentence per model × method whose median void mass share exceeds `VOID_WARNING`."""
    return [
        f"{label(str(r.model), str(r.method))}: the median image puts {r.void_mass_median:.0%} of the map's "
        f"mass on void pixels ({r.void_area_median:.0%} of its area): the profile is blind to "
        f"{r.void_mass_median:.0%} of what the map marks."
        for r in summary.itertuples(index=False)
        if math.isfinite(r.void_mass_median) and r.void_mass_median > VOID_WARNING
    ]


def input_data_section(results: Results) -> str:
    """The section's text ("" for a folder written before the input_data table existed)."""
    data = results.input_data
    if data is None or data.empty:
        return ""
    summary = void_summary(data)
    warnings = void_sentences(summary)
    void = paragraph(
        "Mass on void: the share of each map's mass on pixels whose class the profile does not count "
        "(unlabelled and ignored Cityscapes ids), at the run's resolution. Where it is large, the profile is "
        "blind to what the model uses there. "
        + (
            f"No model × method puts more than {VOID_WARNING:.0%} of its mass on void in the median image."
            if not warnings
            else ""
        )
    )
    outliers = paragraph(
        "Outliers: an image's profile is its classes' shares of the map's mass; its distance is the root mean "
        "square over its classes of (share − median share) ÷ (MAD × "
        f"{MAD_TO_SD:.4f}, at least {SCALE_FLOOR:g}), medians and MADs over the model × method's images, absent "
        f"classes left out. An image is an outlier above the median distance + {CUTOFF_SDS:g} × {MAD_TO_SD:.4f} × "
        "the distances' MAD (the robust 3-sigma rule of Leys et al., \"Detecting outliers: Do not use standard "
        'deviation around the mean, use absolute deviation around the median", 2013). Outliers are where '
        f"a model does something unusual or the label is wrong; the {MAX_SHOWN} farthest per model are "
        f"drawn below ({MAX_SHOWN_IN_ALL} at most in all, the farthest). Every image's figures are in {INPUT_DATA.file}."
    )
    shown = shown_outliers(data)
    listed = (
        table(shown[["model", "method", "image", "distance", "void_share"]].rename(columns=HEADERS))
        if not shown.empty
        else paragraph("No image lies beyond the cut-off for any model × method.")
    )
    sentences = "".join(paragraph(s, "finding") for s in warnings)
    return void + sentences + table(summary.rename(columns=HEADERS)) + outliers + listed
