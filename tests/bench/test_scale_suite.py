"""The scale suite: its building blocks against hand-made oracles, and the quick suite's JSON through the CLI.

Figures that depend on timing are only checked for consistency with one another, never against a clock.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import time
from pathlib import Path

import numpy as np
import pytest

from gradsum.bench.suites import scale
from gradsum.cli import main
from gradsum.truthsets import open_truthset
from gradsum.truthsets.synthetic.writer import frame_id, generate

MIB = 1024


def _allocate_and_hold(mib: int) -> None:
    # fresh anonymous pages from the kernel: a malloc'd block can reuse pages the process already holds
    # (an earlier test's freed memory), which would leave the resident size where it was
    block = mmap.mmap(-1, mib * MIB * MIB)
    block.write(b"\1" * len(block))  # every page touched, so every page is resident
    time.sleep(0.05)  # long enough for the sampler (every 5 ms) to see it
    block.close()


def test_peak_resident_sees_a_freed_allocation() -> None:
    before = scale.status_kib("VmRSS")
    with scale.PeakResident() as peak:
        _allocate_and_hold(64)
    assert peak.kib >= before + 60 * MIB
    assert "VmHWM" in peak.method


def test_peak_resident_samples_when_the_reset_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scale, "CLEAR_REFS", tmp_path / "absent" / "clear_refs")
    before = scale.status_kib("VmRSS")
    with scale.PeakResident() as peak:
        _allocate_and_hold(64)
    assert peak.kib >= before + 60 * MIB
    assert "sampled" in peak.method


def test_repeated_set_reads_each_scene_under_distinct_ids(tmp_path: Path) -> None:
    source = generate(tmp_path / "source", count=4, seed=3, size=(32, 64), splits=(0.25, 0.25, 0.5))
    repeated = scale.repeated_set(source, tmp_path / "repeated", repeats=3)
    original, copies = open_truthset(source, "test"), open_truthset(repeated, "test")
    assert (len(original), len(copies)) == (2, 6)
    ids = [copies[i].meta["frame"] for i in range(6)]
    assert len(set(ids)) == 6
    for index in range(6):
        np.testing.assert_array_equal(copies[index].image, original[index % 2].image)
        np.testing.assert_array_equal(copies[index].labels, original[index % 2].labels)
    # the copies are links, not new files, and the source's manifest keeps its own count
    # scene 1's image: in the source, its linked copy, and repeats 3 and 5
    assert frame_id("test", 5).image(repeated).stat().st_nlink == 4
    assert json.loads((source / "manifest.json").read_text())["splits"]["test"]["count"] == 2


def test_quick_suite_figures_agree_with_its_scale(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    assert main(["bench", "--suite", "scale", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())["suites"]["scale"]
    quick = scale.QUICK
    assert figures["scale"] == json.loads(json.dumps(dataclasses.asdict(quick)))

    memory = figures["memory"]
    runs = memory["runs"]
    expected = {
        "warm_up": quick.warm_up_images,
        "small": quick.memory_scenes,
        "large": quick.memory_scenes * quick.memory_repeats,
    }
    assert {name: run["images"] for name, run in runs.items()} == expected
    for run in runs.values():
        assert run["peak_kib"] > 0 and run["processes"] == 1
        assert run["peak_mib"] == run["peak_kib"] / 1024
    assert memory["ratio"] == runs["large"]["peak_kib"] / runs["small"]["peak_kib"]
    assert memory["pass"] == (memory["ratio"] <= scale.MEMORY_TARGET)

    speed = figures["speed"]
    assert [run["workers"] for run in speed["runs"]] == list(quick.loader_workers)
    for run in speed["runs"]:
        assert run["images"] == quick.speed_images
        seconds = run["attribution_seconds"]
        assert run["read_share"] == seconds["read"] / seconds["total"]
        assert 0 <= seconds["read"] <= seconds["total"]
    decoding = speed["decoding"]
    assert decoding["frames"] == quick.speed_images
    assert all(seconds > 0 for seconds in decoding["seconds_per_frame"].values())

    assert "quick mode" in figures["processes"]["skipped"]
    assert len(figures["load_average"]["start"]) == 3


@pytest.mark.slow  # two torchrun launches, each starting fresh interpreters (about 40 s each on 2 shared cores)
def test_one_and_two_processes_give_the_same_profiles(tmp_path: Path) -> None:
    launches = (scale.Launch(1), scale.Launch(2), scale.Launch(1, 1))
    settings = dataclasses.replace(scale.QUICK, launches=launches, process_images=8)
    truthset = scale.render_test_split(tmp_path / "set", 8, settings.memory_size)
    model = scale.untrained_model(tmp_path / "model")
    figures = scale.processes(settings, truthset, model, tmp_path, "cpu")
    runs = figures["runs"]
    assert [run["processes"] for run in runs] == [1, 2, 1]
    assert [run["images"] for run in runs] == [8, 8, 8]
    cores = figures["cores"]
    assert [run["omp_num_threads"] for run in runs] == [cores, max(1, cores // 2), 1]
    assert figures["speedup"] == runs[1]["images_per_s"] / runs[0]["images_per_s"]
    assert figures["same_rows"]
    assert max(figures["profiles_max_abs_difference"]) <= 1e-6
