"""load_results: a good folder loads; every kind of damage is a ResultsError naming what is at fault."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gradsum.errors import ResultsError
from gradsum.report import load_results, newest_results


def test_good_folder_loads_every_table_and_card(results_dir: Path) -> None:
    results = load_results(results_dir)
    assert results.name == "run-1"
    assert set(results.per_image["model"]) == {"pilotnet", "vit", "hybrid"}
    assert results.per_image["image"].tolist()[0] == "0001"  # ids stay strings
    assert results.comparisons is not None and results.comparisons["differs"].sum() == 1
    assert results.ground_truth is not None and results.attention is not None
    assert sorted(results.cards) == ["hybrid", "pilotnet", "vit"]
    # An absent class has no row: car is missing from image 0004.
    cars = results.per_image[(results.per_image["class"] == "car") & (results.per_image["image"] == "0004")]
    assert cars.empty


def test_optional_tables_may_be_absent(results_dir: Path) -> None:
    for name in ("comparisons.csv", "attention.csv", "attention_profiles.csv", "ground_truth.csv"):
        _unlist(results_dir, name)
        (results_dir / name).unlink()
    results = load_results(results_dir)
    assert results.comparisons is None and results.attention is None and results.ground_truth is None


def _unlist(folder: Path, relative: str) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"][relative]
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _drop_column(folder: Path, name: str, column: str) -> None:
    path = folder / name
    if path.suffix == ".parquet":
        pd.read_parquet(path).drop(columns=column).to_parquet(path)
    else:
        pd.read_csv(path).drop(columns=column).to_csv(path, index=False)
    _unlist(folder, name)


def _keep_header(folder: Path, name: str) -> None:
    pd.read_csv(folder / name).head(0).to_csv(folder / name, index=False)
    _unlist(folder, name)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "manifest.json").unlink(), "manifest.json: missing"),
        (lambda f: (f / "manifest.json").write_text("{not json"), "manifest.json: unreadable JSON"),
        (lambda f: (f / "manifest.json").write_text('{"config": {}}'), "field 'files'"),
        (lambda f: (f / "profiles.csv").unlink(), "profiles.csv: listed in manifest.json but missing"),
        (lambda f: (f / "profiles.csv").write_text("model\nx\n"), "profiles.csv: sha256 differs"),
        (
            lambda f: (_unlist(f, "profiles.csv"), (f / "profiles.csv").unlink()),
            "profiles.csv: missing (a required",
        ),
        (
            lambda f: (_unlist(f, "per_image.parquet"), (f / "per_image.parquet").unlink()),
            "per_image.parquet: missing",
        ),
        (
            lambda f: _drop_column(f, "profiles.csv", "score_ci_low"),
            "profiles.csv: missing column(s) 'score_ci_low'",
        ),
        (
            lambda f: _drop_column(f, "per_image.parquet", "lift"),
            "per_image.parquet: missing column(s) 'lift'",
        ),
        (lambda f: _drop_column(f, "attention.csv", "head"), "attention.csv: missing column(s) 'head'"),
        (lambda f: _keep_header(f, "profiles.csv"), "profiles.csv: no rows"),
        (
            lambda f: (
                _unlist(f, "per_image.parquet"),
                (f / "per_image.parquet").write_bytes(b"PAR1 broken"),
            ),
            "per_image.parquet: cannot be read",
        ),
        (
            lambda f: (
                _unlist(f, "cards/vit.json"),
                (f / "cards" / "vit.json").write_text('{"name": "vit"}'),
            ),
            "vit.json: missing field(s) 'task'",
        ),
    ],
)
def test_damaged_folder_names_the_fault(results_dir: Path, damage, message: str) -> None:
    damage(results_dir)
    with pytest.raises(ResultsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_results(results_dir)


def test_stale_rendering_checksum_only_warns(results_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = json.loads((results_dir / "manifest.json").read_text())
    manifest["files"]["report.html"] = "0" * 64
    (results_dir / "manifest.json").write_text(json.dumps(manifest))
    load_results(results_dir)
    assert "report.html" in caplog.text


def test_newest_results_picks_a_folder_with_a_manifest(results_dir: Path) -> None:
    (results_dir.parent / "unfinished").mkdir()
    assert newest_results(results_dir.parent) == results_dir
    with pytest.raises(ResultsError, match="no results folder"):
        newest_results(results_dir / "cards")


def test_checkpoint_style_card_keeps_name_and_architecture_under_spec(results_dir: Path) -> None:
    card = {"spec": {"name": "vit_s", "architecture": "vit"}, "task": "steering", "metrics": {"mae": 0.2}}
    (results_dir / "cards" / "vit.json").write_text(json.dumps(card))
    _unlist(results_dir, "cards/vit.json")
    loaded = load_results(results_dir).cards["vit"]
    assert (loaded["name"], loaded["architecture"], loaded["metrics"]) == ("vit_s", "vit", {"mae": 0.2})
