"""Shards: the attribution stage's unit of work, of saving and of resuming.

The split is cut into shards of `shard_size` consecutive images. Each finished shard is a folder under
the run's work folder (`results/.<name>.work/shards/00003/`), written under a temporary name and renamed
when complete, so a run killed at any moment (SIGKILL included) and started again with the same command
finds every finished shard whole and recomputes only the interrupted one. The work folder also holds the
run's fingerprint; a resume with a different configuration is refused with the fields that changed. The
trust checks that finished are kept there too (`CheckFolder`), so a run killed during its evaluation
resumes after its last finished check.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gradsum.contract import (
    FINGERPRINT,
    FINISHED_CHECKS,
    PARQUET,
    SHARDS,
    TableSchema,
    read_table,
    write_table,
)
from gradsum.dataspec import changed_fields
from gradsum.errors import ResultsError
from gradsum.evaluation.base import CheckResult
from gradsum.fileio import atomic_directory, atomic_write_bytes, atomic_write_json, read_json_object
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import RunConfig
from gradsum.pipeline.distributed import World
from gradsum.pipeline.profiler import FRAMES, ShardProfiler
from gradsum.pipeline.stream import FrameStream
from gradsum.progress import Heartbeat
from gradsum.truthsets import TruthSet
from gradsum.utils import library_versions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardPlan:
    """Which images each shard holds: shard k is images [k·size, min((k+1)·size, count))."""

    count: int
    size: int

    @property
    def shards(self) -> int:
        """How many shards the split makes."""
        return -(-self.count // self.size)

    def images(self, shard: int) -> range:
        """The split indices of `shard`."""
        return range(shard * self.size, min(self.count, (shard + 1) * self.size))


def _shard_table(name: str) -> TableSchema:
    """A table of a shard folder: parquet, columns as the profiler left them (`<name>.parquet`)."""
    return TableSchema(name, files=(f"{name}{PARQUET}",))


def work_folder(results: Path) -> Path:
    """Where a run writing `results` keeps its fingerprint and finished shards until it completes."""
    return results.parent / f".{results.name}.work"


@dataclass(frozen=True)
class WorkFolder:
    """A run's shards on disk, tied to one configuration."""

    root: Path

    def shard_path(self, shard: int) -> Path:
        """The folder of a finished shard."""
        return self.root / SHARDS / f"{shard:05d}"

    def done(self, shard: int) -> bool:
        """True when `shard` was written completely (its folder exists only after the final rename)."""
        return self.shard_path(shard).is_dir()

    def write(self, shard: int, tables: Mapping[str, pd.DataFrame]) -> Path:
        """Write a shard's tables under a temporary name, then rename the folder into place."""
        with atomic_directory(self.shard_path(shard), overwrite=True) as staging:
            for name, table in tables.items():
                write_table(staging, _shard_table(name), table)
        return self.shard_path(shard)

    def finished_checks(self, settings: Mapping[str, Any]) -> CheckFolder:
        """The trust checks this run finished with evaluation `settings`, and where the next ones go."""
        return CheckFolder(self.root / FINISHED_CHECKS, settings)

    def read(self, shard: int) -> dict[str, pd.DataFrame]:
        """A finished shard's tables."""
        folder = self.shard_path(shard)
        tables = {}
        for path in sorted(folder.glob(f"*{PARQUET}")):
            try:
                tables[path.stem] = read_table(folder, _shard_table(path.stem))
            except ResultsError as error:
                raise ResultsError(f"{error}; a finished shard: delete {folder} to recompute it") from error
        return tables

    def remove(self) -> None:
        """Delete the work folder (the run's results are complete)."""
        shutil.rmtree(self.root, ignore_errors=True)


#: A finished check's files in its folder (`checks/<name>/`), and the folder of its finished parts while
#: it runs (`checks/<name>/parts/<part>.pkl`, beside their settings).
CHECK_RESULT = "result.pkl"
CHECK_SETTINGS = "settings.json"
CHECK_PARTS = "parts"
_PICKLE_ERRORS = (pickle.UnpicklingError, AttributeError, ImportError, EOFError, TypeError)


