"""`torchrun` with two CPU processes (gloo): the same profiles as one process, every image once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scale_workspace import Workspace

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is installed with torch")
def test_two_processes_give_the_single_process_profiles(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "two"
    assert TORCHRUN is not None
    command = [
        TORCHRUN,
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "gradsum",
        "run",
        "--config",
        str(workspace.config_file),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1 of 2 joined (gloo)" in done.stderr

    profiles = pd.read_csv(out / "profiles.csv")
    single = pd.read_csv(workspace.reference / "profiles.csv")
    pd.testing.assert_frame_equal(profiles, single, check_exact=False, rtol=0, atol=1e-6)

    per_image = pd.read_parquet(out / "per_image.parquet")
    expected = pd.read_parquet(workspace.reference / "per_image.parquet")
    keys = ["model", "method", "image", "class_id"]
    assert not per_image.duplicated(keys).any()
    assert set(per_image["image"]) == set(expected["image"])
    assert len(per_image) == len(expected)
    manifest = (out / "manifest.json").read_text()
    assert '"processes": 2' in manifest
