"""Synthetic-set generation speed on one core: scenes per second, render only and render + write.

Wall-clock figures suffer when other processes share the cores, so each figure also comes as scenes
per second of this process's CPU time (what one dedicated core would reach).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradsum.bench import BenchSuite, timeit
from gradsum.truthsets.synthetic import render
from gradsum.truthsets.synthetic.writer import (
    DEFAULT_SIZE,
    SplitPlan,
    frame_id,
    make_folders,
    scene_params,
    write_scene,
)


def _cpu_seconds(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def _run(quick: bool, device: str) -> dict[str, Any]:
    count = 100 if quick else 500
    plan = SplitPlan("train", count, 0, 0.0)
    params = [scene_params(plan, i, DEFAULT_SIZE) for i in range(count)]

    def render_only() -> None:
        for p in params:
            render(p)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folders(root, plan)

        def full() -> None:
            for i in range(count):
                write_scene(root, frame_id(plan.split, i), render(scene_params(plan, i, DEFAULT_SIZE)))

        figures: dict[str, Any] = {
            "scenes": count,
            "size": list(DEFAULT_SIZE),
            "device": "cpu (numpy, one core)",
        }
        for name, fn in (("render", render_only), ("sample_render_write", full)):
            figures[f"{name}_scenes_per_s"] = round(count / timeit(fn, repeats=3), 1)
            figures[f"{name}_scenes_per_cpu_s"] = round(count / _cpu_seconds(fn), 1)
    return figures


SUITE = BenchSuite(
    "generate", "synthetic scenes per second: render only, and sample + render + PNG/JSON write", _run
)
