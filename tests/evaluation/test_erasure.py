from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gradsum.errors import GradSUMError, UnknownNameError
from gradsum.evaluation.erasure import (
    ERASERS,
    IN_DOMAIN,
    INPAINT_RADIUS,
    OUT_OF_DOMAIN,
    InDomainPlacebo,
    erasable_classes,
    erased_sample,
    placebo_sample,
)
from gradsum.truthsets import ArrayTruthSet, open_truthset
from gradsum.truthsets.synthetic import generate
from gradsum.truthsets.synthetic.scene import ERASURE


def _image_and_mask() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    mask = np.zeros((16, 24), dtype=bool)
    mask[4:10, 6:15] = True
    return image, mask


@pytest.mark.parametrize("name", ERASERS.names())
def test_every_filler_keeps_the_outside_and_replaces_the_inside(name: str) -> None:
    image, mask = _image_and_mask()
    filled = ERASERS.get(name)(image, mask)
    assert filled.dtype == np.uint8 and filled.shape == image.shape
    np.testing.assert_array_equal(filled[~mask], image[~mask])
    assert (filled[mask] != image[mask]).any()
    np.testing.assert_array_equal(image, _image_and_mask()[0])  # the input is left alone


def test_mean_fills_with_the_mean_colour_outside_the_mask() -> None:
    image = np.zeros((2, 4, 3), dtype=np.uint8)
    image[:, :2] = (200, 10, 0)  # the class to erase
    image[0, 2:], image[1, 2:] = (10, 20, 31), (20, 40, 60)
    mask = np.zeros((2, 4), dtype=bool)
    mask[:, :2] = True
    filled = ERASERS.get("mean")(image, mask)
    # outside mean (15, 30, 45.5) → rounded half to even: (15, 30, 46)
    np.testing.assert_array_equal(filled[mask], [[15, 30, 46]] * 4)


def test_blur_fills_a_checkerboard_with_its_grey_average() -> None:
    rows, cols = np.indices((64, 64))
    board = np.where((rows // 2 + cols // 2) % 2 == 0, 255, 0).astype(np.uint8)
    image = np.repeat(board[..., None], 3, axis=2)
    mask = np.zeros((64, 64), dtype=bool)
    mask[24:40, 24:40] = True
    filled = ERASERS.get("blur")(image, mask)
    # sigma 3.2 px over 2-px checks: the squares average out to 127.5 within a few levels
    assert np.abs(filled[mask].astype(float) - 127.5).max() <= 3


def test_inpaint_equals_opencv_telea_called_directly() -> None:
    image, mask = _image_and_mask()
    expected = cv2.inpaint(image, mask.astype(np.uint8) * 255, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    np.testing.assert_array_equal(ERASERS.get("inpaint")(image, mask), expected)


def test_a_mask_of_the_wrong_shape_names_the_argument() -> None:
    image, mask = _image_and_mask()
    with pytest.raises(GradSUMError, match="mask"):
        ERASERS.get("mean")(image, mask[:8])


def test_a_real_truth_set_is_filled_out_of_domain() -> None:
    image, mask = _image_and_mask()
    labels = np.where(mask, 26, 7).astype(np.uint8)  # a car on the road
    truthset = ArrayTruthSet(image[None], labels[None])
    assert erasable_classes(truthset) is None
    # a fill of the class's own pixels would be an erasure: a real truth set has no placebo
    assert not isinstance(truthset, InDomainPlacebo) and placebo_sample(truthset, 0, "car") is None
    erased, domain = erased_sample(truthset, 0, "car", "inpaint")
    assert domain == OUT_OF_DOMAIN
    np.testing.assert_array_equal(erased, ERASERS.get("inpaint")(image, mask))
    with pytest.raises(GradSUMError, match="'person': absent"):
        erased_sample(truthset, 0, "person", "inpaint")
    with pytest.raises(UnknownNameError, match="filler"):
        erased_sample(truthset, 0, "car", "smudge")


def test_the_synthetic_set_erases_in_domain_by_re_rendering(tmp_path: Path) -> None:
    truthset = open_truthset(generate(tmp_path / "set", count=12, size=(64, 128)), "train")
    assert erasable_classes(truthset) == frozenset(ERASURE)
    for cls in ("road", "sky"):
        erased, domain = erased_sample(truthset, 1, cls, "mean")
        assert domain == IN_DOMAIN
        np.testing.assert_array_equal(erased, truthset.erase(1, cls).image)  # type: ignore[attr-defined]
    with pytest.raises(GradSUMError, match="cannot erase"):
        erased_sample(truthset, 1, "bus", "mean")


def test_the_synthetic_set_renders_the_placebo_in_domain(tmp_path: Path) -> None:
    truthset = open_truthset(generate(tmp_path / "set", count=4, size=(64, 128)), "train")
    assert isinstance(truthset, InDomainPlacebo)
    placebo = placebo_sample(truthset, 1, "road")
    assert placebo is not None
    np.testing.assert_array_equal(placebo, truthset.placebo(1, "road").image)
    assert (placebo != truthset[1].image).any()
