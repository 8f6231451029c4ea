from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from aggregation_tables import make_per_image

from gradsum.aggregation import COMPARISON_COLUMNS, SAMPLE_COLUMNS, read_runs
from gradsum.cli import main
from gradsum.contract import PER_IMAGE, write_table
from gradsum.errors import ResultsError


@pytest.fixture
def run_folder(tmp_path: Path, two_methods: pd.DataFrame) -> Path:
    folder = tmp_path / "run1"
    write_table(folder, PER_IMAGE, two_methods)
    return folder


def test_compare_writes_comparisons_and_prints_differing_classes(
    run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(run_folder)]) == 0
    table = pd.read_csv(run_folder / "comparisons.csv")
    assert tuple(table.columns) == COMPARISON_COLUMNS + SAMPLE_COLUMNS
    assert table.loc[table["differs"], "class"].tolist() == ["car"]
    out = capsys.readouterr().out
    assert "cnn/gradcam vs cnn/shifted" in out and "1 of 7 classes differ" in out
    assert "car" in out and "comparisons.csv" in out


def test_compare_with_pair_and_out(run_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "cmp.csv"
    assert main(["compare", str(run_folder), "--out", str(out), "--pair", "cnn/shifted", "cnn/gradcam"]) == 0
    table = pd.read_csv(out)
    assert set(table["a"]) == {"cnn/shifted"} and len(table) == 7


def test_colliding_models_of_two_runs_get_run_prefixes(run_folder: Path, tmp_path: Path) -> None:
    write_table(tmp_path / "run2", PER_IMAGE, make_per_image("cnn", "gradcam", seed=5))
    merged = read_runs([run_folder, tmp_path / "run2"])
    assert sorted(merged["model"].unique()) == ["run1:cnn", "run2:cnn"]
    out = tmp_path / "both.csv"
    assert main(["compare", str(run_folder), str(tmp_path / "run2"), "--out", str(out)]) == 0
    assert ("run1:cnn/gradcam", "run2:cnn/gradcam") in set(
        zip(*(pd.read_csv(out)[c] for c in "ab"), strict=True)
    )


def test_missing_and_corrupt_per_image_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty)]) == 2
    assert f"{empty / 'per_image.parquet'}: missing" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "per_image.parquet").write_bytes(b"not parquet")
    with pytest.raises(ResultsError, match=r"per_image\.parquet: cannot be read"):
        read_runs([broken])


def test_bad_pair_label_is_an_error(run_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(run_folder), "--pair", "cnn", "cnn/gradcam"]) == 2
    assert "--pair: 'cnn' is not a model/method label" in capsys.readouterr().err
