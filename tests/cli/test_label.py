"""`gradsum label` end to end: a saved segmenter labels a synthetic set whose labels were removed; the result
passes `gradsum check`, and `gradsum profile` runs on it and records where its labels came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from gradsum.cli import main
from gradsum.contract import MANIFEST
from gradsum.labelling.segmenters import build_segmenter, save_segmenter
from gradsum.models import ModelSpec, build_model, save_model
from gradsum.truthsets import open_truthset
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)
ROAD, SKY = 7, 23


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("label")
    torch.manual_seed(0)
    segmenter = build_segmenter(
        "lraspp_mobilenet_v3_large", (ROAD, SKY), SIZE, card={"metrics": {"miou": 0.5}}
    )
    save_segmenter(segmenter, root / "segmenter")
    save_model(
        build_model("pilotnet", SIZE),
        ModelSpec(name="tiny", architecture="pilotnet", task="steering", img_size=SIZE),
        root / "model",
    )
    frames = generate(root / "frames", count=20, seed=0, size=SIZE)
    shutil.rmtree(frames / "gtFine")
    return {"root": root, "segmenter": root / "segmenter", "model": root / "model", "frames": frames}


def test_label_check_and_profile(inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = inputs["root"] / "pseudo"
    argv = ["label", str(inputs["frames"]), "--segmenter", str(inputs["segmenter"]), "--out", str(out)]
    # threshold 0 keeps every pixel: two channels are never below 0.5 together, so every frame has labels
    assert main([*argv, "--threshold", "0", "--batch-size", "3", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == (
        f"wrote {out}: train 16 (0.0% void), val 2 (0.0% void), test 2 (0.0% void) labelled by "
        "lraspp_mobilenet_v3_large at threshold 0.0"
    )
    truthset = open_truthset(out)
    exact = SyntheticTruthSet(inputs["frames"], "test")
    assert truthset.tasks == exact.tasks
    assert truthset.targets("steering").tolist() == exact.targets("steering").tolist()
    card = json.loads((inputs["segmenter"] / "card.json").read_text())
    source = truthset.parameters["label_source"]
    assert source["sha256"] == card["weights_sha256"]
    assert (source["predicted"], source["held_out_miou"], source["segmenter"]) == (
        True,
        0.5,
        str(inputs["segmenter"].resolve()),
    )

    assert main(["check", str(out)]) == 0

    results = inputs["root"] / "results"
    profile = ["profile", "--model", str(inputs["model"]), "--truthset", str(out), "--limit", "2"]
    assert main([*profile, "--checks", "", "--out", str(results), "--device", "cpu"]) == 0
    recorded = json.loads((results / MANIFEST).read_text())["truthset"]
    assert (recorded["kind"], recorded["split"]) == ("pseudo", "test")
    assert recorded["parameters"]["label_source"] == source


def test_an_existing_truthset_is_refused(inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = inputs["root"] / "existing"
    out.mkdir()
    argv = ["label", str(inputs["frames"]), "--segmenter", str(inputs["segmenter"]), "--out", str(out)]
    assert main(argv) == 2
    assert f"{out} already exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err


def test_a_missing_segmenter_is_named(inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    missing = inputs["root"] / "nothing"
    argv = ["label", str(inputs["frames"]), "--segmenter", str(missing), "--out", str(inputs["root"] / "x")]
    assert main(argv) == 2
    assert str(missing) in capsys.readouterr().err
