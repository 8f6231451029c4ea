"""Runs that survive faults: SIGKILL mid-way, a full disk, a changed config; and the same run twice."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from scale_workspace import Workspace

from gradsum.cli import main
from gradsum.errors import ResultsError
from gradsum.pipeline import run
from gradsum.pipeline.shards import SHARDS, WorkFolder, work_folder


def command(workspace: Workspace, out: Path, config: Path | None = None) -> list[str]:
    config = config or workspace.config_file
    return [sys.executable, "-m", "gradsum", "run", "--config", str(config), "--out", str(out)]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def assert_same_tables(results: Path, reference: Path) -> None:
    """Bit for bit: the profiles' CSV bytes, and every per-image value exactly."""
    assert (results / "profiles.csv").read_bytes() == (reference / "profiles.csv").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(results / "per_image.parquet"),
        pd.read_parquet(reference / "per_image.parquet"),
        check_exact=True,
    )


def finished_shards(out: Path) -> int:
    shards = work_folder(out) / SHARDS
    return sum(1 for p in shards.iterdir() if not p.name.startswith(".")) if shards.is_dir() else 0


def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_tables(
    workspace: Workspace, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    process = subprocess.Popen(
        command(workspace, out), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while finished_shards(out) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = finished_shards(out)
    assert 2 <= kept < 10 and not out.exists()

    rerun = subprocess.run(command(workspace, out), env=environment(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{kept} finished shard(s) kept" in rerun.stderr
    assert_same_tables(out, workspace.reference)
    assert not work_folder(out).exists()


def test_the_same_command_gives_identical_tables(workspace: Workspace, tmp_path: Path) -> None:
    results = run(workspace.config(), out=tmp_path / "again")
    assert_same_tables(results, workspace.reference)


def test_a_full_disk_keeps_earlier_results_and_finished_shards(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "full"
    earlier = run(workspace.config(methods=[{"method": "gradcam"}]), out=out)
    before = {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()}
    write = WorkFolder.write

    def fill_up(self: WorkFolder, shard: int, tables: dict[str, pd.DataFrame]) -> Path:
        if shard >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.shard_path(shard)))
        return write(self, shard, tables)

    monkeypatch.setattr(WorkFolder, "write", fill_up)
    with pytest.raises(OSError, match="No space left"):
        run(workspace.config(), out=out)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before
    assert finished_shards(out) == 3

    # the interrupted run waits for its own config: another one is refused, naming what changed
    changed = workspace.root / "changed.yaml"
    changed.write_text(yaml.safe_dump({**workspace.data, "methods": [{"method": "gradcam"}]}))
    with pytest.raises(ResultsError, match="changed: methods"):
        run(workspace.config(methods=[{"method": "gradcam"}]), out=out)
    assert main(["run", "--config", str(changed), "--out", str(out)]) == 2
    assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == before

    run(workspace.config(), out=out)
    assert_same_tables(out, workspace.reference)


def test_fresh_discards_an_interrupted_run(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "fresh"
    work = work_folder(out)
    (work / SHARDS / "00000").mkdir(parents=True)
    (work / "run.json").write_text('{"seed": 99}')
    with pytest.raises(ResultsError, match=r"changed: .*seed"):
        run(workspace.config(), out=out)
    run(workspace.config(), out=out, fresh=True)
    assert_same_tables(out, workspace.reference)


def test_a_partial_results_folder_is_named_when_removed(
    workspace: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "partial"
    left = tmp_path / ".partial.k3j_x0a9.partial"
    left.mkdir()
    (left / "profiles.csv").write_text("half")
    run(workspace.config(), out=out)
    assert not left.exists()
    assert any(str(left) in r.getMessage() and "interrupted" in r.getMessage() for r in caplog.records)
