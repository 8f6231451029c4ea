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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gradsum.aggregation import (
    ClassScores,
    ClassWeights,
    class_scores,
    compare_all,
    per_image_frame,
    prepare_labels,
    profiles,
)
from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS
from gradsum.attribution import AttributionResult, attribute
from gradsum.attribution.normalise import normalise
from gradsum.errors import AttributionError, ResultsError
from gradsum.evaluation import EvaluationContext, ground_truth_table, run_checks
from gradsum.evaluation.attention import AttentionDiagnostics
from gradsum.fileio import atomic_directory
from gradsum.models import model_family
from gradsum.models.inputs import model_input, resize_uint8
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import MethodConfig, RunConfig
from gradsum.pipeline.distributed import World, joined
from gradsum.pipeline.inputs import check_names, ensure_model, ensure_truthset, methods_for, open_configured
from gradsum.pipeline.outputs import manifest, write_tables
from gradsum.pipeline.shards import ShardPlan, WorkFolder, open_work_folder
from gradsum.pipeline.stream import FrameBatch, FrameStream
from gradsum.pipeline.trust import evaluation_context, shuffled_twins, write_trust_tables
from gradsum.progress import Heartbeat
from gradsum.report import OverlayData, write_report
from gradsum.report.results import REPORT
from gradsum.truthsets import TruthSet
from gradsum.truthsets.base import sample_id
from gradsum.utils import default_device, library_versions, seed_everything

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


def _profiled_maps(label: str, result: AttributionResult) -> Iterator[tuple[str, AttributionResult]]:
    """The results to profile for one method: its own, and each named part that differs from it."""
    yield label, result
    for part, sub in result.parts.items():
        # the split technique's main map is one of its combinations; profiling it twice adds nothing
        if not torch.equal(sub.maps, result.maps):
            yield f"{label}/{part}", sub


def _aggregated_map(result: AttributionResult, resolution: str) -> torch.Tensor:
    """The map aggregation reads: the input-resolution map (upsampled further to the labels), or the grid."""
    if resolution == "grid":
        return normalise(result.grid, result.normalisation)
    return result.maps


class LabelBatch:
    """One batch's label maps, with their per-class cell weights prepared once per map grid.

    Every model and method of a batch reads the same labels; when a map is smaller than the labels, the
    weights that pool labels onto its grid are computed once and reused (aggregation then costs one
    small matrix product per map).
    """

    def __init__(self, labels: torch.Tensor, resolution: str) -> None:
        self.labels, self.resolution = labels, resolution
        self._prepared: dict[tuple[int, int], ClassWeights] = {}

    def scores(self, maps: torch.Tensor) -> ClassScores:
        """GradSUM scores of `maps` (B, h, w) against these labels."""
        grid = (int(maps.shape[-2]), int(maps.shape[-1]))
        if grid == tuple(self.labels.shape[-2:]):
            return class_scores(maps, self.labels, resolution=self.resolution)
        if grid not in self._prepared:
            self._prepared[grid] = prepare_labels(self.labels, grid, resolution=self.resolution)
        return class_scores(maps, self._prepared[grid])


def _attribute(
    model: LoadedModel, method: MethodConfig, batch: torch.Tensor, config: RunConfig, ids: list[str]
) -> AttributionResult:
    try:
        return attribute(
            model.module,
            batch,
            method.method,
            target=config.targets.get(model.task),
            task=model.task,
            layer=method.layer,
            normalise=method.normalise or config.normalise,
            **method.options,
        )
    except AttributionError as error:
        # the method names itself; which of the run's models failed is what a reader needs next
        shown = ", ".join(ids[:4]) + (", ..." if len(ids) > 4 else "")
        raise AttributionError(f"models[{model.name}] on a batch of {shown}: {error}") from error


