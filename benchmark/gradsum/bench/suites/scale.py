"""Scale: peak memory over 200 against 2,000 images, images per second at 1024×2048 labels with the share
spent reading PNGs, and 1 against 2 `torchrun` processes (the figures docs/measured.md's Scale table reports).

Every run is a real `gradsum.pipeline.run` (GradCAM on PilotNet, resolution `label`, trust layer and
overlays off) over the test split of a synthetic set rendered into a temporary folder. The model is an
untrained PilotNet saved as a checkpoint folder: speed and memory do not depend on the weights, and even
one training epoch at these frame sizes would cost more than a figure it cannot change.

Peak memory is measured in this process, one run after another: the kernel's high-water mark (VmHWM) is
reset through /proc/self/clear_refs before each run and read after it, with loader workers off so that
every decoded frame is counted. Rendering 2,000 frames at 512×1024 takes minutes, so the large run reads
a split whose frames are hard links to the small run's rendered frames, each under several frame ids:
every frame is still read and decoded from its own files, and nothing is cached between frames.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from gradsum.bench import BenchSuite, timeit
from gradsum.contract import MANIFEST, PER_IMAGE, PROFILES, read_table
from gradsum.errors import GradSUMError
from gradsum.fileio import atomic_write_json, read_json_object
from gradsum.models import load_spec
from gradsum.models.checkpoints import save_model
from gradsum.pipeline import config_from_dict, run
from gradsum.truthsets import open_truthset
from gradsum.truthsets.layout import SPLITS, FrameId
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate
from gradsum.truthsets.synthetic.writer import frame_id

#: The streamed stage's name in a results manifest's `stage_seconds`.
ATTRIBUTION_STAGE = "attribution and aggregation"
#: The target: the large run's peak within 10% of the small run's.
MEMORY_TARGET = 1.10
#: Writing "5" here resets this process's peak resident memory (VmHWM) on Linux.
CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
#: Seconds between resident-memory samples when the kernel refuses the reset.
SAMPLE_INTERVAL = 0.005
SPLIT = "test"
MODEL = "pilotnet"
METHOD = "gradcam"
#: The columns that name a profile row.
ROW_KEYS = ["model", "method", "class"]
#: Every file of a synthetic frame (the hard-linked large split carries them all).
FRAME_FILES: tuple[Callable[[FrameId, Path], Path], ...] = (
    FrameId.image,
    FrameId.label_ids,
    FrameId.color,
    FrameId.instance_ids,
    FrameId.vehicle,
    FrameId.scene,
)


@dataclass(frozen=True)
class Launch:
    """One `torchrun` launch of the comparison: processes, and OpenMP threads in each."""

    processes: int
    #: OMP_NUM_THREADS of each process (None: the cores shared out, cores // processes)
    threads: int | None = None

    def threads_on(self, cores: int) -> int:
        """The OMP_NUM_THREADS this launch sets on a machine with `cores` cores."""
        return self.threads or max(1, cores // self.processes)


@dataclass(frozen=True)
class Scale:
    """How much the suite measures."""

    #: frame size (H, W) of the memory runs, and the scenes rendered at it (the small run's images)
    memory_size: tuple[int, int]
    memory_scenes: int
    #: the large run reads every rendered scene this many times (under distinct frame ids)
    memory_repeats: int
    #: images of a first run that pays for one-time allocations before any peak is measured
    warm_up_images: int
    #: frame size and images of the speed runs, and the loader worker counts they compare
    speed_size: tuple[int, int]
    speed_images: int
    loader_workers: tuple[int, ...]
    #: `torchrun` launches compared (none: skipped) on the first images of the memory set; the speed-up
    #: is the second's images per second over the first's
    launches: tuple[Launch, ...]
    process_images: int
    batch_size: int
    shard_size: int
    bootstrap_resamples: int
    #: repeats of the decoding reference (minimum taken)
    decode_repeats: int


FULL = Scale(
    memory_size=(512, 1024),
    memory_scenes=200,
    memory_repeats=10,
    warm_up_images=16,
    speed_size=(1024, 2048),
    speed_images=32,
    loader_workers=(0, 1, 2),
    # the third, one process on one thread, tells apart the gain of a second process from that of
    # running each process single-threaded
    launches=(Launch(1), Launch(2), Launch(1, 1)),
    process_images=96,
    batch_size=8,
    shard_size=256,
    bootstrap_resamples=2000,
    decode_repeats=2,
)
QUICK = Scale(
    # at the model's input size: the map grid equals the labels and aggregation takes its shortest path
    memory_size=(96, 192),
    memory_scenes=4,
    memory_repeats=10,
    warm_up_images=2,
    speed_size=(96, 192),
    speed_images=4,
    loader_workers=(0, 1),
    # each torchrun launch starts fresh interpreters (several seconds each on 2 shared cores)
    launches=(),
    process_images=8,
    batch_size=4,
    shard_size=16,
    bootstrap_resamples=50,
    decode_repeats=1,
)


def status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM) of this process."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise GradSUMError(f"{STATUS}: no field {field!r}")


class _Sampler(threading.Thread):
    """Samples this process's resident memory until stopped; `stop()` returns the largest sample (KiB)."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = status_kib("VmRSS")
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.peak = max(self.peak, status_kib("VmRSS"))

    def stop(self) -> int:
        self._stopped.set()
        self.join()
        return max(self.peak, status_kib("VmRSS"))


