from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS
from gradsum.evaluation.concordance import (
    CAUSAL_PER_IMAGE_COLUMNS,
    FIGURE_COLUMNS,
    causal_figures,
    causal_per_image,
    image_concordance,
    pair_concordance,
    referee_effects,
)
from gradsum.evaluation.materiality import MATERIALITY, material_classes, materiality_table

CLASS_IDS = {"road": 7, "sidewalk": 8, "sky": 23, "terrain": 22, "car": 26}
MATERIAL = {"m": ("car", "road")}


def _gradsum(rows: list[tuple[str, str, float, float]], method: str = "x", model: str = "m") -> pd.DataFrame:
    """(image, class, mass share, area share) rows as per_image columns."""
    frame = pd.DataFrame(rows, columns=["image", "class", "mass_share", "area_share"])
    frame = frame.assign(model=model, method=method, class_id=frame["class"].map(CLASS_IDS))
    frame = frame.assign(pixels=100, score=1.0, lift=frame["mass_share"] / frame["area_share"])
    return frame[list(PER_IMAGE_COLUMNS)]


def _effects(rows: list[tuple[str, str, float]], model: str = "m") -> pd.DataFrame:
    """(image, class, |Δ erase|) rows as causal_effects columns (steering: margin 0.02)."""
    frame = pd.DataFrame(rows, columns=["image", "class", "abs_delta"])
    return frame.assign(model=model, task="steering")


def _hand_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four images; road and car material, sky and sidewalk not (steering margin 0.02)."""
    effects = _effects(
        [
            # i1: referee effects road .30, car .10, sky 0, sidewalk 0 (its 0.05 is immaterial)
            ("i1", "road", 0.30),
            ("i1", "car", 0.10),
            ("i1", "sky", 0.015),
            ("i1", "sidewalk", 0.05),
            # i2: road .25 and car .26 are 0.01 apart, within the margin: not a separated pair
            ("i2", "road", 0.25),
            ("i2", "car", 0.26),
            ("i2", "sky", 0.005),
            # i3: road's .01 is no more than the margin above sky's tied 0: no separated pair
            ("i3", "road", 0.01),
            ("i3", "sky", 0.3),
            # i4: no material class
            ("i4", "sky", 0.01),
            ("i4", "sidewalk", 0.01),
        ]
    )
    gradsum = _gradsum(
        [
            ("i1", "road", 0.4, 0.3),
            ("i1", "car", 0.4, 0.1),
            ("i1", "sky", 0.15, 0.4),
            ("i1", "sidewalk", 0.05, 0.2),
            ("i2", "road", 0.2, 0.5),
            ("i2", "car", 0.1, 0.2),
            ("i2", "sky", 0.7, 0.3),
            ("i3", "road", 0.6, 0.5),
            ("i3", "sky", 0.4, 0.5),
            ("i4", "sky", 0.5, 0.5),
            ("i4", "sidewalk", 0.5, 0.5),
        ]
    )
    return gradsum, effects


def test_concordance_and_material_shares_of_a_hand_made_case() -> None:
    gradsum, effects = _hand_case()
    table = causal_per_image(gradsum, effects, MATERIAL, MATERIALITY)
    assert list(table.columns) == list(CAUSAL_PER_IMAGE_COLUMNS)
    rows = table.set_index("image")
    # i1: 5 separated pairs (all but sky–sidewalk, tied at 0): road–car tie in mass 0.5, the four
    # material–immaterial pairs agree; sidewalk's larger raw effect against sky's does not count
    assert rows.loc["i1", "concordance"] == pytest.approx(4.5 / 5)
    # i2: road–sky and car–sky are separated, and sky has the larger mass in both
    assert rows.loc["i2", "concordance"] == 0.0
    assert math.isnan(rows.loc["i3", "concordance"]) and math.isnan(rows.loc["i4", "concordance"])
    assert rows["material_mass"].iloc[:3].tolist() == pytest.approx([0.8, 0.3, 0.6])
    assert rows["material_area"].iloc[:3].tolist() == pytest.approx([0.4, 0.7, 0.5])
    assert rows.loc["i4", ["material_mass", "material_area"]].isna().all()

    figures = causal_figures(table, MATERIAL)
    assert list(figures.columns) == list(FIGURE_COLUMNS)
    row = figures.iloc[0]
    assert row["concordance"] == pytest.approx((0.9 + 0.0) / 2)  # images without a pair left out
    assert row["causal_lift"] == pytest.approx((1.7 / 3) / (1.6 / 3))  # ratio of means, not mean of ratios
    assert (row["n_material"], row["material_classes"]) == (2, "car+road")


def test_pair_concordance_on_arrays_ties_and_missing_classes() -> None:
    effects = np.array([[0.3, 0.1, 0.0, np.nan], [0.0, 0.0, 0.0, 0.0]])
    # row 0: the three present classes give 3 separated pairs; mass ranks them 2nd > 1st, tie, right
    mass = np.array([[0.2, 0.4, 0.1, 0.3], [0.1, 0.2, 0.3, 0.4]])
    result = pair_concordance(effects, mass, margin=0.05)
    # (0,1): effect 0 > 1, mass 0 < 1 → 0; (0,2): agrees → 1; (1,2): agrees → 1
    assert result[0] == pytest.approx(2 / 3)
    assert math.isnan(result[1])  # nothing separated
    # masses equal up to float noise tie: 0.1 + 0.2 and 0.3 differ in the last bit
    noisy = pair_concordance(np.array([[0.3, 0.0]]), np.array([[0.1 + 0.2, 0.3]]), margin=0.05)
    assert noisy[0] == 0.5
    np.testing.assert_array_equal(
        referee_effects(np.array([[0.3, 0.1, np.nan]]), np.array([True, False, True])), [[0.3, 0.0, np.nan]]
    )


def _referee_world(n_images: int = 30, seed: int = 1) -> pd.DataFrame:
    """Effects where road and car are material and sky, sidewalk and terrain move the output by less
    than their placebo; every image has the same areas, ordered against the effects."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_images):
        erase = {
            "road": rng.uniform(0.25, 0.4),
            "car": rng.uniform(0.05, 0.15),
            "sky": rng.uniform(0.0, 0.01),
            "sidewalk": rng.uniform(0.0, 0.02),
            "terrain": rng.uniform(0.0, 0.015),
        }
        for cls, value in erase.items():
            placebo = rng.uniform(0.0, 0.01) if cls in ("road", "car") else value
            rows.append({"image": f"i{k}", "class": cls, "abs_delta": value, "placebo_abs_delta": placebo})
    return pd.DataFrame(rows).assign(model="m", task="steering")


