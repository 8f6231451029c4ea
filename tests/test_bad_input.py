"""The bad-input suite, end to end through the CLI.

Every case runs a `gradsum` command on one bad input and checks three things: a non-zero exit; one line
on stderr, without a traceback, naming the file, field or argument at fault; and nothing damaged or
half-written. An earlier results folder sits at the same `--out` and must keep every byte, and no file
or folder may appear anywhere but the run's work folder (the resume state a failed run keeps on purpose).
The readers' and loaders' own refusals are unit-tested in tests/truthsets and tests/models; this module
checks that they reach the user whole through the pipeline (DataLoader workers included).
"""

from __future__ import annotations

import errno
import importlib
import io
import json
import os
import pickle
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
import yaml
from PIL import Image

from gradsum.cli import main
from gradsum.models import ModelSpec, read_card, save_model, train_model
from gradsum.pipeline import config_from_dict, run
from gradsum.pipeline.shards import WorkFolder, work_folder
from gradsum.truthsets.layout import FrameId
from gradsum.truthsets.synthetic import generate
from gradsum.truthsets.synthetic.writer import frame_id

SIZE = (48, 96)
#: a steering CNN small enough to train for one epoch in well under a second
SPEC: dict[str, Any] = {
    "name": "tiny",
    "architecture": "compact_cnn",
    "task": "steering",
    "img_size": list(SIZE),
    "arch": {"channels": [8, 16], "hidden": 16},
    "train": {"epochs": 1, "batch_size": 16},
}
#: the cheapest complete run: no trust checks, one overlay, a short bootstrap, one loader worker (the
#: default, so that readers' errors cross a DataLoader worker as they do for users)
RUN: dict[str, Any] = {
    "name": "bad-input",
    "methods": [{"method": "gradcam"}],
    "evaluation": {"checks": []},
    "workers": 1,
    "overlays": 1,
    "bootstrap_resamples": 20,
    "attention_diagnostics": False,
}
#: the file a pickle's payload would create if it ever ran
MARKER = "owned by the pickle"
ODD = "mes résultats/données 1"
IS_ROOT = os.geteuid() == 0


