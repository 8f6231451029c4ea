"""`gradsum train-segmenter`: a thin layer over `train_segmenter`, one summary line, one-line errors."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from gradsum.cli import build_parser, main
from gradsum.contract import CARD, WEIGHTS
from gradsum.labelling.training import train_segmenter
from gradsum.truthsets.synthetic import generate


@pytest.fixture(scope="module")
def truthset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("cli_segtrain") / "set", count=20, seed=0, size=(32, 64))


def test_the_options_defaults_are_train_segmenters() -> None:
    parser = build_parser()
    args = parser.parse_args(["train-segmenter", "set", "--out", "o"])
    signature = inspect.signature(train_segmenter).parameters
    for name in (
        "architecture",
        "steps",
        "batch_size",
        "input_size",
        "lr",
        "seed",
        "split",
        "held_out",
        "device",
    ):
        assert getattr(args, name) == signature[name].default, name


def test_trains_writes_the_folder_and_prints_the_held_out_miou(
    truthset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seg"
    argv = ["train-segmenter", str(truthset), "--out", str(out), "--steps", "2", "--batch-size", "2"]
    assert main([*argv, "--input-size", "32", "48", "--seed", "1", "--device", "cpu", "--quiet"]) == 0
    card = json.loads((out / CARD).read_text())
    assert (out / WEIGHTS).is_file() and card["input_size"] == [32, 48] and card["training"]["seed"] == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line == (
        f"wrote {out}: lraspp_mobilenet_v3_large trained 2 steps on train; "
        f"held-out mIoU {card['metrics']['miou']:.3f} on val ({card['metrics']['frames']} frames)"
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--architecture", "unet"], "valid: deeplabv3_mobilenet_v3_large"),
        (["--held-out", "nope"], "nope"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    truthset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    assert main(["train-segmenter", str(truthset), "--out", str(tmp_path / "seg"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradsum train-segmenter: error: ") and err.count("\n") == 1 and named in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_truth_set_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-segmenter", str(tmp_path / "absent"), "--out", str(tmp_path / "seg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "absent" in err, err
    assert list(tmp_path.iterdir()) == []
