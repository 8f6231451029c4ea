"""The main job: truth set → models → attribution → aggregation → evaluation → report.

`run(config)` reuses what exists (truth set, checkpoints), streams the split in batches (each batch is
decoded once and attributed by every model and method), and writes one results folder atomically, its
manifest last.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

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
from gradsum.attribution import AttributionResult, attribute
from gradsum.attribution.normalise import normalise
from gradsum.errors import SpecError
from gradsum.evaluation import EvaluationContext, ground_truth_table, run_checks
from gradsum.evaluation.attention import AttentionDiagnostics
from gradsum.fileio import atomic_directory
from gradsum.models import model_family
from gradsum.models.inputs import model_input
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import RunConfig
from gradsum.pipeline.inputs import check_names, ensure_model, ensure_truthset, methods_for
from gradsum.pipeline.outputs import manifest, write_tables
from gradsum.pipeline.trust import evaluation_context, shuffled_twins, write_trust_tables
from gradsum.report import OverlayData, write_report
from gradsum.report.results import REPORT
from gradsum.truthsets import TruthSet, open_truthset
from gradsum.truthsets.base import sample_id
from gradsum.utils import default_device, seed_everything

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


def _batches(
    truthset: TruthSet, count: int, batch_size: int
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    for start in range(0, count, batch_size):
        indices = range(start, min(count, start + batch_size))
        samples = [truthset[i] for i in indices]
        ids = [sample_id(s.meta, i) for s, i in zip(samples, indices, strict=True)]
        yield ids, np.stack([s.image for s in samples]), np.stack([s.labels for s in samples])


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


@dataclass
class Overlays:
    """The first few samples of the split and every map drawn on them, for the report's overlay grid."""

    wanted: int
    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def room(self) -> int:
        """How many samples of the next batch are still kept."""
        return max(0, self.wanted - len(self.images))

    def add_samples(self, images: np.ndarray, labels: np.ndarray, keep: int) -> None:
        """Keep the first `keep` samples of a batch."""
        self.images.extend(images[:keep])
        self.labels.extend(labels[:keep])

    def add_maps(self, name: str, maps: torch.Tensor, keep: int, size: tuple[int, int]) -> None:
        """Keep the first `keep` maps of a batch, upsampled to the label size."""
        shown = F.interpolate(maps[:keep, None], size=size, mode="bilinear")
        self.maps.setdefault(name, []).extend(shown[:, 0].cpu().numpy())

    def data(self) -> OverlayData | None:
        """The report's overlay data, or None when no sample was kept."""
        if not self.images:
            return None
        return OverlayData(
            images=np.stack(self.images),
            labels=np.stack(self.labels),
            maps={k: np.stack(v) for k, v in self.maps.items()},
        )


