"""Map similarities against scipy and scikit-image called directly, and the profile Spearman by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

from gradsum.evaluation.similarity import (
    HOG_PARAMETERS,
    SIMILARITIES,
    SSIM_DATA_RANGE,
    absolute_ranks,
    class_profile,
    image_class_scores,
    normalised_drop,
    ordering_similarity,
    profile_spearman,
    ranks,
    row_correlation,
)


@pytest.fixture(scope="module")
def maps() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 32, 48))
    b = 0.6 * a + rng.normal(size=a.shape)
    return a, b


def test_spearman_equals_scipy_per_image(maps: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = maps
    signed = [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    absolute = [
        stats.spearmanr(np.abs(x).ravel(), np.abs(y).ravel()).statistic for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(SIMILARITIES.get("spearman")(a, b), signed)
    np.testing.assert_allclose(SIMILARITIES.get("spearman_abs")(a, b), absolute)


def test_ssim_and_hog_equal_skimage_on_maps_scaled_by_max_abs(maps: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = maps
    expected_ssim, expected_hog = [], []
    for x, y in zip(a, b, strict=True):
        x, y = x / np.abs(x).max(), y / np.abs(y).max()
        expected_ssim.append(structural_similarity(x, y, data_range=2.0))
        hx, hy = (hog(m, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2)) for m in (x, y))
        expected_hog.append(np.corrcoef(hx, hy)[0, 1])
    assert SSIM_DATA_RANGE == 2.0 and HOG_PARAMETERS["pixels_per_cell"] == (16, 16)
    np.testing.assert_allclose(SIMILARITIES.get("ssim")(a, b), expected_ssim)
    np.testing.assert_allclose(SIMILARITIES.get("hog")(a, b), expected_hog, rtol=1e-10)


@pytest.mark.parametrize("name", SIMILARITIES.names())
def test_identical_maps_score_one(name: str, maps: tuple[np.ndarray, np.ndarray]) -> None:
    a, _ = maps
    np.testing.assert_allclose(SIMILARITIES.get(name)(a, a.copy()), 1.0)


@pytest.mark.parametrize("name", ["spearman", "hog"])
def test_a_map_against_its_negation(name: str, maps: tuple[np.ndarray, np.ndarray]) -> None:
    a, _ = maps
    # negation reverses every rank; HOG's unsigned orientations and magnitudes make it blind to sign
    expected = -1.0 if name == "spearman" else 1.0
    np.testing.assert_allclose(SIMILARITIES.get(name)(a, -a), expected)
    np.testing.assert_allclose(SIMILARITIES.get("spearman_abs")(a, -a), 1.0)


def test_constant_maps_follow_the_stated_convention() -> None:
    ones, twos = np.ones((1, 32, 32)), np.full((1, 32, 32), 2.0)
    varying = np.arange(32 * 32, dtype=float).reshape(1, 32, 32)
    for name in ("spearman", "spearman_abs", "hog"):
        assert SIMILARITIES.get(name)(ones, twos)[0] == 1.0
        assert SIMILARITIES.get(name)(ones, varying)[0] == 0.0
    # SSIM is defined for constant maps: two equal ones are identical
    assert SIMILARITIES.get("ssim")(ones, ones)[0] == pytest.approx(1.0)


def test_profile_spearman_ranks_the_class_means() -> None:
    # two images, labels: left half class 7 (road), right half class 26 (car); image 1 adds sky (23)
    labels = torch.full((2, 4, 4), 7, dtype=torch.long)
    labels[:, :, 2:] = 26
    labels[1, 0, :] = 23
    maps_a = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    maps_b = maps_a.clone()
    maps_b[:, :, 2:] += 5.0  # car gains, so the profile order changes
    scores_a, scores_b = image_class_scores(maps_a, labels), image_class_scores(maps_b, labels)
    profile_a = class_profile(scores_a)
    # the profile is the mean over images of each image's class mean; absent classes are NaN
    for class_id in (7, 23, 26):
        per_image = [maps_a[i][labels[i] == class_id] for i in range(2)]
        expected_mean = np.mean([m.mean().item() for m in per_image if m.numel()])
        assert profile_a[class_id] == pytest.approx(expected_mean)
    assert np.isnan(profile_a[0])
    keep = np.isfinite(profile_a)
    expected = stats.spearmanr(profile_a[keep], class_profile(scores_b)[keep]).statistic
    rho, _, _ = profile_spearman(scores_a, scores_b)
    assert rho == pytest.approx(expected)
    assert profile_spearman(scores_a, scores_a)[0] == pytest.approx(1.0)


def test_constant_profiles_are_identical() -> None:
    labels = torch.tensor([[[7, 7], [26, 23]]])
    uniform = image_class_scores(torch.ones(1, 2, 2), labels)
    assert profile_spearman(uniform, uniform * 3) == (1.0, 1.0, 1.0)


#: two images of four pixels each (B=2, H=1, W=4): the trained model's map, two re-initialisations and
#: the seed twin's map, with no ties in |map| so that Spearman is 1 − 6 Σd² / (n (n² − 1)) = 1 − Σd² / 10
TRAINED = np.array([[[1.0, -4.0, 3.0, 2.0]], [[1.0, 2.0, 3.0, 4.0]]])
RANDOMISED = np.array([[[4.0, 3.0, -2.0, 1.0]], [[1.0, 2.0, 3.0, 4.0]]])
SECOND = np.array([[[-1.0, 2.0, 4.0, 3.0]], [[4.0, 3.0, 2.0, 1.0]]])
TWIN = np.array([[[2.0, 4.0, 3.0, 1.0]], [[1.0, 2.0, 4.0, 3.0]]])


def absolute_ordering(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ordering_similarity(absolute_ranks(a), absolute_ranks(b))


def test_normalised_drop_by_hand_on_tiny_maps() -> None:
    # image 0, ranks of |map|: trained 1 4 3 2, randomised 4 3 2 1, second 1 2 4 3, twin 2 4 3 1
    # randomised: d = -3 1 1 1, Σd² = 12, ρ = -0.2; floor: d = 3 1 -2 -2, Σd² = 18, ρ = -0.8;
    # ceiling: d = -1 0 0 1, Σd² = 2, ρ = 0.8. Image 1: ρ = 1 (same map), -1 (reversed), 0.8.
    randomised = absolute_ordering(TRAINED, RANDOMISED)
    floor = absolute_ordering(RANDOMISED, SECOND)
    ceiling = absolute_ordering(TRAINED, TWIN)
    np.testing.assert_allclose(randomised, [-0.2, 1.0])
    np.testing.assert_allclose(floor, [-0.8, -1.0])
    np.testing.assert_allclose(ceiling, [0.8, 0.8])
    # numerators 0.8 + 0.2 = 1.0 and 0.8 − 1 = −0.2; denominators 1.6 and 1.8: (0.8 / 2) / (3.4 / 2)
    assert normalised_drop(randomised, floor, ceiling) == pytest.approx(0.4 / 1.7)
    # image 0 alone: 1.0 / 1.6
    assert normalised_drop(randomised[:1], floor[:1], ceiling[:1]) == pytest.approx(0.625)
    # signed ranks of image 0: trained 2 1 4 3, randomised 4 3 1 2: d = -2 -2 3 1, Σd² = 18
    signed = ordering_similarity(ranks(TRAINED), ranks(RANDOMISED))
    assert signed[0] == pytest.approx(-0.8)


def test_normalised_drop_skips_undefined_images_and_refuses_a_ceiling_below_the_floor() -> None:
    randomised, floor, ceiling = np.array([0.2, np.nan]), np.array([0.1, 0.0]), np.array([0.9, 1.0])
    assert normalised_drop(randomised, floor, ceiling) == pytest.approx(0.7 / 0.8)
    # a twin no more alike than two random models: the measure cannot calibrate the drop
    assert np.isnan(normalised_drop(np.array([0.3]), np.array([0.5]), np.array([0.4])))
    assert np.isnan(normalised_drop(np.array([np.nan]), np.array([0.0]), np.array([1.0])))


def test_constant_maps_share_no_ordering_in_the_drop() -> None:
    """Two re-initialisations that both flatten a map kept no common structure: 0, not the curve's 1."""
    zeros, varying = np.zeros((1, 1, 4)), TRAINED[:1]
    assert absolute_ordering(zeros, zeros * 2)[0] == 0.0
    assert absolute_ordering(zeros, varying)[0] == 0.0
    assert SIMILARITIES.get("spearman_abs")(zeros, zeros)[0] == 1.0
    np.testing.assert_allclose(row_correlation(zeros[:, 0], zeros[:, 0], both_constant=0.5), [0.5])