class PeakResident:
    """This process's peak resident memory (KiB) over a `with` block.

    The kernel's high-water mark, reset at entry through /proc/self/clear_refs; where the reset is refused,
    VmRSS sampled by a thread (which can miss a peak shorter than `SAMPLE_INTERVAL`). `method` says which.
    """

    def __init__(self) -> None:
        self.kib = 0
        self.method = ""
        self._sampler: _Sampler | None = None

    def __enter__(self) -> PeakResident:
        try:
            CLEAR_REFS.write_text("5")
            self.method = "VmHWM, reset through /proc/self/clear_refs before the run"
        except OSError:
            self._sampler = _Sampler(SAMPLE_INTERVAL)
            self._sampler.start()
            self.method = f"VmRSS sampled every {SAMPLE_INTERVAL * 1000:g} ms (clear_refs refused)"
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.kib = status_kib("VmHWM") if self._sampler is None else self._sampler.stop()


def render_test_split(folder: Path, images: int, size: tuple[int, int], seed: int = 0) -> Path:
    """A synthetic set whose test split holds `images` scenes (train and val one each)."""
    count = images + len(SPLITS) - 1
    fractions = tuple((images if name == SPLIT else 1) / count for name in SPLITS)
    return generate(folder, count, seed=seed, size=size, splits=fractions, workers=_cores())


def repeated_set(source: Path, out: Path, repeats: int) -> Path:
    """A copy of the synthetic set at `source` whose test split holds each test scene `repeats` times.

    Copy r of scene i is frame r·n + i, every file a hard link to scene i's: the reader decodes each
    frame from its own file names, at no cost in disk space. Only the manifest's test count is rewritten.
    """
    shutil.copytree(source, out, copy_function=os.link)
    manifest = read_json_object(out / MANIFEST, GradSUMError)
    scenes = int(manifest["splits"][SPLIT]["count"])
    for copy in range(1, repeats):
        for index in range(scenes):
            original, repeat = frame_id(SPLIT, index), frame_id(SPLIT, copy * scenes + index)
            for path_of in FRAME_FILES:
                os.link(path_of(original, out), path_of(repeat, out))
    manifest["splits"][SPLIT]["count"] = scenes * repeats
    atomic_write_json(out / MANIFEST, manifest)  # a rename: the source's manifest (linked) keeps its count
    return out


def untrained_model(folder: Path) -> Path:
    """An untrained PilotNet saved as a checkpoint folder at `folder` (seeded: the same weights every time)."""
    spec = load_spec(MODEL)
    torch.manual_seed(spec.train.seed)
    save_model(spec.build().eval(), spec, folder)
    return folder


