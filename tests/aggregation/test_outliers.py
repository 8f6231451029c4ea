"""Issues in the input data: void shares from hand-made maps and labels, robust outlier distances from
hand-built per-image rows, each against a value worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from gradsum.aggregation import class_scores
from gradsum.aggregation.outliers import (
    MAD_TO_SD,
    SCALE_FLOOR,
    cutoff,
    input_data_table,
    outlier_distances,
    void_frame,
)
from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS
from gradsum.contract import INPUT_DATA
from gradsum.truthsets.labels import CITYSCAPES

VOID = CITYSCAPES.by_name["unlabeled"].id
ROAD, SKY, CAR = (CITYSCAPES.by_name[n].id for n in ("road", "sky", "car"))


def _quadrant_labels() -> torch.Tensor:
    """4 × 4 labels: the top-left 2 × 2 quadrant void, the rest road."""
    labels = torch.full((1, 4, 4), ROAD, dtype=torch.uint8)
    labels[0, :2, :2] = VOID
    return labels


def test_void_share_at_label_resolution_is_the_mass_on_the_void_quadrant() -> None:
    maps = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)
    scores = class_scores(maps, _quadrant_labels())
    # void pixels hold 0 + 1 + 4 + 5 = 10 of the 0 + ... + 15 = 120
    assert scores.void_share.tolist() == pytest.approx([10 / 120], abs=1e-15)
    assert scores.void_area_share.tolist() == [0.25]


def test_a_coarse_map_is_upsampled_before_its_void_mass_is_taken() -> None:
    # bilinear from 2 × 2 to 4 × 4 (align_corners=False) samples 1 + x + 2y at x, y in {0, .25, .75, 1}:
    # the void quadrant holds 1 + 1.25 + 1.5 + 1.75 = 5.5 of 16 × 2.5 = 40
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    scores = class_scores(maps, _quadrant_labels(), resolution="label")
    assert scores.void_share.tolist() == pytest.approx([5.5 / 40], abs=1e-15)


def test_void_share_on_the_map_grid_weighs_each_cell_by_its_void_fraction() -> None:
    # each cell covers a 2 × 2 block; the top-left one (value 1) is all void: 4 · 1 of 4 · (1 + 2 + 3 + 4)
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    scores = class_scores(maps, _quadrant_labels(), resolution="grid")
    assert scores.void_share.tolist() == pytest.approx([4 / 40], abs=1e-15)
    assert scores.void_area_share.tolist() == [0.25]


def test_a_map_of_no_mass_has_no_void_share() -> None:
    scores = class_scores(torch.zeros(1, 4, 4), _quadrant_labels())
    assert math.isnan(float(scores.void_share[0]))
    assert scores.void_area_share.tolist() == [0.25]


def test_void_frame_has_one_row_per_image() -> None:
    labels = torch.cat([_quadrant_labels(), torch.full((1, 4, 4), ROAD, dtype=torch.uint8)])
    scores = class_scores(torch.ones(2, 4, 4), labels)
    frame = void_frame(scores, ["a", "b"], "cnn", "gradcam")
    assert frame["image"].tolist() == ["a", "b"]
    assert frame["void_share"].tolist() == [0.25, 0.0]
    assert frame["void_area_share"].tolist() == [0.25, 0.0]


def _rows(shares: dict[str, dict[int, float]], model: str = "cnn", method: str = "gradcam") -> pd.DataFrame:
    """per_image rows with the given mass shares (the other figures are not read)."""
    rows = [
        (model, method, image, class_id, CITYSCAPES.by_id[class_id].name, 10, 0.5, 1.0, share, 1.0)
        for image, classes in shares.items()
        for class_id, share in classes.items()
    ]
    return pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))


#: Five images near road .595 / sky .405 and one planted far away (road .10, sky .90).
ROADS = {"i1": 0.60, "i2": 0.62, "i3": 0.58, "i4": 0.61, "i5": 0.59, "planted": 0.10}


def test_only_the_planted_image_is_an_outlier_at_its_hand_computed_distance() -> None:
    table = outlier_distances(_rows({image: {ROAD: r, SKY: 1 - r} for image, r in ROADS.items()}))
    distance = dict(zip(table["image"], table["distance"], strict=True))
    # medians .595 and .405; absolute deviations .005 .025 .015 .015 .005 .495, whose median is .015 on
    # both classes, so every image is |road - .595| / (.015 · 1.4826) away
    scale = 0.015 * MAD_TO_SD
    for image, road in ROADS.items():
        assert distance[image] == pytest.approx(abs(road - 0.595) / scale, rel=1e-9), image
    assert distance["planted"] == pytest.approx(22.2582, rel=1e-5)
    assert table.loc[table["outlier"], "image"].tolist() == ["planted"]
    # the distances' median .015 / s, their MAD .01 / s: the cut-off is (.015 + 3 · 1.4826 · .01) / s
    assert cutoff(table["distance"].to_numpy()) == pytest.approx((0.015 + 3 * MAD_TO_SD * 0.01) / scale)


def test_an_absent_class_is_missing_not_zero() -> None:
    table = outlier_distances(
        _rows(
            {
                "a": {ROAD: 0.5, SKY: 0.3, CAR: 0.2},
                "b": {ROAD: 0.4, SKY: 0.4, CAR: 0.2},
                "c": {ROAD: 0.6, SKY: 0.4},
            }
        )
    )
    distance = dict(zip(table["image"], table["distance"], strict=True))
    # road: median .5, MAD .1; sky: median .4, MAD 0 (floored); c lacks car and is judged on two classes
    assert distance["c"] == pytest.approx(math.sqrt(((0.1 / (0.1 * MAD_TO_SD)) ** 2 + 0.0) / 2), rel=1e-12)
    # a: road 0, sky -.1 / floor, car 0 (a constant share: the floor again)
    assert distance["a"] == pytest.approx(math.sqrt((0.1 / SCALE_FLOOR) ** 2 / 3), rel=1e-12)


def test_each_model_and_method_is_judged_against_its_own_images() -> None:
    near = {image: {ROAD: r, SKY: 1 - r} for image, r in ROADS.items() if image != "planted"}
    # the same shares under another method, with every road share shifted: relative to its own median
    shifted = {image: {ROAD: r - 0.3, SKY: 1.3 - r} for image, r in ROADS.items() if image != "planted"}
    table = outlier_distances(pd.concat([_rows(near), _rows(shifted, method="saliency")]))
    first = table[table["method"] == "gradcam"]["distance"].to_numpy()
    second = table[table["method"] == "saliency"]["distance"].to_numpy()
    np.testing.assert_allclose(first, second, rtol=1e-9)
    assert not table["outlier"].any()


def test_a_map_of_no_mass_and_an_all_void_image_have_no_distance() -> None:
    shares = {image: {ROAD: r, SKY: 1 - r} for image, r in ROADS.items()}
    shares["empty"] = {ROAD: math.nan, SKY: math.nan}
    voids = pd.DataFrame(
        {
            "model": "cnn",
            "method": "gradcam",
            "image": [*shares, "void"],
            "void_share": 0.0,
            "void_area_share": 0.0,
        }
    )
    table = input_data_table(_rows(shares), voids)
    assert list(table.columns) == list(INPUT_DATA.names)
    by_image = table.set_index("image")
    assert math.isnan(by_image.loc["empty", "distance"]) and math.isnan(by_image.loc["void", "distance"])
    assert table.loc[table["outlier"], "image"].tolist() == ["planted"]
    assert table["outlier"].dtype == bool
