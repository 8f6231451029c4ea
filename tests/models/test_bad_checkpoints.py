"""Bad model folders: each is refused with one line naming the file and what is wrong, and runs no code."""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from gradsum.errors import CheckpointError, ModelOutputError
from gradsum.models import ModelSpec, checkpoint_folder, load_model, read_state_dict, save_model
from gradsum.models.loaded import LoadedModel, check_finite

SPEC = ModelSpec.from_dict(
    {"name": "small", "architecture": "compact_cnn", "task": "obstacle", "img_size": [48, 96]}
)


class Payload:
    """A pickle whose loading would run a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A model folder as GradSUM writes it (card with checksum + safetensors)."""
    torch.manual_seed(0)
    save_model(SPEC.build().eval(), SPEC, tmp_path / "model")
    return tmp_path / "model"


def without_checksum(folder: Path) -> None:
    card = json.loads((folder / "card.json").read_text())
    card["weights_sha256"] = ""
    (folder / "card.json").write_text(json.dumps(card))


def torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message
    return message


def test_card_and_tensors_only_pt_load_through_the_weights_only_reader(folder: Path) -> None:
    original, _ = load_model(folder)
    (folder / "model.pt").write_bytes(torch_bytes(original.state_dict()))
    (folder / "model.safetensors").unlink()
    without_checksum(folder)  # a card written by hand for weights trained elsewhere
    loaded, _ = load_model(folder)
    images = torch.rand(2, 3, 48, 96)
    assert torch.equal(loaded(images), original(images))


def test_folder_without_weights_names_what_it_found(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "weights.bin")
    message = refusal(folder)
    assert message == f"{folder}: model.safetensors is missing (found: card.json, weights.bin)"
    (folder / "card.json").unlink()
    assert refusal(folder) == f"{folder}: not a model folder: card.json is missing (found: weights.bin)"
    assert refusal(folder / "elsewhere") == f"{folder / 'elsewhere'}: no such model folder or weight file"


@pytest.mark.parametrize(
    ("content", "looks_like"),
    [
        (lambda: torch_bytes(SPEC.build().state_dict()), "a torch zip"),
        (lambda: pickle.dumps({"weight": [1.0, 2.0]}), "a pickle"),
    ],
)
def test_pickle_named_safetensors_is_named_as_such_before_the_checksum(
    folder: Path, content: object, looks_like: str
) -> None:
    (folder / "model.safetensors").write_bytes(content())  # type: ignore[operator]
    message = refusal(folder)
    assert f"model.safetensors: is not a safetensors file (looks like {looks_like}" in message
    assert "checksum" not in message and "sha256" not in message


def test_wrong_shapes_are_named_before_the_checksum(folder: Path) -> None:
    wider = ModelSpec.from_dict({**SPEC.to_dict(), "arch": {"hidden": 32}})
    (folder / "model.safetensors").write_bytes(
        safetensors.torch.save({k: v.contiguous() for k, v in wider.build().state_dict().items()})
    )
    message = refusal(folder)
    assert "parameter head.1.bias has shape (32,), the model expects (64,)" in message
    assert "parameter head.3.weight has shape (1, 32), the model expects (1, 64)" in message
    assert "sha256" not in message


