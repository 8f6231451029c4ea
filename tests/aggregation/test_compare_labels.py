"""Every kind of label through `gradsum compare --pair`: plain, library, null, control, part, run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from aggregation_tables import make_per_image

from gradsum.cli import main
from gradsum.contract import PER_IMAGE, write_table
from gradsum.errors import SpecError
from gradsum.pipeline import config_from_dict

#: the method labels of one model, in the stored forms of the default run's tables
METHODS = (
    "gradcam",
    "lib:gradcam",
    "null:random",
    "control:oracle",
    "split/attention",
    "split/tokenizer_gradcam",
)


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """Run `run1`: models `hybrid` and `hybrid_split` (a model whose name looks like a method's prefix)."""
    frames = [make_per_image("hybrid", method, seed=seed) for seed, method in enumerate(METHODS)]
    frames.append(make_per_image("hybrid_split", "attention", seed=9, shift={26: 0.3}))
    folder = tmp_path / "run1"
    write_table(folder, PER_IMAGE, pd.concat(frames, ignore_index=True))
    return folder


def _compared(arguments: list[str], out: Path) -> set[tuple[str, str]]:
    assert main(["compare", *arguments, "--out", str(out)]) == 0
    table = pd.read_csv(out)
    return set(zip(table["a"], table["b"], strict=True))


@pytest.mark.parametrize("method", METHODS[1:])
def test_every_method_label_compares_against_gradcam(run_folder: Path, tmp_path: Path, method: str) -> None:
    pair = f"hybrid/{method}"
    assert _compared([str(run_folder), "--pair", pair, "hybrid/gradcam"], tmp_path / "c.csv") == {
        (pair, "hybrid/gradcam")
    }


def test_a_part_label_stays_with_its_model(run_folder: Path, tmp_path: Path) -> None:
    # split at the last '/', this read as model `hybrid/split`, method `attention`
    out = tmp_path / "c.csv"
    assert _compared(
        [str(run_folder), "--pair", "hybrid/split/attention", "hybrid_split/attention"], out
    ) == {("hybrid/split/attention", "hybrid_split/attention")}
    table = pd.read_csv(out)
    assert (
        table.loc[table["class"] == "car", "mean_b"].item()
        > table.loc[table["class"] == "car", "mean_a"].item()
    )


def test_run_prefixed_labels_of_two_runs(run_folder: Path, tmp_path: Path) -> None:
    write_table(tmp_path / "run2", PER_IMAGE, make_per_image("hybrid", "split/attention", seed=3))
    arguments = [str(run_folder), str(tmp_path / "run2"), "--pair", "run1:hybrid/split/attention"]
    assert _compared([*arguments, "run2:hybrid/split/attention"], tmp_path / "c.csv") == {
        ("run1:hybrid/split/attention", "run2:hybrid/split/attention")
    }


def test_an_unknown_label_lists_the_known_ones(run_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(run_folder), "--pair", "hybrid/split", "hybrid/gradcam"]) == 2
    err = capsys.readouterr().err
    assert "'hybrid/split'" in err and "hybrid/split/attention" in err and "hybrid/lib:gradcam" in err


@pytest.mark.parametrize("name", ["hybrid/split", "run1:hybrid"])
def test_a_model_name_with_a_separator_is_refused(name: str) -> None:
    data = {"models": [{"name": name, "spec": "pilotnet"}], "methods": [{"method": "gradcam"}]}
    with pytest.raises(SpecError, match=r"must be non-empty and hold neither '/' nor ':'"):
        config_from_dict(data, "run.yaml")
