"""`resize_model` / `gradsum resize`: a model folder rebuilt for another input size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gradsum.cli import main
from gradsum.contract import CARD
from gradsum.errors import CheckpointError, SpecError
from gradsum.fileio import sha256_file
from gradsum.models import ModelSpec, load_model, load_spec, save_model
from gradsum.models.checkpoints import weights_file
from gradsum.models.resize import POSITION_EMBEDDING, resize_model

SMALL, LARGE = (32, 64), (64, 256)


def vit_folder(folder: Path, arch: dict[str, object] | None = None) -> Path:
    spec = ModelSpec.from_dict(
        {
            "name": "tiny_vit",
            "architecture": "vit",
            "task": "steering",
            "img_size": list(SMALL),
            "arch": arch or {"patch_size": 16, "embed_dim": 8, "depth": 1, "num_heads": 2},
        }
    )
    torch.manual_seed(0)
    module = spec.build()
    with torch.no_grad():
        # a position embedding constant over the grid per channel, the class token's row apart: any
        # interpolation that preserves constants (bicubic weights sum to 1) keeps it as it is
        channels = torch.arange(module.pos_embed.shape[-1], dtype=torch.float32)
        module.pos_embed[:, 1:] = channels
        module.pos_embed[:, 0] = -1.0 - channels
    save_model(module, spec, folder)
    return folder


def test_a_vit_is_rebuilt_for_the_new_size_with_its_positions_resampled(tmp_path: Path) -> None:
    source = vit_folder(tmp_path / "small")
    card = resize_model(source, LARGE, tmp_path / "large")
    before, _ = load_model(source)
    after, saved = load_model(tmp_path / "large")

    assert saved.spec["img_size"] == list(LARGE) and card.spec == saved.spec
    assert saved.spec["description"].startswith("resized to 64×256 by gradsum resize")
    # 2×4 tokens become 4×16: the constant channels stay, the class token's row is untouched
    positions = after.state_dict()[POSITION_EMBEDDING]
    channels = torch.arange(positions.shape[-1], dtype=torch.float32)
    assert positions.shape == (1, 1 + 4 * 16, 8)
    torch.testing.assert_close(positions[0, 1:], channels.expand(64, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(positions[0, 0], -1.0 - channels)
    for key, value in before.state_dict().items():
        if key != POSITION_EMBEDDING:
            torch.testing.assert_close(after.state_dict()[key], value, rtol=0, atol=0)
    assert after(torch.rand(1, 3, *LARGE)).shape == (1, 1)
    assert saved.resized == {
        "source": str(source),
        "source_weights_sha256": sha256_file(weights_file(source)),
        "img_size": {"from": list(SMALL), "to": list(LARGE)},
        "token_grid": {"from": [2, 4], "to": [4, 16]},
        "position_embedding": "bicubic, antialias",
    }
    assert saved.metrics == {}


def test_the_command_writes_the_folder_and_says_what_it_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = vit_folder(tmp_path / "small")
    out = tmp_path / "large"
    argv = ["resize", "--model", str(source), "--img-size", *map(str, LARGE), "--out", str(out)]
    assert main(argv) == 0
    assert "64×256 (made at 32×64, tokens [2, 4] → [4, 16])" in capsys.readouterr().out
    assert json.loads((out / CARD).read_text())["spec"]["img_size"] == list(LARGE)


def test_a_size_dependent_head_is_refused_naming_the_parameter(tmp_path: Path) -> None:
    spec = load_spec("pilotnet")
    save_model(spec.build(), spec, tmp_path / "pilotnet")
    with pytest.raises(CheckpointError, match=r"pilotnet: parameter head\.1\.weight has shape"):
        resize_model(tmp_path / "pilotnet", (192, 384), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((40, 64), r"--img-size: .*patch_size: 16 does not divide img_size \(40, 64\)"),
        (SMALL, r"--img-size: .* is already made for 32×64"),
        ((4, 64), r"--img-size: must be \[height, width\] of at least 8 pixels"),
    ],
)
def test_a_size_the_model_cannot_take_is_refused_naming_the_flag(
    tmp_path: Path, size: tuple[int, int], message: str
) -> None:
    source = vit_folder(tmp_path / "small")
    with pytest.raises(SpecError, match=message):
        resize_model(source, size, tmp_path / "out", argument="--img-size")
    assert not (tmp_path / "out").exists()


def test_a_model_without_a_class_token_keeps_every_position_on_the_grid(tmp_path: Path) -> None:
    source = vit_folder(
        tmp_path / "avg",
        {"patch_size": 16, "embed_dim": 8, "depth": 1, "num_heads": 2, "class_token": False},
    )
    resize_model(source, LARGE, tmp_path / "large")
    after, _ = load_model(tmp_path / "large")
    assert after.state_dict()[POSITION_EMBEDDING].shape == (1, 4 * 16, 8)


def test_a_hybrid_vit_keeps_its_tokenizer_and_resamples_its_positions(tmp_path: Path) -> None:
    spec = ModelSpec.from_dict(
        {
            "name": "tiny_hybrid",
            "architecture": "hybrid_vit",
            "task": "steering",
            "img_size": list(SMALL),
            "arch": {"stem": "pilot", "patch_size": 2, "embed_dim": 8, "depth": 1, "num_heads": 2},
        }
    )
    save_model(spec.build(), spec, tmp_path / "hybrid")
    card = resize_model(tmp_path / "hybrid", LARGE, tmp_path / "large")
    # stride 8 then patch 2: 2×4 tokens at 32×64, 4×16 at 64×256
    assert card.resized["token_grid"] == {"from": [2, 4], "to": [4, 16]}
    after, _ = load_model(tmp_path / "large")
    assert after(torch.rand(1, 3, *LARGE)).shape == (1, 1)