@dataclass(frozen=True)
class Workspace:
    """A synthetic set (10 test frames), a model trained on it, and a finished run's results folder."""

    root: Path
    truthset: Path
    model: Path
    results: Path

    def config(self, **changes: Any) -> dict[str, Any]:
        """The good run's config with top-level fields replaced."""
        return {
            **RUN,
            "truthset": {"path": str(self.truthset), "split": "test"},
            "models": [{"name": "tiny", "checkpoint": str(self.model)}],
            "models_dir": str(self.root / "models"),
            "results_dir": str(self.root / "results"),
            **changes,
        }


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Built once: generating, training and the reference run take a few seconds together."""
    root = tmp_path_factory.mktemp("bad-input")
    truthset = generate(root / "truth", count=100, seed=0, size=SIZE)
    train_model(ModelSpec.from_dict(SPEC, "tiny"), truthset, out=root / "model", device="cpu", progress=False)
    space = Workspace(root, truthset, root / "model", root / "results")
    run(config_from_dict(space.config(), "workspace"), out=space.results)
    return space


@dataclass
class Bench:
    """One case's sandbox: copies of the workspace's inputs to damage, and the `--out` to protect."""

    workspace: Workspace
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    #: changes made once the inputs are snapshot (a folder made unreadable), and what puts each back
    armed: list[Callable[[], object]] = field(default_factory=list)
    restore: list[Callable[[], object]] = field(default_factory=list)

    def arm(self) -> None:
        """Make the changes that would stop the snapshot from reading the inputs."""
        while self.armed:
            self.armed.pop()()

    def undo(self) -> None:
        """Undo what a case changed to make its input bad (not the input's own files)."""
        self.monkeypatch.undo()
        while self.restore:
            self.restore.pop()()

    @property
    def out(self) -> Path:
        """The `--out` of every run: where the earlier results are."""
        return self.tmp / "results" / "earlier"

    def truthset(self) -> Path:
        """A copy of the synthetic set to damage."""
        return Path(shutil.copytree(self.workspace.truthset, self.tmp / "truth"))

    def model(self) -> Path:
        """A copy of the model folder to damage."""
        return Path(shutil.copytree(self.workspace.model, self.tmp / "model"))

    def config(self, text: str | None = None, **changes: Any) -> Path:
        """A run config file: `text` as it is, else the good config with top-level fields replaced."""
        path = self.tmp / "config.yaml"
        path.write_text(text if text is not None else yaml.safe_dump(self.workspace.config(**changes)))
        return path

    def run(self, config: Path | None = None, *extra: str) -> list[str]:
        """`gradsum run` of `config` (default: the good one) into the protected `--out`."""
        return ["run", "--config", str(config or self.config()), "--out", str(self.out), *extra]

    def profile(self, *extra: str) -> list[str]:
        """`gradsum profile` of the good model on the good set into the protected `--out`."""
        model, truthset = str(self.workspace.model), str(self.workspace.truthset)
        return ["profile", "--model", model, "--truthset", truthset, "--out", str(self.out), *extra]


#: a case builds its bad input in a bench and returns (argv, what the error line must name)
Prepare = Callable[[Bench], tuple[list[str], str]]


# -- image and label files -------------------------------------------------------------------------------


def _damaged_frame(
    damage: Callable[[Path], object], file: Callable[[FrameId, Path], Path], index: int
) -> Prepare:
    """Damage one file of test frame `index` of a copied synthetic set and run on it."""

    def prepare(bench: Bench) -> tuple[list[str], str]:
        root = bench.truthset()
        path = file(frame_id("test", index), root)
        damage(path)
        return bench.run(None, "--truthset", str(root)), str(path)

    return prepare


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _png(array: np.ndarray) -> Callable[[Path], object]:
    return lambda path: Image.fromarray(array).save(path)


def _image(frame: FrameId, root: Path) -> Path:
    return frame.image(root)


def _labels(frame: FrameId, root: Path) -> Path:
    return frame.label_ids(root)


def _cityscapes(bench: Bench, frames: int = 3) -> Path:
    """A Cityscapes tree whose val split has `frames` frames, each with its vehicle file."""
    root = bench.tmp / "cityscapes"
    rng = np.random.default_rng(0)
    labels = np.full(SIZE, 7, np.uint8)  # road ...
    labels[: SIZE[0] // 2] = 23  # ... under the sky
    (root / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    for k in range(frames):
        frame = FrameId("val", "aachen", 0, k)
        for path in (frame.label_ids(root), frame.vehicle(root)):
            path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(frame.image(root))
        Image.fromarray(labels).save(frame.label_ids(root))
        frame.vehicle(root).write_text(json.dumps({"speed": 10.0, "yawRate": 0.1 * k, "gpsHeading": 0.0}))
    return root


def _cityscapes_run(bench: Bench, root: Path) -> list[str]:
    return bench.run(bench.config(truthset={"path": str(root), "split": "val"}))


def missing_vehicle(bench: Bench) -> tuple[list[str], str]:
    root = _cityscapes(bench)
    vehicle = FrameId("val", "aachen", 0, 1).vehicle(root)
    vehicle.unlink()
    return _cityscapes_run(bench, root), str(vehicle)


def empty_cityscapes_split(bench: Bench) -> tuple[list[str], str]:
    root = _cityscapes(bench, frames=0)
    return _cityscapes_run(bench, root), str(root / "leftImg8bit" / "val")


def empty_folder(bench: Bench) -> tuple[list[str], str]:
    root = bench.tmp / "empty"
    root.mkdir()
    return bench.run(None, "--truthset", str(root)), str(root)


# -- configs and checkpoints -----------------------------------------------------------------------------


def _with_model(bench: Bench, folder: Path, name: str = "tiny") -> list[str]:
    return bench.run(bench.config(models=[{"name": name, "checkpoint": str(folder)}]))


def _spec_file(bench: Bench, **changes: Any) -> Path:
    path = bench.tmp / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return path


def spec_wrong_type(bench: Bench) -> tuple[list[str], str]:
    spec = _spec_file(bench, train={"epochs": "two"})
    models = [{"name": "untrained", "spec": str(spec), "checkpoint": str(bench.tmp / "untrained")}]
    return bench.run(bench.config(models=models)), f"{spec}: field 'train.epochs'"


def config_wrong_type(bench: Bench) -> tuple[list[str], str]:
    config = bench.config(batch_size="many")
    return bench.run(config), f"{config}: field 'batch_size'"


class Payload:
    """A pickle whose loading would run a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _pickled(where: str, as_torch_zip: bool) -> Prepare:
    """A model folder whose only weight file `where` is a pickle with code in it."""

    def prepare(bench: Bench) -> tuple[list[str], str]:
        folder = bench.model()
        (folder / "model.safetensors").unlink()
        payload = {"w": Payload(bench.tmp / MARKER)}
        if as_torch_zip:
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            data = buffer.getvalue()
        else:
            data = pickle.dumps(payload)
        (folder / where).write_bytes(data)
        return _with_model(bench, folder), str(folder / where)

    return prepare


def wrong_shapes(bench: Bench) -> tuple[list[str], str]:
    folder = bench.model()
    wider = ModelSpec.from_dict({**SPEC, "arch": {"channels": [8, 16], "hidden": 32}}, "wider")
    state = {k: v.contiguous() for k, v in wider.build().state_dict().items()}
    (folder / "model.safetensors").write_bytes(safetensors.torch.save(state))
    return _with_model(bench, folder), f"{folder / 'model.safetensors'}: does not fit"


def _card(text: str) -> Prepare:
    def prepare(bench: Bench) -> tuple[list[str], str]:
        folder = bench.model()
        (folder / "card.json").write_text(text)
        return _with_model(bench, folder), str(folder / "card.json")

    return prepare


def empty_weights(bench: Bench) -> tuple[list[str], str]:
    folder = bench.model()
    (folder / "model.safetensors").write_bytes(b"")
    return _with_model(bench, folder), str(folder / "model.safetensors")


def _config(field: str, **changes: Any) -> Prepare:
    """The good config with fields changed; the error must name `field` (and the config file)."""

    def prepare(bench: Bench) -> tuple[list[str], str]:
        return bench.run(bench.config(**changes)), field

    return prepare


def _profile(named: str, *extra: str) -> Prepare:
    """`gradsum profile` with bad arguments; the error must name `named`."""
    return lambda bench: (bench.profile(*extra), named)


def loose_weight_file(bench: Bench) -> tuple[list[str], str]:
    loose = bench.tmp / "elsewhere" / "model.pt"
    loose.parent.mkdir()
    loose.write_bytes((bench.workspace.model / "model.safetensors").read_bytes())
    model, truthset = str(loose), str(bench.workspace.truthset)
    return ["profile", "--model", model, "--truthset", truthset, "--out", str(bench.out)], str(loose)


def empty_config(bench: Bench) -> tuple[list[str], str]:
    config = bench.config("")
    return bench.run(config), str(config)


# -- at run time -----------------------------------------------------------------------------------------


def nan_model(bench: Bench) -> tuple[list[str], str]:
    """A model folder GradSUM itself saved, whose weights are NaN: every output is NaN."""
    spec = ModelSpec.from_dict(read_card(bench.workspace.model).spec, "card")
    module = spec.build()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(float("nan"))
    save_model(module, spec, bench.tmp / "nan")
    return _with_model(bench, bench.tmp / "nan", "poisoned"), "models[poisoned]"


def _plain_folder(command: Callable[[Path], list[str]]) -> Prepare:
    """A folder with a file in it that no run wrote, given to a command that reads results folders."""

    def prepare(bench: Bench) -> tuple[list[str], str]:
        folder = bench.tmp / "holiday photos"
        folder.mkdir()
        (folder / "notes.txt").write_text("not a results folder\n")
        return command(folder), str(folder)

    return prepare


def _no_space(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def full_disk_in_shard(bench: Bench) -> tuple[list[str], str]:
    """The disk fills while a finished shard is saved."""

    def write(self: WorkFolder, shard: int, tables: object) -> Path:
        raise _no_space(self.shard_path(shard))

    bench.monkeypatch.setattr(WorkFolder, "write", write)
    return bench.run(), str(work_folder(bench.out) / "shards" / "00000")


def full_disk_in_parquet(bench: Bench) -> tuple[list[str], str]:
    """The disk fills while a shard's parquet table is written, under the shard's temporary name."""

    def write_bytes(path: object, data: bytes) -> Path:
        raise _no_space(path)

    bench.monkeypatch.setattr(importlib.import_module("gradsum.contract"), "atomic_write_bytes", write_bytes)
    return bench.run(), str(work_folder(bench.out) / "shards" / ".00000.")


def full_disk_in_results(bench: Bench) -> tuple[list[str], str]:
    """The disk fills while the results folder is staged, after every shard was saved."""

    def write_tables(staging: Path, *args: object) -> None:
        raise _no_space(staging / "per_image.parquet")

    # the module: `gradsum.pipeline.run` as an attribute is the function the package re-exports
    bench.monkeypatch.setattr(importlib.import_module("gradsum.pipeline.run"), "write_tables", write_tables)
    return bench.run(), str(bench.out.parent / f".{bench.out.name}.")


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it and run on it; `earlier`: an earlier results folder is at `--out`."""

    prepare: Prepare
    earlier: bool = True


CASES: dict[str, Case] = {
    # image and label files (the damaged frame is the first of the split, or one the label probe skips)
    "truncated-image": Case(_damaged_frame(_truncate, _image, 0)),
    "truncated-image-no-earlier": Case(_damaged_frame(_truncate, _image, 0), earlier=False),
    "truncated-label": Case(_damaged_frame(_truncate, _labels, 2)),
    "wrong-size-label": Case(_damaged_frame(_png(np.full((4, 4), 7, np.uint8)), _labels, 7)),
    "unknown-label-ids": Case(_damaged_frame(_png(np.full(SIZE, 40, np.uint8)), _labels, 2)),
    "grey-image": Case(_damaged_frame(_png(np.zeros(SIZE, np.uint8)), _image, 3)),
    "alpha-image": Case(_damaged_frame(_png(np.zeros((*SIZE, 4), np.uint8)), _image, 3)),
    "zero-byte-image": Case(_damaged_frame(lambda p: p.write_bytes(b""), _image, 9)),
    "zero-byte-label": Case(_damaged_frame(lambda p: p.write_bytes(b""), _labels, 0)),
    "missing-vehicle": Case(missing_vehicle),
    "empty-folder": Case(empty_folder),
    "empty-split": Case(empty_cityscapes_split),
    "missing-truthset": Case(_profile("missing truth", "--truthset", "missing truth")),
    # configs and checkpoints
    "spec-wrong-type": Case(spec_wrong_type),
    "config-wrong-type": Case(config_wrong_type),
    "empty-config": Case(empty_config),
    "no-models": Case(_config("models", models=[])),
    "no-methods": Case(_config("methods", methods=[])),
    "pickle-with-code-pt": Case(_pickled("model.pt", as_torch_zip=True)),
    "pickle-with-code-safetensors": Case(_pickled("model.safetensors", as_torch_zip=False)),
    "wrong-shapes": Case(wrong_shapes),
    "card-not-json": Case(_card("{not json")),
    "card-zero-bytes": Case(_card("")),
    "zero-byte-weights": Case(empty_weights),
    "loose-weight-file": Case(loose_weight_file),
    "unknown-method": Case(_config("methods[0].method", methods=[{"method": "gradcm"}])),
    "unknown-method-flag": Case(_profile("'gradcm'", "--method", "gradcm")),
    "unknown-spec": Case(_config("models[new].spec", models=[{"name": "new", "spec": "pilotnett"}])),
    "unknown-model-in-method": Case(
        _config("methods[0].models", methods=[{"method": "gradcam", "models": ["ghost"]}])
    ),
    "unknown-target": Case(_config("targets.steering", targets={"steering": "sideways"})),
    "unknown-check": Case(_config("evaluation.checks[0]", evaluation={"checks": ["causl"]})),
    "unknown-check-options": Case(
        _config("evaluation.options", evaluation={"checks": [], "options": {"sanityy": {"blocks": 2}}})
    ),
    "unknown-normalise-flag": Case(_profile("normalise", "--normalise", "minmaxx")),
    "unknown-resolution-flag": Case(_profile("resolution", "--resolution", "gird")),
    # at run time
    "nan-model": Case(nan_model),
    "nan-model-no-earlier": Case(nan_model, earlier=False),
    "report-plain-folder": Case(_plain_folder(lambda f: ["report", str(f)])),
    "evaluate-plain-folder": Case(_plain_folder(lambda f: ["evaluate", str(f)])),
    "compare-plain-folder": Case(_plain_folder(lambda f: ["compare", str(f)])),
    "full-disk-shard": Case(full_disk_in_shard),
    "full-disk-shard-no-earlier": Case(full_disk_in_shard, earlier=False),
    "full-disk-parquet": Case(full_disk_in_parquet),
    "full-disk-results": Case(full_disk_in_results),
    "full-disk-results-no-earlier": Case(full_disk_in_results, earlier=False),
}


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under `root`, by relative path."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes() for path in root.rglob("*")
    }


def error_line(command: str, stderr: str) -> str:
    """The one error line the CLI printed for `command` (asserting there is exactly one, and no traceback)."""
    assert "Traceback" not in stderr, stderr
    prefix = f"gradsum {command}: error: "
    assert stderr.count(prefix) == 1, stderr
    line = stderr.split(prefix, 1)[1]
    assert line.count("\n") == 1 and line.endswith("\n"), f"not one line: {line!r}"
    return line.strip()


def refused(bench: Bench, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    """Run `case` in `bench` and check the three promises: exit 2, one line naming the culprit, no damage."""
    if case.earlier:
        shutil.copytree(bench.workspace.results, bench.out)
    argv, named = case.prepare(bench)
    before = snapshot(bench.tmp)
    bench.arm()
    capsys.readouterr()
    assert main(argv) == 2
    line = error_line(argv[0], capsys.readouterr().err)
    assert named in line, line
    bench.undo()
    # what a failed run may leave: its work folder (fingerprint and finished shards), to resume from
    resumable = work_folder(bench.out).relative_to(bench.tmp)
    assert _without(snapshot(bench.tmp), resumable) == _without(before, resumable)
    assert not list(bench.tmp.rglob("*.partial")) and not (bench.tmp / MARKER).exists()


def _without(files: dict[str, bytes | None], work: Path) -> dict[str, bytes | None]:
    """`files` but the work folder, what lies in it, and the folders above it (a run may create them)."""
    return {
        path: data
        for path, data in files.items()
        if not (Path(path).is_relative_to(work) or work.is_relative_to(path))
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_damages_nothing(
    workspace: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    refused(Bench(workspace, tmp_path, monkeypatch), CASES[name], capsys)


def _deny(bench: Bench, folder: Path) -> None:
    """Make `folder` unreadable: `chmod 0`, or as root (whom permissions do not stop) the same refusal
    raised by `os.stat` and `os.scandir` for it and what lies under it (loader workers fork and inherit it)."""
    if not IS_ROOT:
        mode = folder.stat().st_mode
        bench.armed.append(lambda: folder.chmod(0))
        bench.restore.append(lambda: folder.chmod(mode))
        return
    stat, scandir = os.stat, os.scandir

    def check(path: Any) -> None:
        if isinstance(path, str | os.PathLike) and Path(os.fsdecode(path)).is_relative_to(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def denied_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        check(path)
        return stat(path, *args, **kwargs)

    def denied_scandir(path: Any = ".") -> Any:
        check(path)
        return scandir(path)

    bench.armed.append(lambda: bench.monkeypatch.setattr(os, "stat", denied_stat))
    bench.armed.append(lambda: bench.monkeypatch.setattr(os, "scandir", denied_scandir))


def unreadable_city(bench: Bench) -> tuple[list[str], str]:
    root = _cityscapes(bench)
    city = root / "leftImg8bit" / "val" / "aachen"
    _deny(bench, city)
    return _cityscapes_run(bench, root), f"{city}: not readable"


def unreadable_images(bench: Bench) -> tuple[list[str], str]:
    root = bench.truthset()
    image = frame_id("test", 0).image(root)
    _deny(bench, image.parent)
    return bench.run(None, "--truthset", str(root)), f"{image}: image file is not readable"


@pytest.mark.parametrize("prepare", [unreadable_city, unreadable_images], ids=["listed", "read-by-a-worker"])
def test_an_unreadable_folder_is_named(
    workspace: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    prepare: Prepare,
) -> None:
    bench = Bench(workspace, tmp_path, monkeypatch)
    try:
        refused(bench, Case(prepare), capsys)
    finally:
        bench.undo()


def test_a_path_with_spaces_and_non_ascii_works_end_to_end(workspace: Workspace, tmp_path: Path) -> None:
    truthset = Path(shutil.copytree(workspace.truthset, tmp_path / ODD / "vérité terrain"))
    model = Path(shutil.copytree(workspace.model, tmp_path / ODD / "modèle à moi"))
    out = tmp_path / ODD / "résultats 1"
    argv = ["profile", "--model", str(model), "--truthset", str(truthset), "--limit", "4", "--out", str(out)]
    assert main(argv) == 0
    profiles = pd.read_csv(out / "profiles.csv")
    assert set(profiles["model"]) == {"modèle à moi"}
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["truthset"]["root"] == str(truthset)
    per_image = pd.read_parquet(out / "per_image.parquet")
    assert per_image["image"].nunique() == 4
