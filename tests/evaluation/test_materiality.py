from __future__ import annotations

import math

import pandas as pd
import pytest

from gradsum.errors import GradSUMError, SpecError
from gradsum.evaluation.materiality import (
    MATERIALITY,
    MATERIALITY_COLUMNS,
    material_classes,
    materiality_margins,
    materiality_table,
)


def _effects(rows: list[tuple[str, str, str, float, float]], task: str = "steering") -> pd.DataFrame:
    """(model, image, class, |Δ erase|, |Δ placebo|) rows as `causal_effects` columns."""
    return pd.DataFrame(rows, columns=["model", "image", "class", "abs_delta", "placebo_abs_delta"]).assign(
        task=task
    )


def _referee() -> pd.DataFrame:
    return _effects(
        [
            # road: excess 0.29, 0.18, 0.22 per image, far above 0.02
            ("m", "a", "road", 0.30, 0.01),
            ("m", "b", "road", 0.20, 0.02),
            ("m", "c", "road", 0.25, 0.03),
            # sidewalk: its erasure moves the output by 0.045 on average, beyond the margin, but its
            # placebo moves it by 0.0375: what is left (0.01, 0.005) is texture, not use
            ("m", "a", "sidewalk", 0.05, 0.04),
            ("m", "b", "sidewalk", 0.04, 0.035),
            # sky: a constant excess of 0.03, so the interval is the point
            ("m", "a", "sky", 0.03, 0.0),
            ("m", "b", "sky", 0.03, 0.0),
            ("m", "c", "sky", 0.03, 0.0),
        ]
    )


def _by_class(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index("class")


def test_a_class_is_material_when_its_excess_over_the_placebo_clears_the_margin() -> None:
    table = materiality_table(_referee(), MATERIALITY, n_resamples=500, seed=0)
    assert list(table.columns) == list(MATERIALITY_COLUMNS)
    rows = _by_class(table)
    road, sidewalk, sky = rows.loc["road"], rows.loc["sidewalk"], rows.loc["sky"]
    assert (road["effect"], road["placebo"], road["excess"]) == pytest.approx((0.25, 0.02, 0.23))
    assert 0.18 <= road["excess_ci_low"] <= 0.23 <= road["excess_ci_high"] <= 0.29
    assert road["material"] and road["n_images"] == 3 and road["margin"] == 0.02
    assert (sidewalk["effect"], sidewalk["placebo"], sidewalk["excess"]) == pytest.approx(
        (0.045, 0.0375, 0.0075)
    )
    assert sidewalk["excess_ci_high"] <= 0.01 + 1e-12 and not sidewalk["material"]
    assert (sky["excess"], sky["excess_ci_low"], sky["excess_ci_high"]) == pytest.approx((0.03,) * 3)
    assert sky["material"]
    assert material_classes(table) == {"m": ("road", "sky")}


def test_a_larger_margin_declared_in_advance_leaves_fewer_classes_material() -> None:
    table = materiality_table(_referee(), materiality_margins({"steering": 0.05}), n_resamples=500, seed=0)
    assert material_classes(table) == {"m": ("road",)}  # sky's 0.03 no longer clears 0.05
    assert (table["margin"] == 0.05).all()


def test_the_margin_is_the_models_task_and_the_interval_is_seeded() -> None:
    obstacle = _effects(
        [("o", "a", "car", 0.9, 0.1), ("o", "b", "car", 0.7, 0.1), ("o", "a", "sky", 0.4, 0.0)], "obstacle"
    )
    both = pd.concat([_referee(), obstacle], ignore_index=True)
    table = materiality_table(both, MATERIALITY, n_resamples=300, seed=4)
    car = table[(table["model"] == "o") & (table["class"] == "car")].iloc[0]
    assert car["margin"] == 0.5 and car["excess"] == pytest.approx(0.7) and car["material"]
    sky = table[(table["model"] == "o") & (table["class"] == "sky")].iloc[0]
    assert sky["excess"] == pytest.approx(0.4) and not sky["material"]  # a logit change under 0.5
    assert material_classes(table) == {"m": ("road", "sky"), "o": ("car",)}
    pd.testing.assert_frame_equal(table, materiality_table(both, MATERIALITY, n_resamples=300, seed=4))


def test_without_a_placebo_the_excess_is_the_erasure_effect() -> None:
    effects = _effects([("m", "a", "car", 0.04, math.nan), ("m", "b", "car", 0.04, math.nan)])
    row = materiality_table(effects, MATERIALITY, n_resamples=100, seed=0).iloc[0]
    assert math.isnan(row["placebo"])
    assert (row["excess"], row["excess_ci_low"]) == pytest.approx((0.04, 0.04)) and row["material"]


def test_margins_merge_overrides_and_refuse_unknown_tasks_and_bad_values() -> None:
    assert materiality_margins() == MATERIALITY == {"steering": 0.02, "obstacle": 0.5}
    assert materiality_margins({"obstacle": 1}) == {"steering": 0.02, "obstacle": 1.0}
    with pytest.raises(SpecError, match=r"unknown task.*steer; valid: obstacle, steering"):
        materiality_margins({"steer": 0.1})
    with pytest.raises(SpecError, match=r"materiality\.steering: need a finite margin >= 0"):
        materiality_margins({"steering": -0.1})
    with pytest.raises(SpecError, match="need a mapping"):
        materiality_margins(0.1)  # type: ignore[arg-type]
    with pytest.raises(GradSUMError, match="task 'depth' has no materiality margin"):
        materiality_table(_effects([("m", "a", "road", 0.1, 0.0)], "depth"), MATERIALITY)
