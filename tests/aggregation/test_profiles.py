from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from aggregation_tables import make_per_image

from gradsum.aggregation import PROFILE_COLUMNS, mean_ci, profiles


def test_profile_means_and_cis_contain_the_mean() -> None:
    per_image = make_per_image("cnn", "gradcam", n_images=25)
    table = profiles(per_image, n_resamples=500)
    assert tuple(table.columns) == PROFILE_COLUMNS
    assert len(table) == 7 and (table["n_images"] == 25).all()
    road = table.set_index("class").loc["road"]
    expected = per_image[per_image["class"] == "road"]["score"].mean()
    assert road["score_mean"] == pytest.approx(expected)
    assert road["category"] == "flat"
    for stat, mean in (("score", "score_mean"), ("mass_share", "mass_share"), ("lift", "lift")):
        assert (table[f"{stat}_ci_low"] <= table[mean]).all()
        assert (table[mean] <= table[f"{stat}_ci_high"]).all()
        assert (table[f"{stat}_ci_low"] < table[f"{stat}_ci_high"]).all()


def test_n_images_counts_only_images_containing_the_class() -> None:
    per_image = make_per_image("cnn", "gradcam", n_images=10)
    per_image = per_image[~((per_image["class"] == "person") & (per_image["image"] > "img006"))]
    table = profiles(per_image, n_resamples=200).set_index("class")
    assert table.loc["person", "n_images"] == 7
    assert table.loc["road", "n_images"] == 10


def test_single_image_and_constant_samples_get_the_value_as_ci() -> None:
    per_image = make_per_image("cnn", "gradcam", n_images=1)
    table = profiles(per_image)
    assert (table["score_ci_low"] == table["score_mean"]).all()
    assert (table["score_ci_high"] == table["score_mean"]).all()
    assert mean_ci(np.full(5, 0.25), np.random.default_rng(0)) == (0.25, 0.25, 0.25)
    assert all(np.isnan(mean_ci(np.array([np.nan]), np.random.default_rng(0))))


def test_profiles_are_seeded_and_independent_of_other_groups() -> None:
    one = make_per_image("cnn", "gradcam", n_images=12)
    both = pd.concat([one, make_per_image("vit", "gradcam", n_images=12, seed=1)], ignore_index=True)
    alone, together = profiles(one, n_resamples=300, seed=3), profiles(both, n_resamples=300, seed=3)
    pd.testing.assert_frame_equal(alone, together[together["model"] == "cnn"].reset_index(drop=True))
    assert not profiles(one, n_resamples=300, seed=4).equals(alone)


def test_bca_method_is_accepted() -> None:
    table = profiles(make_per_image("cnn", "gradcam", n_images=15), n_resamples=300, method="BCa")
    assert (table["score_ci_low"] <= table["score_mean"]).all()