def run_config(
    scale: Scale,
    truthset: Path,
    model: Path,
    workspace: Path,
    workers: int,
    device: str,
    limit: int | None = None,
    shard_size: int | None = None,
) -> dict[str, Any]:
    """The suite's run config as plain data (YAML for `torchrun`)."""
    return {
        "name": "scale",
        "device": device,
        "truthset": {"path": str(truthset), "split": SPLIT, "limit": limit},
        "models": [{"name": MODEL, "checkpoint": str(model)}],
        "methods": [{"method": METHOD}],
        "evaluation": {"checks": []},
        "resolution": "label",
        "batch_size": scale.batch_size,
        "shard_size": shard_size or scale.shard_size,
        "workers": workers,
        "overlays": 0,
        "bootstrap_resamples": scale.bootstrap_resamples,
        "models_dir": str(workspace / "models"),
        "results_dir": str(workspace / "results"),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    """`numerator / denominator`, None when the denominator is 0 (seconds are recorded rounded to 0.01)."""
    return numerator / denominator if denominator else None


def run_figures(results: Path) -> dict[str, Any]:
    """What a results folder says about its run: distinct images attributed, processes, seconds."""
    recorded = read_json_object(results / MANIFEST, GradSUMError)
    # the image column alone: a scale run's per_image table is large
    images = int(pd.read_parquet(results / PER_IMAGE.file, columns=["image"])["image"].nunique())
    stage = float(recorded["stage_seconds"][ATTRIBUTION_STAGE])
    return {
        "images": images,
        "processes": int(recorded["shards"]["processes"]),
        "stage_seconds": recorded["stage_seconds"],
        "attribution_seconds": recorded["attribution_seconds"],
        "images_per_s": ratio(images, stage),
    }


def _run_in_process(config: dict[str, Any], out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    results = run(config_from_dict(config, "scale suite"), out=out, fresh=True)
    figures = run_figures(results)
    shutil.rmtree(results)
    return figures | {"wall_seconds": time.perf_counter() - start}


def _measured(config: dict[str, Any], out: Path) -> dict[str, Any]:
    with PeakResident() as peak:
        figures = _run_in_process(config, out)
    return figures | {"peak_kib": peak.kib, "peak_mib": peak.kib / 1024, "peak_method": peak.method}


def memory(scale: Scale, workspace: Path, model: Path, device: str) -> dict[str, Any]:
    """Peak resident memory of a run over the rendered scenes against one over `memory_repeats` times as
    many, after a warm-up run; all in this process, loader workers off."""
    small_set = render_test_split(workspace / "memory_small", scale.memory_scenes, scale.memory_size)
    large_set = repeated_set(small_set, workspace / "memory_large", scale.memory_repeats)
    runs = {}
    for name, truthset, limit in (
        ("warm_up", small_set, scale.warm_up_images),
        ("small", small_set, None),
        ("large", large_set, None),
    ):
        config = run_config(scale, truthset, model, workspace, 0, device, limit)
        runs[name] = _measured(config, workspace / f"results_{name}")
    growth = runs["large"]["peak_kib"] / runs["small"]["peak_kib"]
    return {
        "image_size": list(scale.memory_size),
        "rendered_scenes": scale.memory_scenes,
        "repeats": scale.memory_repeats,
        "large_split": f"each of the {scale.memory_scenes} rendered scenes {scale.memory_repeats} times "
        "under distinct frame ids (hard links); every frame read and decoded from its own PNG files",
        "loader_workers": 0,
        "runs": runs,
        "ratio": growth,
        "target": MEMORY_TARGET,
        "pass": growth <= MEMORY_TARGET,
    }


def _decoders(truthset: SyntheticTruthSet) -> dict[str, Callable[[], object]]:
    """Each way of reading every frame of the split: the PNG decoders alone, and the reader's sample."""
    root, frames = truthset.root, [truthset.frame(i) for i in range(len(truthset))]
    return {
        "pil_image": lambda: [np.asarray(Image.open(f.image(root))) for f in frames],
        "cv2_image": lambda: [cv2.imread(str(f.image(root)), cv2.IMREAD_UNCHANGED) for f in frames],
        "pil_label_ids": lambda: [np.asarray(Image.open(f.label_ids(root))) for f in frames],
        "cv2_label_ids": lambda: [cv2.imread(str(f.label_ids(root)), cv2.IMREAD_UNCHANGED) for f in frames],
        "reader_sample": lambda: [truthset[i] for i in range(len(truthset))],
    }


def decoding(scale: Scale, root: Path) -> dict[str, Any]:
    """Seconds per frame to decode the speed set's PNGs (PIL, OpenCV) and to read a whole sample."""
    truthset = open_truthset(root, SPLIT)
    assert isinstance(truthset, SyntheticTruthSet), f"{root} is a synthetic set"
    seconds = {
        name: timeit(read, repeats=scale.decode_repeats, warmup=0) / len(truthset)
        for name, read in _decoders(truthset).items()
    }
    return {
        "frames": len(truthset),
        "seconds_per_frame": seconds,
        "reader_sample": "the reader's sample: image, labelIds and instanceIds PNGs, two JSON files",
        "timing": f"minimum of {scale.decode_repeats} pass(es) over the frames, one thread",
    }


def speed(scale: Scale, workspace: Path, model: Path, device: str) -> dict[str, Any]:
    """Images per second at the speed size with each loader worker count, and the share spent waiting
    for decoded frames (`attribution_seconds.read / total`)."""
    root = render_test_split(workspace / "speed", scale.speed_images, scale.speed_size)
    runs = []
    for workers in scale.loader_workers:
        config = run_config(scale, root, model, workspace, workers, device)
        figures = _run_in_process(config, workspace / f"results_speed_{workers}")
        seconds = figures["attribution_seconds"]
        runs.append(
            {"workers": workers, **figures, "read_share": ratio(seconds["read"], seconds["total"])}
            | {"images_per_s_streamed": ratio(figures["images"], seconds["total"])}
        )
    return {
        "image_size": list(scale.speed_size),
        "images": scale.speed_images,
        "runs": runs,
        "decoding": decoding(scale, root),
    }


def torchrun_command(processes: int, config: Path, out: Path) -> list[str]:
    """`torchrun --standalone --nproc_per_node=N -m gradsum run ...` with the interpreter's own torchrun."""
    torchrun = Path(sys.executable).parent / "torchrun"
    return [
        str(torchrun),
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "gradsum",
        "run",
        "--config",
        str(config),
        "--out",
        str(out),
    ]


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def processes(scale: Scale, truthset: Path, model: Path, workspace: Path, device: str) -> dict[str, Any]:
    """The same run under `torchrun` for each launch: attribution-stage images per second, and
    how far each run's profiles are from the first's."""
    cores = _cores()
    # shards of an eighth of the images: 1, 2, 4 or 8 processes get equal shares round-robin
    shard_size = max(1, scale.process_images // 8)
    config = run_config(scale, truthset, model, workspace, 0, device, scale.process_images, shard_size)
    config_file = workspace / "processes.yaml"
    config_file.write_text(yaml.safe_dump(config))
    runs, profiles = [], []
    for number, launch in enumerate(scale.launches):
        count, threads = launch.processes, launch.threads_on(cores)
        out = workspace / f"results_launch_{number}"
        start = time.perf_counter()
        done = subprocess.run(
            torchrun_command(count, config_file, out),
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = done.stderr[-2000:]
            raise GradSUMError(f"torchrun --nproc_per_node={count} exited {done.returncode}: {tail}")
        runs.append(
            {"nproc_per_node": count, "omp_num_threads": threads, **run_figures(out)}
            | {"wall_seconds": time.perf_counter() - start}
        )
        profiles.append(read_table(out, PROFILES))
    numeric = profiles[0].select_dtypes("number").columns
    differences = [
        float(np.nanmax(np.abs(other[numeric].to_numpy() - profiles[0][numeric].to_numpy()), initial=0.0))
        for other in profiles
    ]
    return {
        "cores": cores,
        "image_size": list(scale.memory_size),
        "images": scale.process_images,
        "shard_size": shard_size,
        "loader_workers": 0,
        "runs": runs,
        "speedup": ratio(runs[1]["images_per_s"] or 0.0, runs[0]["images_per_s"] or 0.0)
        if len(runs) > 1
        else None,
        "profiles_max_abs_difference": differences,
        "same_rows": all(other[ROW_KEYS].equals(profiles[0][ROW_KEYS]) for other in profiles),
    }


def _why_no_processes(scale: Scale, device: str) -> str:
    """Why the torchrun comparison does not run ("" when it does)."""
    if not scale.launches:
        return "quick mode: each torchrun launch starts fresh interpreters"
    most = max(launch.processes for launch in scale.launches)
    if device.startswith("cuda") and torch.cuda.device_count() < most:
        return f"{most} processes need as many GPUs; {torch.cuda.device_count()} found"
    return ""


def _run(quick: bool, device: str) -> dict[str, Any]:
    scale = QUICK if quick else FULL
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        model = untrained_model(workspace / "model")
        figures: dict[str, Any] = {
            "model": f"{MODEL} (untrained: speed and memory do not depend on the weights)",
            "method": METHOD,
            "resolution": "label",
            "device": device,
            "scale": asdict(scale),
            "trust_layer": "off",
            "memory": memory(scale, workspace, model, device),
            "speed": speed(scale, workspace, model, device),
            "processes": {"skipped": _why_no_processes(scale, device)},
        }
        if not figures["processes"]["skipped"]:
            figures["processes"] = processes(scale, workspace / "memory_small", model, workspace, device)
    figures["load_average"] = {"start": list(load_start), "end": list(os.getloadavg())}
    return figures


SUITE = BenchSuite(
    "scale",
    "peak memory over 200 vs 2,000 images; images/s at 1024×2048 labels and PNG read share; "
    "1 vs 2 torchrun processes",
    _run,
)
