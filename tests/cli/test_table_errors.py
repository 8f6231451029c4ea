"""A results table whose cells are not of their declared type is refused by name, before anything is drawn."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from gradsum.cli import main
from gradsum.fileio import sha256_file
from gradsum.models import ModelSpec, build_model, save_model
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tables")
    spec = ModelSpec(name="tiny", architecture="pilotnet", task="steering", img_size=SIZE)
    torch.manual_seed(0)
    save_model(build_model("pilotnet", SIZE), spec, root / "model")
    generate(root / "set", count=20, seed=0, size=SIZE)
    return root / "model", root / "set"


def refused(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "Traceback" not in err and err.startswith(f"gradsum {argv[0]}: error: ") and err.count("\n") == 1
    ), err
    assert named in err, err


def test_a_profiles_table_with_text_for_numbers_is_named(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, truthset = inputs
    results = tmp_path / "results"
    argv = [
        "profile",
        "--model",
        str(model),
        "--truthset",
        str(truthset),
        "--limit",
        "2",
        "--out",
        str(results),
    ]
    assert main([*argv, "--device", "cpu"]) == 0
    profiles = results / "profiles.csv"
    table = pd.read_csv(profiles)
    table["score_mean"] = "high"
    table.to_csv(profiles, index=False)
    manifest = json.loads((results / "manifest.json").read_text())
    # the manifest is made to agree, as a hand-edited folder's would be: the table itself must be refused
    manifest["files"]["profiles.csv"] = sha256_file(profiles)
    (results / "manifest.json").write_text(json.dumps(manifest))
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    refused(["report", str(results)], f"{profiles}: column 'score_mean'", capsys)
    refused(["figures", str(results), "--out", str(tmp_path / "figures")], f"{profiles}: column", capsys)
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "figures").exists()
