"""Transferability: the same model profiled on two truth sets is compared with unpaired tests per class."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aggregation_tables import CLASS_IDS, make_per_image
from scipy import stats

from gradsum.aggregation import compare, holm, read_runs, same_images, unpaired_test
from gradsum.cli import main
from gradsum.contract import PER_IMAGE, write_table

ROAD, CAR = 7, 26


def _renamed(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The same rows under other image ids (another truth set's images)."""
    return frame.assign(image=prefix + frame["image"])


@pytest.fixture
def two_truthsets() -> pd.DataFrame:
    """cnn/gradcam on 30 synthetic images and on 25 other images where car scores 0.3 higher."""
    synthetic = make_per_image("synthetic:cnn", "gradcam", n_images=30, seed=1)
    other = _renamed(
        make_per_image("cityscapes:cnn", "gradcam", n_images=25, shift={CAR: 0.3}, seed=2), "cs_"
    )
    return pd.concat([synthetic, other], ignore_index=True)


def test_different_images_get_mann_whitney_equal_to_scipy(two_truthsets: pd.DataFrame) -> None:
    table = compare(two_truthsets, ("synthetic:cnn", "gradcam"), ("cityscapes:cnn", "gradcam"))
    assert set(table["test"]) == {"mann-whitney"} and (table["n_pairs"] == 0).all()
    assert table["class_id"].tolist() == list(CLASS_IDS)
    for row in table.itertuples(index=False):
        scores = two_truthsets[two_truthsets["class_id"] == row.class_id]
        x = scores.loc[scores["model"] == "synthetic:cnn", "score"].to_numpy()
        y = scores.loc[scores["model"] == "cityscapes:cnn", "score"].to_numpy()
        expected = stats.mannwhitneyu(x, y, alternative="two-sided")
        assert (row.n_a, row.n_b) == (30, 25)
        assert row.statistic == pytest.approx(expected.statistic, abs=0)
        assert row.p_value == pytest.approx(expected.pvalue, rel=1e-12)
        assert row.mean_diff == pytest.approx(x.mean() - y.mean())
    np.testing.assert_allclose(table["p_holm"], holm(table["p_value"].to_numpy()))
    assert table.loc[table["differs"], "class_id"].tolist() == [CAR]


def test_spearman_of_unpaired_profiles_equals_scipy_on_the_class_means(two_truthsets: pd.DataFrame) -> None:
    table = compare(two_truthsets, ("synthetic:cnn", "gradcam"), ("cityscapes:cnn", "gradcam"))
    means = two_truthsets.groupby(["model", "class_id"])["score"].mean().unstack(0)
    expected = stats.spearmanr(means["synthetic:cnn"], means["cityscapes:cnn"]).statistic
    assert table["spearman_rho"].iloc[0] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(table["mean_a"], means["synthetic:cnn"].to_numpy())


def test_a_class_only_one_truth_set_holds_is_not_tested(two_truthsets: pd.DataFrame) -> None:
    no_road = two_truthsets[
        ~((two_truthsets["model"] == "cityscapes:cnn") & (two_truthsets["class_id"] == ROAD))
    ]
    table = compare(no_road, ("synthetic:cnn", "gradcam"), ("cityscapes:cnn", "gradcam"))
    assert ROAD not in set(table["class_id"]) and len(table) == len(CLASS_IDS) - 1


def test_same_image_ids_stay_paired() -> None:
    first = make_per_image("run1:cnn", "gradcam", seed=1)
    second = make_per_image("run2:cnn", "gradcam", seed=2)
    table = compare(pd.concat([first, second]), ("run1:cnn", "gradcam"), ("run2:cnn", "gradcam"))
    assert set(table["test"]) == {"wilcoxon"} and (table["n_pairs"] == 30).all()


def test_partial_overlap_is_named_and_unpaired(caplog: pytest.LogCaptureFixture) -> None:
    full = make_per_image("a", "gradcam", n_images=10)
    subset = make_per_image("b", "gradcam", n_images=4)
    with caplog.at_level(logging.WARNING, logger="gradsum.aggregation.compare"):
        assert not same_images(full, subset, "a/gradcam", "b/gradcam")
    assert "a/gradcam and b/gradcam share 4 of 10 and 4 image ids" in caplog.text
    caplog.clear()
    assert not same_images(full, _renamed(subset, "x"), "a", "b") and not caplog.text


def test_unpaired_test_edge_cases() -> None:
    assert unpaired_test(np.ones(3), np.ones(4)) == (6.0, 1.0)
    assert np.isnan(unpaired_test(np.array([]), np.ones(2))[1])
    x, y = np.array([0.1, 0.5, np.nan, 0.9]), np.array([0.2, 0.3])
    expected = stats.mannwhitneyu([0.1, 0.5, 0.9], y, alternative="two-sided")
    assert unpaired_test(x, y) == (expected.statistic, expected.pvalue)


def test_two_runs_label_both_sides_with_their_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_table(tmp_path / "synthetic", PER_IMAGE, make_per_image("cnn", "gradcam", n_images=12, seed=1))
    other = _renamed(make_per_image("cnn", "gradcam", n_images=12, seed=2), "cs_")
    write_table(tmp_path / "cityscapes", PER_IMAGE, pd.concat([other, other.assign(model="vit")]))
    merged = read_runs([tmp_path / "synthetic", tmp_path / "cityscapes"])
    assert sorted(merged["model"].unique()) == ["cityscapes:cnn", "cityscapes:vit", "synthetic:cnn"]
    out = tmp_path / "transfer.csv"
    assert (
        main(["compare", str(tmp_path / "synthetic"), str(tmp_path / "cityscapes"), "--out", str(out)]) == 0
    )
    table = pd.read_csv(out)
    tests = dict(zip(zip(table["a"], table["b"], strict=True), table["test"], strict=True))
    assert tests == {
        ("cityscapes:cnn/gradcam", "cityscapes:vit/gradcam"): "wilcoxon",
        ("cityscapes:cnn/gradcam", "synthetic:cnn/gradcam"): "mann-whitney",
        ("cityscapes:vit/gradcam", "synthetic:cnn/gradcam"): "mann-whitney",
    }
    assert "cityscapes:cnn/gradcam vs synthetic:cnn/gradcam (mann-whitney)" in capsys.readouterr().out