@dataclass(frozen=True)
class CheckFolder:
    """The finished trust checks of a run's work folder, and the finished parts of the check that runs
    (`evaluation.trust.FinishedChecks`).

    A check's folder holds its result (pickled: the run's own files, read back by the run that wrote them,
    with the library versions the work folder's fingerprint pins) and the evaluation settings it was
    computed with; a check of other settings is run again. A part (one model's share of a long check) is
    kept the same way under the check's folder until the check finishes, which replaces the folder.
    """

    root: Path
    settings: Mapping[str, Any]

    def load(self, name: str) -> tuple[CheckResult, float] | None:
        folder = self.root / name
        recorded = self._recorded(folder) if (folder / CHECK_RESULT).is_file() else None
        if recorded is None:
            return None
        result = _unpickled(folder / CHECK_RESULT, "the check runs again")
        if result is None:
            return None
        if not isinstance(result, CheckResult):
            raise ResultsError(f"{folder / CHECK_RESULT}: no check result; delete {folder} to run it again")
        return result, float(recorded["seconds"])

    def save(self, name: str, result: CheckResult, seconds: float) -> None:
        with atomic_directory(self.root / name, overwrite=True) as staging:
            (staging / CHECK_RESULT).write_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
            atomic_write_json(
                staging / CHECK_SETTINGS, {"settings": _as_json(self.settings), "seconds": seconds}
            )

    def load_part(self, check: str, part: str) -> tuple[Any, float] | None:
        folder = self.root / check / CHECK_PARTS
        path = folder / _part_file(part)
        if not path.is_file() or self._recorded(folder) is None:
            return None
        kept = _unpickled(path, "the part runs again")
        if kept is None:
            return None
        value, seconds = kept
        return value, float(seconds)

    def save_part(self, check: str, part: str, value: Any, seconds: float) -> None:
        folder = self.root / check / CHECK_PARTS
        if folder.is_dir() and self._recorded(folder) is None:
            shutil.rmtree(folder)  # parts of other settings: none of them is kept
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / CHECK_SETTINGS).is_file():
            atomic_write_json(folder / CHECK_SETTINGS, {"settings": _as_json(self.settings)})
        atomic_write_bytes(folder / _part_file(part), pickle.dumps((value, seconds), pickle.HIGHEST_PROTOCOL))

    def _recorded(self, folder: Path) -> dict[str, Any] | None:
        """`folder`'s settings file when it records these settings; else None (logged when it records
        others)."""
        if not (folder / CHECK_SETTINGS).is_file():
            return None
        recorded = read_json_object(folder / CHECK_SETTINGS, ResultsError, "finished check settings")
        if recorded.get("settings") != _as_json(self.settings):
            log.info("%s: computed with other evaluation settings; it runs again", folder)
            return None
        return recorded


def _part_file(part: str) -> str:
    """A part's file name (a part is named by its model, which may hold any character)."""
    return f"{quote(part, safe='')}.pkl"


def _unpickled(path: Path, then: str) -> Any | None:
    """`path` unpickled, or None (with a warning saying what happens `then`) where it no longer unpickles."""
    try:
        return pickle.loads(path.read_bytes())
    except _PICKLE_ERRORS as error:
        # written by another version of the code (a class moved or changed): computing it again is safe
        log.warning("%s: unreadable (%s); %s", path, error, then)
        return None


def _as_json(value: Mapping[str, Any]) -> Any:
    """`value` as it reads back from JSON (tuples as lists, paths and other objects as text)."""
    return json.loads(json.dumps(value, default=str))


def open_work_folder(results: Path, fingerprint: Mapping[str, Any], fresh: bool = False) -> WorkFolder:
    """The work folder of a run writing `results`, resumed when it belongs to the same configuration.

    Finished shards of an interrupted run are kept; a work folder from another configuration is refused
    (naming what changed) unless `fresh`, which discards it.
    """
    work = WorkFolder(work_folder(results))
    recorded_path = work.root / FINGERPRINT
    if fresh and work.root.exists():
        log.warning("%s: discarding an interrupted run's work (fresh start asked for)", work.root)
        work.remove()
    if recorded_path.is_file():
        recorded = read_json_object(recorded_path, ResultsError, "run fingerprint")
        wanted = _as_json(fingerprint)
        if changed := changed_fields(recorded, wanted):
            raise ResultsError(
                f"{work.root}: an interrupted run with another configuration is waiting to be resumed "
                f"(changed: {', '.join(changed)}); run the same configuration again to resume it, or "
                "start afresh with --fresh (API: fresh=True), which discards its finished shards"
            )
        finished = sum(1 for _ in (work.root / SHARDS).glob("[0-9]*")) if (work.root / SHARDS).is_dir() else 0
        log.info("%s: resuming an interrupted run (%d finished shard(s) kept)", work.root, finished)
    else:
        atomic_write_json(recorded_path, fingerprint)
    return work