@dataclass
class Profiler:
    """The attribution and aggregation stage: every model and method over every batch of the split.

    It owns what the stage accumulates: per-image GradSUM rows, the overlay samples and the ViTs'
    attention diagnostics.
    """

    config: RunConfig
    models: list[LoadedModel]
    device: str
    #: the trust checks' context: maps of its images are handed over so that no check recomputes them
    evaluation: EvaluationContext | None = None
    frames: list[pd.DataFrame] = field(default_factory=list)
    seen: int = 0
    overlays: Overlays = field(init=False)
    diagnostics: dict[str, AttentionDiagnostics] = field(init=False)

    def __post_init__(self) -> None:
        self.overlays = Overlays(self.config.overlays)
        self.diagnostics = {
            m.name: AttentionDiagnostics(m.name, self.config.normalise)
            for m in self.models
            if self.config.attention_diagnostics and model_family(m.module) != "cnn"
        }
        self.plan = {m.name: methods_for(m, self.config.methods) for m in self.models}

    def update(self, ids: list[str], images: np.ndarray, labels: np.ndarray) -> None:
        """Attribute one batch with every model and method and aggregate the maps."""
        config = self.config
        label_tensor = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        label_batch = LabelBatch(label_tensor, config.resolution)
        keep = self.overlays.room()
        if keep:
            self.overlays.add_samples(images, labels, keep)
        evaluated = 0 if self.evaluation is None else max(0, len(self.evaluation.indices) - self.seen)
        self.seen += len(ids)
        for model in self.models:
            batch = model_input(images, model.img_size, self.device)
            for method in self.plan[model.name]:
                result = attribute(
                    model.module,
                    batch,
                    method.method,
                    target=config.targets.get(model.task),
                    task=model.task,
                    layer=method.layer,
                    normalise=method.normalise or config.normalise,
                    **method.options,
                )
                if evaluated and self.evaluation is not None:
                    self.evaluation.remember(
                        model.name, method.name, ids[:evaluated], result.maps[:evaluated]
                    )
                for label, part in _profiled_maps(method.name, result):
                    scores = label_batch.scores(_aggregated_map(part, config.resolution))
                    self.frames.append(per_image_frame(scores, ids, model.name, label))
                    if keep:
                        self.overlays.add_maps(f"{model.name} · {label}", part.maps, keep, labels.shape[-2:])
            if model.name in self.diagnostics:
                self.diagnostics[model.name].update(model.module, batch, label_tensor, ids, config.resolution)

    def per_image(self) -> pd.DataFrame:
        """Every per-image row so far."""
        return pd.concat(self.frames, ignore_index=True)


def run(config: RunConfig, *, out: str | Path | None = None, progress: bool = False) -> Path:
    """Run the whole pipeline for `config` and return the results folder (`progress`: show bars)."""
    check_names(config)
    started = datetime.now(UTC)
    stage = Stage()
    device = config.device or default_device()
    seed_everything(config.seed)
    target_dir = Path(out) if out is not None else Path(config.results_dir) / config.name

    with stage("truth set"):
        truthset_root = ensure_truthset(config)
        truthset = open_truthset(truthset_root, config.truthset.split, config.truthset.kind)
        count = len(truthset) if config.truthset.limit is None else min(config.truthset.limit, len(truthset))
        if count == 0:
            raise SpecError(f"truthset: split {config.truthset.split!r} of {truthset_root} is empty")

    with stage("models"):
        models = [ensure_model(entry, config, truthset_root, device, progress) for entry in config.models]
        twins = shuffled_twins(config, truthset_root, device) if config.evaluation.checks else {}

    evaluation = (
        evaluation_context(config, truthset, models, device, count, twins)
        if config.evaluation.checks
        else None
    )
    profiler = Profiler(config, models, device, evaluation)
    with stage("attribution and aggregation"):
        batches = tqdm(
            _batches(truthset, count, config.batch_size),
            total=-(-count // config.batch_size),
            desc="attribute",
            unit="batch",
            disable=None if progress else True,  # None: a bar on a terminal, none in a redirected log
        )
        for ids, images, labels in batches:
            profiler.update(ids, images, labels)

    with stage("profiles and comparisons"):
        per_image = profiler.per_image()
        profile_table = profiles(per_image, n_resamples=config.bootstrap_resamples, seed=config.seed)
        combos = per_image[["model", "method"]].drop_duplicates()
        comparisons = compare_all(per_image) if len(combos) > 1 else None
        truth = ground_truth_table(profile_table, {m.name: m.task for m in models}, truthset.causes)

    trust = None
    if evaluation is not None:
        with stage("evaluation"):
            trust = run_checks(evaluation, config.evaluation.checks)

    with stage("report"), atomic_directory(target_dir, overwrite=True) as staging:
        write_tables(staging, per_image, profile_table, comparisons, truth, profiler.diagnostics, models)
        recorded = manifest(config, truthset, models, started, stage.timings, device)
        if trust is not None:
            write_trust_tables(staging, trust)
            recorded |= {"trust_tables": sorted(trust.tables()), "evaluation_seconds": trust.seconds}
        write_report(staging, overlays=profiler.overlays.data(), manifest=recorded)
    log.info("report: %s", target_dir / REPORT)
    return target_dir
