"""Training that survives SIGKILL: no half-written model folder, exact resume, changed configurations refused."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import yaml

import gradsum.models.training as training
from gradsum.cli import main
from gradsum.errors import TrainingError
from gradsum.models import load_model, read_card, train_model
from gradsum.models.training import state_folder
from gradsum.truthsets.synthetic import generate

SPEC = {
    "name": "tiny",
    "architecture": "compact_cnn",
    "task": "steering",
    "img_size": [48, 96],
    "train": {"epochs": 4, "batch_size": 8, "patience": 50},
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A spec file and a 40-scene synthetic truth set at 48×96, made here."""
    root = tmp_path_factory.mktemp("resume")
    spec = root / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    return spec, generate(root / "set", count=40, size=(48, 96), seed=0)


def command(inputs: tuple[Path, Path], out: Path, epochs: int) -> list[str]:
    spec, truthset = inputs
    options = ["--out", str(out), "--epochs", str(epochs), "--quiet"]
    return ["train", "--model", str(spec), "--truthset", str(truthset), *options]


def interrupt_after_epoch_one(epoch: int, record: dict[str, float]) -> None:
    if epoch == 1:
        raise KeyboardInterrupt


@pytest.mark.slow  # a fresh interpreter imports torch and every command (about 8 s on 2 shared cores)
def test_sigkilled_training_resumes_to_the_uninterrupted_model(
    inputs: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    epochs = 4  # an epoch takes tenths of a second: three are ample time for the kill to land mid-run
    killed = tmp_path / "killed model"
    # one thread, like the test process that finishes the run: float sums differ with the thread count
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gradsum", *command(inputs, killed, epochs)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    resume = state_folder(killed) / "resume.pt"
    deadline = time.monotonic() + 120
    while not resume.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    assert resume.exists()
    assert not killed.exists()  # never a model folder a later run would take as trained

    with caplog.at_level(logging.INFO, logger="gradsum.models.training"):
        assert main(command(inputs, killed, epochs)) == 0
    resumed_after = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming tiny")]
    assert len(resumed_after) == 1 and int(resumed_after[0].split()[-1]) in range(1, epochs)
    assert main(command(inputs, tmp_path / "straight", epochs)) == 0

    weights = [
        safetensors.torch.load_file(str(tmp_path / name / "model.safetensors"))
        for name in ("killed model", "straight")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][key].equal(weights[1][key]) for key in weights[0])
    cards = [read_card(tmp_path / name) for name in ("killed model", "straight")]
    assert cards[0].metrics == cards[1].metrics and cards[0].history == cards[1].history
    assert cards[0].epochs_run == epochs and cards[0].weights_sha256 == cards[1].weights_sha256
    assert not state_folder(killed).exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"epochs": 5}, "spec.train.epochs (4 → 5)"),
        ({"shuffle_labels": True}, "shuffle_labels (False → True)"),
        ({"task": "obstacle"}, "task ('steering' → 'obstacle')"),
    ],
)
def test_resume_with_a_changed_configuration_is_refused(
    inputs: tuple[Path, Path], tmp_path: Path, change: dict[str, object], named: str
) -> None:
    spec, truthset = inputs
    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train_model(spec, truthset, out=out, progress=False, on_epoch_end=interrupt_after_epoch_one)
    with pytest.raises(TrainingError) as caught:
        train_model(spec, truthset, out=out, progress=False, **change)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{state_folder(out) / 'resume.pt'}: refusing to resume")
    assert named in message and "resume=False" in message
    assert message.count("→") == 1  # only what changed is named
    assert not out.exists() and (state_folder(out) / "resume.pt").is_file()  # nothing lost either
    card = train_model(spec, truthset, out=out, progress=False, resume=False, **change)  # type: ignore[arg-type]
    assert card.epochs_run == change.get("epochs", 4)


def test_cli_refuses_a_changed_resume_in_one_line(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, truthset = inputs
    out = tmp_path / "m"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SPEC, "arch": {"hidden": 32}}))
    with pytest.raises(KeyboardInterrupt):
        train_model(spec, truthset, out=out, progress=False, on_epoch_end=interrupt_after_epoch_one)
    capsys.readouterr()
    args = command(inputs, out, 4)
    args[args.index(str(spec))] = str(other)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "spec.arch.hidden (None → 32)" in err[0] and "--no-resume" in err[0], err
    assert main([*args, "--no-resume"]) == 0
    assert read_card(out).spec["arch"] == {"hidden": 32}


def test_failed_final_write_leaves_no_model_folder(
    inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, truthset = inputs
    out = tmp_path / "m"
    real_save = training.save_model

    def disk_full(*args: object, **kwargs: object) -> None:
        real_save(*args, **kwargs)  # type: ignore[arg-type]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training, "save_model", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train_model(spec, truthset, out=out, progress=False, epochs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.train-state"]
    monkeypatch.undo()
    seen: list[int] = []
    card = train_model(
        spec, truthset, out=out, progress=False, epochs=2, on_epoch_end=lambda e, r: seen.append(e)
    )
    assert seen == [] and card.epochs_run == 2  # every epoch was kept, none trained again
    load_model(out)
    assert json.loads((out / "card.json").read_text())["epochs_run"] == 2
