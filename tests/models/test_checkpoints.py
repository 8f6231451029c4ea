"""Checkpoints: exact round trip, refusal of pickles and corrupt files, shape checks, half precision."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from gradsum.errors import CheckpointError
from gradsum.models import ModelSpec, load_model, load_weights, read_card, read_state_dict, save_model

SPEC = ModelSpec.from_dict(
    {"name": "small", "architecture": "compact_cnn", "task": "obstacle", "img_size": [48, 96]}
)


def trained_like(spec: ModelSpec = SPEC) -> nn.Module:
    """A model with non-default weights and BatchNorm statistics."""
    torch.manual_seed(0)
    model = spec.build()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    model.train()(torch.rand(8, 3, *spec.img_size))  # moves the running statistics
    return model.eval()


def test_round_trip_is_exact(tmp_path: Path) -> None:
    model = trained_like()
    card = save_model(model, SPEC, tmp_path / "ckpt")
    loaded, loaded_card = load_model(tmp_path / "ckpt")
    images = torch.rand(4, 3, 48, 96)
    assert torch.equal(loaded(images), model(images))
    assert loaded_card == card == read_card(tmp_path / "ckpt")
    assert loaded_card.model_spec() == SPEC
    assert not loaded.training


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoint_loads_in_float32(tmp_path: Path, dtype: torch.dtype) -> None:
    model = trained_like()
    save_model(model, SPEC, tmp_path, dtype=dtype)
    assert read_state_dict(tmp_path / "model.safetensors")["features.0.0.weight"].dtype == dtype
    loaded, card = load_model(tmp_path)
    assert card.dtype == str(dtype).removeprefix("torch.")
    assert next(loaded.parameters()).dtype == torch.float32
    images = torch.rand(4, 3, 48, 96)
    torch.testing.assert_close(loaded(images), model(images), atol=0.05, rtol=0.05)


def test_pickle_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"refused.*can execute code"):
        read_state_dict(path)


def test_pt_file_with_python_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"model": trained_like(), "note": object()}, path)
    with pytest.raises(CheckpointError, match=r"refused: the file holds pickled Python code or objects"):
        read_state_dict(path)


def test_tensors_only_pt_loads_into_a_users_module(tmp_path: Path) -> None:
    model = trained_like()
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    mine = load_weights(SPEC.build(), path).eval()
    images = torch.rand(2, 3, 48, 96)
    assert torch.equal(mine(images), model(images))


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    save_model(trained_like(), SPEC, tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*corrupt"):
        read_state_dict(weights)
    torch_file = tmp_path / "broken.pt"
    torch_file.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"broken\.pt"):
        read_state_dict(torch_file)


def test_weights_from_another_save_are_detected(tmp_path: Path) -> None:
    save_model(trained_like(), SPEC, tmp_path / "a")
    other = SPEC.build()
    save_model(other, SPEC, tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="checksum weights_sha256 does not match"):
        load_model(tmp_path / "a")


def test_shape_mismatch_lists_the_keys(tmp_path: Path) -> None:
    save_model(trained_like(), SPEC, tmp_path)
    wider = ModelSpec.from_dict({**SPEC.to_dict(), "arch": {"hidden": 32}})
    with pytest.raises(
        CheckpointError, match=r"parameter head\.1\.bias has shape \(64,\), the model expects \(32,\); param"
    ):
        load_weights(wider.build(), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys .*unexpected keys"):
        load_weights(nn.Sequential(nn.Linear(2, 1)), tmp_path / "model.safetensors")


def test_weight_file_without_card_and_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "alone.safetensors"
    save_model(trained_like(), SPEC, tmp_path)
    path.write_bytes((tmp_path / "model.safetensors").read_bytes())
    (tmp_path / "card.json").unlink()
    with pytest.raises(CheckpointError, match="load_weights"):
        load_model(path)
    with pytest.raises(CheckpointError, match=r"\.ckpt"):
        read_state_dict(path.rename(tmp_path / "alone.ckpt"))
