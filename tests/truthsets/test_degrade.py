"""Label degradations against hand-drawn arrays, and their parameters' refusals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from skimage import draw

from gradsum.errors import ShapeError, SpecError, UnknownNameError
from gradsum.truthsets.degrade import (
    CATEGORY_IDS,
    DEGRADATIONS,
    Coarse,
    Degradation,
    category_labels,
    degradation,
    near_boundary,
)
from gradsum.truthsets.labels import UNLABELED_ID

ROAD, CAR, PERSON, POLE, SKY = 7, 26, 24, 17, 23


def ids(rows: list[str], legend: dict[str, int]) -> np.ndarray:
    """A label map drawn as text, one character per pixel."""
    return np.array([[legend[ch] for ch in row] for row in rows], dtype=np.uint8)


LEGEND = {".": UNLABELED_ID, "r": ROAD, "c": CAR, "p": POLE, "s": SKY}

#: a 3×3 car on the road, a one-pixel-wide pole at the right edge, sky above a void row
SCENE = ids(
    [
        "ssssss",
        "......",
        "rrrrrp",
        "rcccrp",
        "rcccrp",
        "rcccrp",
        "rrrrrp",
    ],
    LEGEND,
)


def test_erode_by_one_voids_every_pixel_beside_another_id() -> None:
    # Euclidean radius 1 reaches the 4-neighbours only; the image edge is no boundary, so the road's
    # bottom-left corner (road above and to its right) stays, and the car keeps its centre
    expected = ids(
        [
            "......",
            "......",
            "......",
            "......",
            "..c...",
            "......",
            "r.....",
        ],
        LEGEND,
    )
    np.testing.assert_array_equal(degradation("erode", k=1)(SCENE), expected)


def test_erode_keeps_what_lies_farther_than_k() -> None:
    road = np.full((7, 7), ROAD, dtype=np.uint8)
    road[3, 3] = CAR
    eroded = degradation("erode", k=2)(road)
    # Euclidean distance to (3, 3) ≤ 2: the 13 pixels of a radius-2 disc, the car included
    disc = (np.subtract.outer(np.arange(7), 3) ** 2)[:, None] + (np.arange(7) - 3) ** 2 <= 4
    np.testing.assert_array_equal(eroded, np.where(disc, UNLABELED_ID, ROAD))


def test_dilate_grows_the_smaller_class_over_its_neighbours() -> None:
    # areas: road 16 > car 9 > sky 6 > pole 5; a pixel takes the smallest class within 1 px (4-neighbours),
    # its own included: the pole takes the road beside it and the void above it, sky the void row, the
    # car the road around it; the road's corners lie √2 from the car and stay road
    expected = ids(
        [
            "ssssss",
            "sssssp",
            "rcccpp",
            "ccccpp",
            "ccccpp",
            "ccccpp",
            "rcccpp",
        ],
        LEGEND,
    )
    np.testing.assert_array_equal(degradation("dilate", k=1)(SCENE), expected)


def test_dilate_ties_go_to_the_lower_id() -> None:
    labels = np.array([[ROAD, UNLABELED_ID, SKY]], dtype=np.uint8)
    np.testing.assert_array_equal(degradation("dilate", k=1)(labels), [[ROAD, ROAD, SKY]])


def square_and_disc() -> np.ndarray:
    """Road with a 16-pixel square car, a person disc of radius 11, and a 3×3 pole stub."""
    labels = np.full((48, 64), ROAD, dtype=np.uint8)
    labels[6:22, 6:22] = CAR
    rows, cols = draw.disk((30, 44), 11, shape=labels.shape)
    labels[rows, cols] = PERSON
    labels[40:43, 4:7] = POLE
    return labels


def test_coarse_without_simplification_band_or_minimum_is_the_identity() -> None:
    labels = square_and_disc()
    np.testing.assert_array_equal(Coarse(tolerance=0, band=0, min_area=0)(labels), labels)


@pytest.mark.parametrize(("tolerance", "band"), [(2.0, 1), (4.0, 2), (6.0, 1)])
def test_coarse_polygons_stay_within_tolerance_the_band_is_void_and_the_stub_is_dropped(
    tolerance: float, band: int
) -> None:
    labels = square_and_disc()
    coarse = Coarse(tolerance=tolerance, band=band, min_area=10)
    out = coarse(labels)
    in_band = near_boundary(labels, band)
    assert (out[in_band] == UNLABELED_ID).all()
    # the 3×3 stub (9 px < 10) is dropped to void, not painted as the road around it
    assert (out[40:43, 4:7] == UNLABELED_ID).all()
    labelled = ~in_band & (out != UNLABELED_ID)
    wrong = labelled & (out != labels)
    # a pixel only changes class within the tolerance (plus the pixel the outline runs through) of a boundary
    assert not (wrong & ~near_boundary(labels, tolerance + 1)).any()
    # outside the band and the dropped stub, every pixel is labelled
    stub = np.zeros_like(in_band)
    stub[40:43, 4:7] = True
    assert (out[~in_band & ~stub] != UNLABELED_ID).all()
    if tolerance > band + 1:
        assert wrong.any(), "a tolerance wider than the band moves some pixels (else the test shows nothing)"


def test_coarse_default_minimum_area_is_twice_the_band_squared() -> None:
    assert Coarse(tolerance=1, band=3).minimum_area == 18
    labels = np.full((20, 20), ROAD, dtype=np.uint8)
    labels[2:6, 2:6] = CAR  # 16 px < 18: dropped
    out = Coarse(tolerance=1, band=3)(labels)
    assert not (out == CAR).any()


def agreement(degraded: np.ndarray, exact: np.ndarray) -> float:
    """Share of the degraded map's labelled pixels that equal the exact labels."""
    labelled = degraded != UNLABELED_ID
    return float((degraded[labelled] == exact[labelled]).mean())


