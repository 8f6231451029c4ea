"""`gradsum bench`: speed and memory figures as ratios measured in one process, written as JSON.

Each suite lives in `gradsum.bench.suites.<name>` and exposes `SUITE`; suites are discovered, so
adding one touches no other file. Benchmarks report; tests never assert wall-clock time.
"""

from __future__ import annotations

import importlib
import pkgutil
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradsum.fileio import atomic_write_bytes
from gradsum.registry import Registry


@dataclass(frozen=True)
class BenchSuite:
    """A named benchmark: `run(quick, device)` returns a JSON-ready dict of figures.

    `figure`, when given, draws those figures as PNG bytes, written beside the JSON (`figure_path`).
    """

    name: str
    description: str
    run: Callable[[bool, str], dict[str, Any]]
    figure: Callable[[dict[str, Any]], bytes] | None = None


def discover_suites() -> Registry[BenchSuite]:
    """All discovered benchmark suites."""
    package = importlib.import_module("gradsum.bench.suites")
    registry: Registry[BenchSuite] = Registry("benchmark suite")
    for info in pkgutil.iter_modules(package.__path__):
        suite = importlib.import_module(f"{package.__name__}.{info.name}").SUITE
        registry.add(suite.name, suite)
    return registry


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import os

        info["cpu_count"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        info["cpu_count"] = None
    return info


def run_suites(names: list[str] | None, quick: bool, device: str) -> dict[str, Any]:
    """Run the named suites (all when None) and return the figures with the machine."""
    registry = discover_suites()
    chosen = names or registry.names()
    results: dict[str, Any] = {"machine": machine(), "device": device, "quick": quick, "suites": {}}
    for name in chosen:
        suite = registry.get(name, "--suite")
        start = time.perf_counter()
        figures = suite.run(quick, device)
        figures["suite_seconds"] = round(time.perf_counter() - start, 3)
        results["suites"][name] = figures
    return results


def figure_path(out: str | Path, suite: str) -> Path:
    """Where suite `suite`'s figure goes beside the JSON `out`: results/bench.json → results/bench.scaling.png."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{suite}.png")


def write_figures(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Draw the figure of every suite in `results` (from `run_suites`) that has one, beside the JSON `out`."""
    registry = discover_suites()
    paths = []
    for name, figures in results["suites"].items():
        draw = registry.get(name, "--suite").figure
        if draw is not None:
            paths.append(atomic_write_bytes(figure_path(out, name), draw(figures)))
    return paths


def timeit(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Fewest seconds of `fn()` over `repeats` runs after `warmup` runs (CUDA-synchronised).

    The minimum, not the median: on a shared machine other load only ever adds time, so the fastest
    run is the best estimate of the work itself, and ratios of two minima compare like with like.
    """
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best