def _frames_at(
    images: list[np.ndarray], labels: list[np.ndarray], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Frames and label maps at one display size (bilinear for images, nearest for labels)."""
    shown_images, shown_labels = [], []
    for image, label in zip(images, labels, strict=True):
        if label.shape != size:
            resized = resize_uint8(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(), size)
            image = resized[0].permute(1, 2, 0).numpy()
            nearest = F.interpolate(torch.from_numpy(label)[None, None].float(), size=size, mode="nearest")
            label = nearest[0, 0].to(torch.uint8).numpy()
        shown_images.append(image)
        shown_labels.append(label)
    return np.stack(shown_images), np.stack(shown_labels)


def overlay_data(
    config: RunConfig, truthset: TruthSet, models: list[LoadedModel], count: int, device: str
) -> OverlayData | None:
    """The first few frames of the split and every profiled map drawn on them, for the report's grid.

    Computed apart from the streamed stage (a few images): a resumed or distributed run draws the same.
    """
    samples = [truthset[i] for i in range(min(config.overlays, count))]
    if not samples:
        return None
    size = (int(samples[0].labels.shape[0]), int(samples[0].labels.shape[1]))
    ids = [sample_id(s.meta, i) for i, s in enumerate(samples)]
    images, labels = _frames_at([s.image for s in samples], [s.labels for s in samples], size)
    maps: dict[str, np.ndarray] = {}
    for model in models:
        batch = model_input([s.image for s in samples], model.img_size, device)
        for method in methods_for(model, config.methods):
            for label, part in _profiled_maps(method.name, _attribute(model, method, batch, config, ids)):
                shown = F.interpolate(part.maps[:, None], size=size, mode="bilinear")
                maps[f"{model.name} · {label}"] = shown[:, 0].cpu().numpy()
    return OverlayData(images=images, labels=labels, maps=maps)


@dataclass
class ShardProfiler:
    """The attribution and aggregation of one shard at a time: every model and method on every batch.

    It holds one shard's per-image rows (and the ViTs' attention diagnostics) until the shard is written;
    maps never outlive their batch, so memory does not grow with the split.
    """

    config: RunConfig
    models: list[LoadedModel]
    device: str
    #: the trust checks' context: maps of its images are handed over so that no check recomputes them
    evaluation: EvaluationContext | None = None
    frames: list[pd.DataFrame] = field(default_factory=list)
    sizes: list[dict[str, object]] = field(default_factory=list)
    diagnostics: dict[str, AttentionDiagnostics] = field(init=False)

    def __post_init__(self) -> None:
        self.diagnostics = {
            m.name: AttentionDiagnostics(m.name, self.config.normalise)
            for m in self.models
            if self.config.attention_diagnostics and model_family(m.module) != "cnn"
        }
        self.plan = {m.name: methods_for(m, self.config.methods) for m in self.models}

    def update(self, frames: FrameBatch) -> None:
        """Attribute one batch with every model and method and aggregate the maps per label size."""
        config = self.config
        groups = [
            (positions, LabelBatch(torch.from_numpy(labels).to(self.device), config.resolution))
            for positions, labels in frames.by_size()
        ]
        evaluated = 0 if self.evaluation is None else len(self.evaluation.indices)
        remembered = [p for p, index in enumerate(frames.indices) if index < evaluated]
        self.sizes += [
            {"index": i, "image": image, "height": int(labels.shape[0]), "width": int(labels.shape[1])}
            for i, image, labels in zip(frames.indices, frames.ids, frames.labels, strict=True)
        ]
        for model in self.models:
            batch = model_input(frames.images, model.img_size, self.device)
            for method in self.plan[model.name]:
                result = _attribute(model, method, batch, config, frames.ids)
                if remembered and self.evaluation is not None:
                    self.evaluation.remember(
                        model.name, method.name, [frames.ids[p] for p in remembered], result.maps[remembered]
                    )
                for label, part in _profiled_maps(method.name, result):
                    aggregated = _aggregated_map(part, config.resolution)
                    for positions, label_batch in groups:
                        scores = label_batch.scores(aggregated[positions])
                        ids = [frames.ids[p] for p in positions]
                        self.frames.append(per_image_frame(scores, ids, model.name, label))
            if model.name in self.diagnostics:
                for positions, label_batch in groups:
                    self.diagnostics[model.name].update(
                        model.module,
                        batch[positions],
                        label_batch.labels,
                        [frames.ids[p] for p in positions],
                        config.resolution,
                    )

    def shard_tables(self) -> dict[str, pd.DataFrame]:
        """The finished shard's tables (per-image rows, frame sizes, attention diagnostics), and reset."""
        tables = {
            PER_IMAGE: pd.concat(self.frames, ignore_index=True)
            if self.frames
            else pd.DataFrame(columns=list(PER_IMAGE_COLUMNS)),
            FRAMES: pd.DataFrame(self.sizes, columns=list(FRAME_COLUMNS)),
        }
        for diagnostics in self.diagnostics.values():
            for name, table in diagnostics.shard_tables().items():
                tables[name] = (
                    pd.concat([tables[name], table], ignore_index=True) if name in tables else table
                )
        self.frames, self.sizes = [], []
        return tables