def coverage(degraded: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact map's labelled pixels the degraded map still labels."""
    return float((degraded[exact != UNLABELED_ID] != UNLABELED_ID).mean())


def test_agreement_falls_with_dilation_and_coverage_with_erosion() -> None:
    labels = square_and_disc()
    dilated = [agreement(degradation("dilate", k=k)(labels), labels) for k in range(1, 6)]
    assert all(a > b for a, b in itertools.pairwise(dilated)), dilated
    eroded = [degradation("erode", k=k)(labels) for k in range(1, 6)]
    # erosion never mislabels: it only unlabels, more with each k
    assert all(agreement(e, labels) == 1.0 for e in eroded)
    covered = [coverage(e, labels) for e in eroded]
    assert all(a > b for a, b in itertools.pairwise(covered)), covered


@pytest.mark.parametrize("name", DEGRADATIONS.names())
def test_every_degradation_keeps_shape_dtype_and_names_its_level(name: str) -> None:
    params = {
        "erode": {"k": 2},
        "dilate": {"k": 2},
        "coarse": {"tolerance": 2.0, "band": 1},
        "jitter": {"p": 0.5},
    }[name]
    made = degradation(name, **params)
    assert isinstance(made, Degradation) and made.name == name
    out = made(square_and_disc())
    assert out.shape == (48, 64) and out.dtype == np.uint8
    assert made.level.startswith(name) and made.describe()


def test_levels() -> None:
    assert degradation("erode", k=2).level == "erode_2"
    assert degradation("dilate", k=3).level == "dilate_3"
    assert degradation("coarse", tolerance=4, band=2).level == "coarse_t4_b2"
    assert degradation("jitter", p=0.25).level == "jitter_p0.25_w1"


def test_bad_names_parameters_and_inputs_are_refused() -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown label degradation 'erosion'.*valid: coarse, dilate, erode, jitter"
    ):
        degradation("erosion", k=1)
    with pytest.raises(SpecError, match=r"degradation 'erode': field 'k' must be at least 1, got 0"):
        degradation("erode", k=0)
    with pytest.raises(SpecError, match=r"field 'k' should be int, got 1.5"):
        degradation("dilate", k=1.5)
    with pytest.raises(SpecError, match=r"field 'band' must be at least 0, got -1"):
        degradation("coarse", tolerance=1.0, band=-1)
    with pytest.raises(SpecError, match=r"field 'p' must be at most 1, got 1.5"):
        degradation("jitter", p=1.5)
    with pytest.raises(SpecError, match=r"unknown field 'radius'"):
        degradation("erode", radius=1)
    with pytest.raises(ShapeError, match=r"labels: expected an \(H, W\) uint8 array"):
        degradation("erode", k=1)(np.zeros((4, 4), dtype=np.int64))


def test_jitter_with_p_zero_is_the_identity_and_is_seeded() -> None:
    labels = square_and_disc()
    np.testing.assert_array_equal(degradation("jitter", p=0.0)(labels), labels)
    once, again = degradation("jitter", p=0.5)(labels), degradation("jitter", p=0.5)(labels)
    np.testing.assert_array_equal(once, again)
    assert not np.array_equal(once, degradation("jitter", p=0.5, seed=1)(labels))


def test_jitter_moves_only_boundary_pixels_and_only_to_a_neighbour_s_id() -> None:
    labels = square_and_disc()
    out = degradation("jitter", p=1.0, width=2)(labels)
    changed = out != labels
    assert changed.any() and not (changed & ~near_boundary(labels, 2)).any()
    for row, col in zip(*np.nonzero(changed), strict=True):
        window = labels[max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3]
        assert out[row, col] in window


def test_jitter_on_a_straight_boundary_changes_a_third_of_its_two_columns() -> None:
    # left half road, right half car: a pixel of either boundary column draws one of 9 neighbours, 3 of
    # them across the boundary, so with p = 1 each changes with probability 1/3 (and p = 0.5 halves it)
    labels = np.full((3000, 8), ROAD, dtype=np.uint8)
    labels[:, 4:] = CAR
    for p, expected in ((1.0, 1 / 3), (0.5, 1 / 6)):
        out = degradation("jitter", p=p)(labels)
        changed = out != labels
        assert not changed[:, [0, 1, 2, 5, 6, 7]].any()
        # 6,000 boundary pixels: the binomial standard deviation is under 0.007
        assert changed[:, 3:5].mean() == pytest.approx(expected, abs=0.03)


def test_categories_follow_cityscapes() -> None:
    # each category stands as its first evaluated class: road, building, pole, vegetation, sky, person, car
    assert CATEGORY_IDS == {
        "flat": 7,
        "construction": 11,
        "object": 17,
        "nature": 21,
        "sky": 23,
        "human": 24,
        "vehicle": 26,
    }
    sidewalk, rider, truck, parking = 8, 25, 27, 9
    labels = np.array(
        [[ROAD, sidewalk, CAR, truck], [PERSON, rider, POLE, parking], [SKY, UNLABELED_ID, 0, 0]]
    )
    np.testing.assert_array_equal(
        category_labels(labels.astype(np.uint8)), [[7, 7, 26, 26], [24, 24, 17, 0], [23, 0, 0, 0]]
    )
    with pytest.raises(SpecError, match=r"labels: ids \[40\] are not Cityscapes label ids"):
        category_labels(np.array([[40]], dtype=np.uint8))
