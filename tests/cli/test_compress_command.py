"""`gradsum compress` writes one variant per level through the API; bad input is one message, exit 2, no files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradsum.cli import main
from gradsum.models import ModelSpec, build_model, read_card, save_model
from gradsum.models.checkpoints import card_for
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compress")
    generate(root / "set", count=20, seed=0, size=SIZE)
    spec = ModelSpec(name="tiny", architecture="pilotnet", task="steering", img_size=SIZE)
    card = card_for(spec)
    card.truthset = {"root": str(root / "set")}
    torch.manual_seed(0)
    save_model(build_model("pilotnet", SIZE), card, root / "pilotnet")
    return root / "pilotnet"


def test_one_variant_per_level_named_by_model_method_and_level(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compress", str(model), "--method", "magnitude", "--levels", "0.5", "0.8", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pilotnet_magnitude_0.5", "pilotnet_magnitude_0.8"]
    card = read_card(tmp_path / "pilotnet_magnitude_0.8")
    assert (card.compression["method"], card.compression["level"]) == ("magnitude", 0.8)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[1].startswith(
        f"wrote {tmp_path / 'pilotnet_magnitude_0.8'}: magnitude 0.8, sparsity 0.800, "
    )
    assert f"r2 {card.metrics['r2']:.3f} (was {card.compression['parent_metrics']['r2']:.3f})" in lines[1]


def test_int8_takes_no_levels_and_writes_one_folder(model: Path, tmp_path: Path) -> None:
    assert main(["compress", str(model), "--method", "int8_dynamic", "--out", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["pilotnet_int8_dynamic"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--method", "prune"],
            "unknown compression method 'prune' for method; valid: channels, int8_dynamic, magnitude",
        ),
        (
            ["--method", "magnitude", "--levels", "0.5", "1.5"],
            "levels: method magnitude needs a level strictly",
        ),
        (["--method", "channels", "--levels", "0"], "levels: method channels needs a level strictly"),
        (["--method", "int8_dynamic", "--levels", "0.5"], "levels: method int8_dynamic takes no level"),
        (
            ["--method", "int8_dynamic", "--device", "cuda"],
            "device 'cuda': method int8_dynamic runs on the CPU only",
        ),
    ],
)
def test_bad_input_is_one_message_exit_2_and_nothing_written(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main(["compress", str(model), *arguments, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"gradsum compress: error: {message}")
    assert not out.exists()


def test_a_missing_model_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    absent = tmp_path / "absent"
    assert main(["compress", str(absent), "--method", "magnitude", "--out", str(tmp_path / "out")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"gradsum compress: error: {absent}: no such model folder or weight file"
    )
    assert not (tmp_path / "out").exists()