def test_same_shapes_other_values_fail_the_checksum(folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    save_model(SPEC.build(), SPEC, tmp_path / "other")
    (folder / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    assert "checksum weights_sha256 does not match" in refusal(folder)


def test_pickle_refusal_is_one_clean_line(folder: Path) -> None:
    without_checksum(folder)
    (folder / "model.safetensors").unlink()
    (folder / "model.pt").write_bytes(torch_bytes({"model": SPEC.build()}))  # a whole module, pickled
    message = refusal(folder)
    assert message.startswith(
        f"{folder / 'model.pt'}: refused: the file holds pickled Python code or objects"
    )
    assert "will not execute" in message
    assert "weights_only" not in message and "two options" not in message.lower()


@pytest.mark.parametrize("where", ["model.pt", "model.safetensors"])
@pytest.mark.parametrize("as_torch_zip", [True, False])
def test_pickle_with_code_is_refused_and_never_runs(folder: Path, where: str, as_torch_zip: bool) -> None:
    marker = folder.parent / "owned by the pickle"
    payload = Payload(marker)
    (folder / "model.safetensors").unlink()
    (folder / where).write_bytes(torch_bytes({"w": payload}) if as_torch_zip else pickle.dumps(payload))
    message = refusal(folder)
    assert str(folder / where) in message
    if where == "model.pt" and as_torch_zip:
        assert "(it calls for posix.system)" in message or "(it calls for nt.system)" in message
    with pytest.raises(CheckpointError):
        read_state_dict(folder / where)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "unreadable model card"),
        ("[1, 2]", "model card is not a JSON object"),
        (None, "field 'seed' should be int, got 'zero'"),
    ],
)
def test_bad_card_names_the_file_and_field(folder: Path, text: str | None, expected: str) -> None:
    card = folder / "card.json"
    if text is None:
        card.write_text(json.dumps({**json.loads(card.read_text()), "seed": "zero"}))
    else:
        card.write_text(text)
    message = refusal(folder)
    assert message.startswith(f"{card}: ") and expected in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("history", "long", "field 'history' should be list"),
        ("metrics", [0.5], "field 'metrics' should be dict"),
        ("spec", {**SPEC.to_dict(), "img_size": "big"}, "(field 'spec'): field 'img_size'"),
    ],
)
def test_wrong_typed_card_fields(folder: Path, field: str, value: object, expected: str) -> None:
    card = folder / "card.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), field: value}))
    message = refusal(folder)
    assert message.startswith(str(card)) and expected in message


def test_checkpoint_folder_accepts_folders_and_their_files(folder: Path, tmp_path: Path) -> None:
    assert checkpoint_folder(folder) == folder
    assert checkpoint_folder(folder / "model.safetensors") == folder
    assert checkpoint_folder(folder / "card.json") == folder
    assert checkpoint_folder(tmp_path / "to train") == tmp_path / "to train"  # a run may train into it


def test_checkpoint_folder_refuses_files_that_are_not_a_models(folder: Path, tmp_path: Path) -> None:
    alone = tmp_path / "elsewhere" / "model.pt"
    alone.parent.mkdir()
    alone.write_bytes(torch_bytes(SPEC.build().state_dict()))
    with pytest.raises(CheckpointError) as caught:
        checkpoint_folder(alone)
    expected = (
        f"a model folder (card.json + model.safetensors) is expected; {alone} has no card.json beside it"
    )
    assert str(caught.value) == expected
    (folder / "model.pt").write_bytes(alone.read_bytes())
    with pytest.raises(CheckpointError, match=r"model\.pt: its folder .* loads model\.safetensors, not this"):
        checkpoint_folder(folder / "model.pt")
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such file"):
        checkpoint_folder(tmp_path / "missing.pt")
    (folder / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match=r"notes\.txt is neither a model card nor a weight file"):
        checkpoint_folder(folder / "notes.txt")


class Poisoned(nn.Module):
    """Outputs its input's first pixel, so a NaN or inf planted there reaches the output."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0, 0, :1]


def test_non_finite_model_output_names_the_model() -> None:
    model = LoadedModel("poisoned", Poisoned(), {}, "steering", (4, 4))
    images = torch.zeros(4, 3, 4, 4)
    assert torch.equal(model.predict(images), torch.zeros(4))
    images[2, 0, 0, 0] = float("nan")
    images[3, 0, 0, 0] = float("inf")
    with pytest.raises(
        ModelOutputError,
        match=r"^model 'poisoned': output: 2 of 4 values are not finite \(inf/nan; first at index 2\)$",
    ):
        model.predict(images)
    with pytest.raises(ModelOutputError, match=r"^maps: 1 of 4 values .*first at index \(1, 0\)"):
        check_finite(torch.tensor([[1.0, 2.0], [float("-inf"), 0.0]]), "maps")
