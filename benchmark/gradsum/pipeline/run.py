"""The main job: truth set → models → attribution → aggregation → evaluation → report.

`run(config)` reuses what exists (truth set, checkpoints), streams the split in shards of batches (each
batch decoded once, by loader workers, and attributed by every model and method; each shard saved when
done, so a killed run resumes), and writes one results folder atomically, its manifest last.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from gradsum.aggregation import compare_all, profiles
from gradsum.aggregation.outliers import input_data_table
from gradsum.attribution.precision import resolve_precision
from gradsum.contract import COMPRESSION_TABLES, LABEL_TABLES, PROTOCOL_KEY, REPORT, write_study_tables
from gradsum.evaluation import ground_truth_table, run_checks
from gradsum.fileio import atomic_directory
from gradsum.pipeline.compression import compression_study
from gradsum.pipeline.config import RunConfig
from gradsum.pipeline.distributed import World, joined
from gradsum.pipeline.inputs import check_names, ensure_model, ensure_truthset, open_configured
from gradsum.pipeline.label_quality import label_study
from gradsum.pipeline.outputs import frame_sizes, manifest, write_tables
from gradsum.pipeline.profiler import (
    FRAMES,
    PER_IMAGE,
    VOIDS,
    ShardProfiler,
    outlier_thumbnails,
    overlay_data,
)
from gradsum.pipeline.shards import (
    ShardPlan,
    attribute_shards,
    collect_shards,
    open_work_folder,
    run_fingerprint,
)
from gradsum.pipeline.trust import (
    evaluation_context,
    evaluation_settings,
    seed_twins,
    shuffled_twins,
    write_trust_tables,
)
from gradsum.report import write_report
from gradsum.utils import resolve_device, seed_everything

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """Progress reporting for the CLI: one log line per stage, and its duration for the manifest."""

    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("stage %s ...", name)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 2)
        log.info("stage %s done in %.1f s", name, self.timings[name])


def run(
    config: RunConfig, *, out: str | Path | None = None, progress: bool = False, fresh: bool = False
) -> Path:
    """Run the whole pipeline for `config` and return the results folder (`progress`: show bars).

    Under `torchrun` the ranks share the attribution stage and rank 0 writes the results. An interrupted
    run started again with the same config resumes from its finished shards and checks; `fresh` discards
    them.
    """
    check_names(config)
    device = resolve_device(config.device)
    # a precision the device cannot run (fp16 on a CPU) is refused before any model is trained
    resolve_precision(config.precision, device)
    target_dir = Path(out) if out is not None else Path(config.results_dir) / config.name
    with joined(device) as world:
        return _run(config, target_dir, world, world.device(device), progress, fresh)


def _run(config: RunConfig, target_dir: Path, world: World, device: str, progress: bool, fresh: bool) -> Path:
    started = datetime.now(UTC)
    stage = Stage()
    seed_everything(config.seed)

    with stage("truth set"):
        # rank 0 renders a missing set (and trains missing models) while the others wait
        truthset_root = _leader_first(world, lambda: ensure_truthset(config))
        truthset = open_configured(config, truthset_root)
        count = len(truthset) if config.truthset.limit is None else min(config.truthset.limit, len(truthset))

    with stage("models"):
        models = _leader_first(
            world,
            lambda: [
                ensure_model(entry, config, truthset_root, device, progress, resume=not fresh)
                for entry in config.models
            ],
        )
        checks = config.evaluation.checks if world.leader else ()
        twins = shuffled_twins(config, truthset_root, device) if checks else {}
        seeds = seed_twins(config, truthset_root, device) if checks else {}

    plan = ShardPlan(count, config.shard_size)
    fingerprint = run_fingerprint(config, truthset, models, plan, device)
    work = _leader_first(
        world,
        lambda: open_work_folder(target_dir, fingerprint, fresh=fresh and world.leader),
    )
    evaluation = evaluation_context(config, truthset, models, device, count, twins, seeds) if checks else None
    profiler = ShardProfiler(config, models, device, evaluation)
    with stage("attribution and aggregation"):
        seconds = attribute_shards(world, work, plan, truthset, profiler, progress)
        tables = collect_shards(world, work, plan)
    if tables is None:
        log.info("rank %d done; rank 0 writes the results", world.rank)
        return target_dir

    with stage("profiles and comparisons"):
        per_image = tables[PER_IMAGE]
        profile_table = profiles(per_image, n_resamples=config.bootstrap_resamples, seed=config.seed)
        combos = per_image[["model", "method"]].drop_duplicates()
        comparisons = compare_all(per_image) if len(combos) > 1 else None
        truth = ground_truth_table(profile_table, {m.name: m.task for m in models}, truthset.causes)
        overlays = overlay_data(config, truthset, models, count, device)
        # shards written before void shares were kept have none: their folder gets no input_data table
        input_data = input_data_table(per_image, tables[VOIDS]) if VOIDS in tables else None
        thumbnails = (
            outlier_thumbnails(config, truthset, models, input_data, tables[FRAMES], device)
            if input_data is not None
            else None
        )

    trust = None
    if evaluation is not None:
        with stage("evaluation"):
            finished = work.finished_checks(evaluation_settings(config, twins, seeds))
            trust = run_checks(evaluation, config.evaluation.checks, finished)
    study = None
    if evaluation is not None and config.labels is not None:
        with stage("label quality"):
            study = label_study(config, evaluation, trust, truthset_root, device)
    compressed = None
    if config.compression is not None:
        with stage("compression"):
            compressed = compression_study(config, per_image, models, truthset_root, device)

    with stage("report"), atomic_directory(target_dir, overwrite=True) as staging:
        write_tables(
            staging,
            per_image,
            profile_table,
            comparisons,
            truth,
            tables,
            models,
            config.bootstrap_resamples,
            config.seed,
            input_data,
        )
        recorded = manifest(config, truthset, models, started, stage.timings, device) | {
            "shards": {"size": plan.size, "count": plan.shards, "processes": world.size},
            "frame_sizes": frame_sizes(tables[FRAMES], models),
            "attribution_seconds": seconds,
        }
        if config.protocol:
            recorded[PROTOCOL_KEY] = config.protocol
        if trust is not None:
            write_trust_tables(staging, trust)
            recorded |= {"trust_tables": sorted(trust.tables()), "evaluation_seconds": trust.seconds}
        if study is not None:
            write_study_tables(staging, LABEL_TABLES, study)
            recorded |= {"label_tables": sorted(study)}
        if compressed is not None:
            write_study_tables(staging, COMPRESSION_TABLES, compressed)
            recorded |= {"compression_tables": sorted(compressed)}
        write_report(staging, overlays=overlays, thumbnails=thumbnails, manifest=recorded)
    work.remove()
    log.info("report: %s", target_dir / REPORT)
    return target_dir


def _leader_first(world: World, make: Callable[[], T]) -> T:
    """`make()` on rank 0 first, then on the other ranks (which find what rank 0 made on disk)."""
    if world.leader:
        value = make()
        world.barrier()
        return value
    world.barrier()
    return make()