AREAS = {"road": 0.1, "car": 0.05, "sky": 0.5, "sidewalk": 0.2, "terrain": 0.15}


def test_a_sum_complete_oracle_concords_fully_and_the_area_map_does_not() -> None:
    effects = _referee_world()
    material = material_classes(materiality_table(effects, MATERIALITY, n_resamples=300, seed=0))
    assert material == {"m": ("car", "road")}
    oracle, area = [], []
    for image, group in effects.groupby("image"):
        total = group["abs_delta"].sum()
        for cls, value in zip(group["class"], group["abs_delta"], strict=True):
            oracle.append((str(image), cls, value / total, AREAS[cls]))  # class mass = its effect
            area.append((str(image), cls, AREAS[cls], AREAS[cls]))  # the uniform map: mass = area
    gradsum = pd.concat([_gradsum(oracle, "oracle"), _gradsum(area, "area")], ignore_index=True)
    table = causal_per_image(gradsum, effects, material, MATERIALITY)
    by_method = {str(m): g for m, g in table.groupby("method")}
    assert (by_method["oracle"]["concordance"] == 1.0).all()
    # 7 separated pairs per image (road–car and each material class against the 3 tied immaterial
    # ones); by area only road (0.1) over car (0.05) is ordered as the effects
    assert by_method["area"]["concordance"].to_numpy() == pytest.approx(np.full(30, 1 / 7))
    figures = causal_figures(table, material).set_index("method")
    assert figures.loc["area", "causal_lift"] == pytest.approx(1.0)
    oracle_mass = by_method["oracle"]["material_mass"].mean()
    assert figures.loc["oracle", "causal_lift"] == pytest.approx(oracle_mass / 0.15) and oracle_mass > 0.9


def test_models_without_effects_get_no_rows() -> None:
    gradsum, effects = _hand_case()
    both = pd.concat([gradsum, gradsum.assign(model="other")], ignore_index=True)
    table = causal_per_image(both, effects, MATERIAL, MATERIALITY)
    assert set(table["model"]) == {"m"} and len(table) == 4


def test_image_concordance_follows_the_effect_shares_from_image_to_image() -> None:
    # three images, classes (road, sky); road material; effects and shares by hand:
    # image 0: road 0.6, sky 0.2 → road share 0.75; image 1: road 0.1, sky 0.1 → 0.5; image 2: no road
    effects = np.array([[0.6, 0.2], [0.1, 0.1], [np.nan, 0.3]])
    material = np.array([True, False])
    # a map whose road share is higher in image 0 than in image 1 agrees; the reverse disagrees
    agreeing = np.array([[0.9, 0.1], [0.4, 0.6], [np.nan, 1.0]])
    reversed_ = np.array([[0.3, 0.7], [0.4, 0.6], [np.nan, 1.0]])
    tied = np.array([[0.4, 0.6], [0.4, 0.6], [np.nan, 1.0]])
    # one separated pair (images 0 and 1: |0.6 - 0.1| > 0.02); image 2 holds no road: NaN
    np.testing.assert_allclose(image_concordance(effects, agreeing, material, 0.02), [1.0, 1.0, np.nan])
    np.testing.assert_allclose(image_concordance(effects, reversed_, material, 0.02), [0.0, 0.0, np.nan])
    np.testing.assert_allclose(image_concordance(effects, tied, material, 0.02), [0.5, 0.5, np.nan])
    # a margin above the effect gap separates nothing
    assert np.isnan(image_concordance(effects, agreeing, material, 0.6)).all()