#: Shard tables: per-image GradSUM rows, and each frame's index, id and label size.
PER_IMAGE = "per_image"
FRAMES = "frames"
FRAME_COLUMNS = ("index", "image", "height", "width")


def _fingerprint(
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
        "resolution": config.resolution,
        "batch_size": config.batch_size,
        "shards": {"count": plan.count, "size": plan.size},
        "seed": config.seed,
        "attention_diagnostics": config.attention_diagnostics,
        "device": torch.device(device).type,
        "versions": library_versions(),
    }


def _attribute_shards(
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
            # per shard: a shard's numbers do not depend on which process computes it, or after what
            seed_everything(config.seed + shard)
            current = shard
        profiler.update(frames)
        bar.update(len(frames))
        heartbeat.add(len(frames))
    if current is not None:
        work.write(current, profiler.shard_tables())
    bar.close()
    return {"read": round(stream.read_seconds, 2), "total": round(time.perf_counter() - start, 2)}


def _collect(world: World, work: WorkFolder, plan: ShardPlan) -> dict[str, pd.DataFrame] | None:
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


def run(
    config: RunConfig, *, out: str | Path | None = None, progress: bool = False, fresh: bool = False
) -> Path:
    """Run the whole pipeline for `config` and return the results folder (`progress`: show bars).

    Under `torchrun` the ranks share the attribution stage and rank 0 writes the results. An interrupted
    run started again with the same config resumes from its finished shards; `fresh` discards them.
    """
    check_names(config)
    device = config.device or default_device()
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

    plan = ShardPlan(count, config.shard_size)
    fingerprint = _fingerprint(config, truthset, models, plan, device)
    work = _leader_first(
        world,
        lambda: open_work_folder(target_dir, fingerprint, fresh=fresh and world.leader, clean=world.leader),
    )
    evaluation = evaluation_context(config, truthset, models, device, count, twins) if checks else None
    profiler = ShardProfiler(config, models, device, evaluation)
    with stage("attribution and aggregation"):
        seconds = _attribute_shards(world, work, plan, truthset, profiler, progress)
        tables = _collect(world, work, plan)
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

    trust = None
    if evaluation is not None:
        with stage("evaluation"):
            trust = run_checks(evaluation, config.evaluation.checks)

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
        )
        recorded = manifest(config, truthset, models, started, stage.timings, device) | {
            "shards": {"size": plan.size, "count": plan.shards, "processes": world.size},
            "frame_sizes": _frame_sizes(tables[FRAMES], models),
            "attribution_seconds": seconds,
        }
        if trust is not None:
            write_trust_tables(staging, trust)
            recorded |= {"trust_tables": sorted(trust.tables()), "evaluation_seconds": trust.seconds}
        write_report(staging, overlays=overlays, manifest=recorded)
    work.remove()
    log.info("report: %s", target_dir / REPORT)
    return target_dir


def _frame_sizes(frames: pd.DataFrame, models: list[LoadedModel]) -> dict[str, object]:
    """The split's frame sizes, and for each model whether (and how) they were resized to its input."""
    sizes = frames.groupby(["height", "width"]).size().sort_index()
    seen = [{"height": int(h), "width": int(w), "frames": int(n)} for (h, w), n in sizes.items()]
    return {
        "frames": seen,
        "resized": {
            m.name: [
                f"{s['height']}×{s['width']} → {m.img_size[0]}×{m.img_size[1]}"
                for s in seen
                if (s["height"], s["width"]) != m.img_size
            ]
            for m in models
        },
    }


def _leader_first(world: World, make: Callable[[], T]) -> T:
    """`make()` on rank 0 first, then on the other ranks (which find what rank 0 made on disk)."""
    if world.leader:
        value = make()
        world.barrier()
        return value
    world.barrier()
    return make()