def attribute_shards(
    world: World,
    work: WorkFolder,
    plan: ShardPlan,
    truthset: TruthSet,
    profiler: ShardProfiler,
    progress: bool,
) -> dict[str, float]:
    """Compute and write this rank's unfinished shards; return how the time split (reading, total)."""
    config = profiler.config
    todo = [k for k in range(plan.shards) if world.owns(k) and not work.done(k)]
    skipped = sum(1 for k in range(plan.shards) if world.owns(k)) - len(todo)
    if skipped:
        log.info("%d finished shard(s) kept from an interrupted run", skipped)
    images = sum(len(plan.images(k)) for k in todo)
    stream = FrameStream(truthset, [plan.images(k) for k in todo], config.batch_size, config.workers)
    heartbeat = Heartbeat("attribution", images)
    bar = tqdm(total=images, desc="attribute", unit="image", disable=None if progress else True)
    start = time.perf_counter()
    current: int | None = None
    for frames in stream:
        shard = frames.indices[0] // plan.size
        if shard != current:
            if current is not None:
                work.write(current, profiler.shard_tables())
            current = shard
        profiler.update(frames)
        bar.update(len(frames))
        heartbeat.add(len(frames))
    if current is not None:
        work.write(current, profiler.shard_tables())
    bar.close()
    return {"read": round(stream.read_seconds, 2), "total": round(time.perf_counter() - start, 2)}


def collect_shards(world: World, work: WorkFolder, plan: ShardPlan) -> dict[str, pd.DataFrame] | None:
    """Every shard's tables on rank 0, in shard order (None on the other ranks).

    Each rank reads the shards it owns (from its own disk) and sends them to rank 0; an all-reduced count
    of how often each image was attributed proves the ranks covered the split without gaps or twice.
    """
    mine = {k: work.read(k) for k in range(plan.shards) if world.owns(k)}
    coverage = torch.zeros(plan.count, dtype=torch.int64)
    for tables in mine.values():
        index = torch.tensor(tables[FRAMES]["index"].to_numpy(np.int64))
        coverage.index_add_(0, index, torch.ones_like(index))
    coverage = world.all_reduce_sum(coverage)
    if not bool((coverage == 1).all()):
        missing = (coverage == 0).nonzero().flatten().tolist()[:5]
        twice = (coverage > 1).nonzero().flatten().tolist()[:5]
        raise ResultsError(
            f"{work.root}: shards do not cover the split once (missing {missing}, twice {twice})"
        )
    gathered = world.gather(mine)
    if gathered is None:
        return None
    shards = {k: tables for part in gathered for k, tables in part.items()}
    names = sorted({name for tables in shards.values() for name in tables})
    return {
        name: pd.concat([shards[k][name] for k in sorted(shards) if name in shards[k]], ignore_index=True)
        for name in names
    }


def run_fingerprint(
    config: RunConfig, truthset: TruthSet, models: list[LoadedModel], plan: ShardPlan, device: str
) -> dict[str, object]:
    """What a finished shard depends on: a resume must match it (evaluation and report settings may change)."""
    return {
        "truthset": {"config": asdict(config.truthset), "read": truthset.describe()},
        "models": {
            m.name: {"spec": m.card.get("spec"), "weights": m.card.get("weights_sha256")} for m in models
        },
        "methods": [asdict(m) for m in config.methods],
        "targets": dict(config.targets),
        "normalise": config.normalise,
        "precision": config.precision,
        "resolution": config.resolution,
        "batch_size": config.batch_size,
        "shards": {"count": plan.count, "size": plan.size},
        "seed": config.seed,
        "attention_diagnostics": config.attention_diagnostics,
        "device": torch.device(device).type,
        "versions": library_versions(),
    }
