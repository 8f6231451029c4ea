"""The main job: truth set → models → attribution → aggregation → evaluation → report.

`run(config)` reuses what exists (truth set, checkpoints), streams the split in batches (each batch is
decoded once and attributed by every model and method), and writes one results folder atomically, its
manifest last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from gradsum.aggregation import (
    RESOLUTIONS,
    ClassScores,
    ClassWeights,
    class_scores,
    compare_all,
    per_image_frame,
    prepare_labels,
    profiles,
)
from gradsum.attribution import METHODS, AttributionResult, attribute
from gradsum.attribution.normalise import NORMALISERS, normalise
from gradsum.attribution.targets import TARGETS
from gradsum.dataspec import changed_fields
from gradsum.errors import SpecError, TruthSetError
from gradsum.evaluation import ground_truth_table
from gradsum.evaluation.attention import AttentionDiagnostics
from gradsum.fileio import atomic_directory, atomic_write_json, read_json_object
from gradsum.models import ModelSpec, load_model, load_spec, model_family, train_model
from gradsum.models.inputs import model_input
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import GenerateConfig, MethodConfig, ModelConfig, RunConfig
from gradsum.report import OverlayData, write_report
from gradsum.truthsets import TruthSet, open_truthset
from gradsum.truthsets.base import sample_id
from gradsum.utils import default_device, library_versions, seed_everything

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


def warn_if_rendered_otherwise(root: Path, settings: GenerateConfig) -> None:
    """Log a warning when the synthetic set at `root` was rendered with settings other than `settings`.

    The set is still used: re-rendering would replace files a user may rely on, and the warning says how.
    """
    try:
        rendered = read_json_object(root / "manifest.json", TruthSetError).get("parameters")
    except TruthSetError:
        return  # not a synthetic set, or a broken one the reader reports
    if not isinstance(rendered, dict):
        return
    wanted = {
        "count": settings.count,
        "seed": settings.seed,
        "size": settings.size,
        "shortcut": settings.shortcut,
    }
    if changed := changed_fields({key: rendered.get(key) for key in wanted}, wanted):
        differences = ", ".join(f"{key} {rendered.get(key)} (config: {wanted[key]})" for key in changed)
        log.warning(
            "%s was rendered with %s; it is used as it is (remove it to render truthset.generate's set)",
            root,
            differences,
        )


def ensure_truthset(config: RunConfig) -> Path:
    """The truth set's folder, rendering the synthetic set first when it is missing and configured."""
    root = Path(config.truthset.path)
    settings = config.truthset.generate
    if root.exists():
        if settings is not None:
            warn_if_rendered_otherwise(root, settings)
        return root
    if settings is None:
        raise SpecError(f"truthset.path: {root} does not exist and the config has no truthset.generate block")
    from gradsum.truthsets.synthetic import generate

    log.info("rendering the synthetic truth set into %s (%d scenes)", root, settings.count)
    return Path(
        generate(
            root,
            count=settings.count,
            seed=settings.seed,
            size=settings.size,
            shortcut=settings.shortcut,
            workers=os.cpu_count() or 1,  # the bytes do not depend on the worker count
        )
    )


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def ensure_model(
    entry: ModelConfig, config: RunConfig, truthset_root: Path, device: str, progress: bool = False
) -> LoadedModel:
    """Load a model's checkpoint, training it from its spec first when it is missing."""
    folder = Path(entry.checkpoint or Path(config.models_dir) / entry.name)
    spec = configured_spec(entry)
    if not (folder / "card.json").exists():
        if spec is None:
            raise SpecError(f"models[{entry.name}]: no checkpoint at {folder} and no spec to train one from")
        log.info("training %s (%s, %s) into %s", entry.name, spec.architecture, spec.task, folder)
        train_model(spec, truthset_root, spec.task, folder, device=device, progress=progress)
    module, card = load_model(folder, device=device)
    changed = [] if spec is None else changed_fields(card.spec, spec.to_dict())
    if changed := [name for name in changed if name != "description"]:
        # kept, not retrained: the checkpoint may be the one a user's results rest on
        log.warning(
            "%s was trained from a spec that differs from models[%s] in %s; it is used as it is "
            "(remove the folder to train the configured spec)",
            folder,
            entry.name,
            ", ".join(changed),
        )
    size = card.spec["img_size"]
    return LoadedModel(entry.name, module, card.to_dict(), card.task, (int(size[0]), int(size[1])))


def configured_spec(entry: ModelConfig) -> ModelSpec | None:
    """The spec a model entry names, with its overrides applied; None for a checkpoint without a spec."""
    if entry.spec is None:
        return None
    spec = load_spec(entry.spec)
    if not entry.overrides:
        return spec
    return ModelSpec.from_dict(_merge(spec.to_dict(), entry.overrides), f"models[{entry.name}].overrides")


def methods_for(model: LoadedModel, methods: tuple[MethodConfig, ...]) -> list[MethodConfig]:
    """The configured methods that run on `model` (named explicitly, or applicable to its family)."""
    family = model_family(model.module)
    chosen = []
    for method in methods:
        if method.models is not None:
            if model.name in method.models:
                chosen.append(method)
        elif family in METHODS.get(method.method, "methods[].method").applies_to:
            chosen.append(method)
    return chosen


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


def check_names(config: RunConfig) -> None:
    """Refuse unknown method, target, normalisation and resolution names before any work starts."""
    for i, method in enumerate(config.methods):
        METHODS.get(method.method, f"methods[{i}].method")
        if method.normalise is not None:
            NORMALISERS.get(method.normalise, f"methods[{i}].normalise")
    for task, name in config.targets.items():
        if task not in TARGETS:
            raise SpecError(f"targets: unknown task {task!r}; valid: {', '.join(TARGETS)}")
        TARGETS[task].get(name, f"targets.{task}")
    NORMALISERS.get(config.normalise, "normalise")
    if config.resolution not in RESOLUTIONS:
        raise SpecError(f"resolution: {config.resolution!r} is not one of {', '.join(RESOLUTIONS)}")


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

    frames: list[pd.DataFrame] = []
    overlay_maps: dict[str, list[np.ndarray]] = {}
    overlay_images: list[np.ndarray] = []
    overlay_labels: list[np.ndarray] = []
    diagnostics = {
        m.name: AttentionDiagnostics(m.name, config.normalise)
        for m in models
        if config.attention_diagnostics and model_family(m.module) != "cnn"
    }
    plan = {m.name: methods_for(m, config.methods) for m in models}
    with stage("attribution and aggregation"):
        batches = tqdm(
            _batches(truthset, count, config.batch_size),
            total=-(-count // config.batch_size),
            desc="attribute",
            unit="batch",
            disable=None if progress else True,  # None: a bar on a terminal, none in a redirected log
        )
        for ids, images, labels in batches:
            label_tensor = torch.from_numpy(labels.astype(np.int64)).to(device)
            label_batch = LabelBatch(label_tensor, config.resolution)
            keep = max(0, config.overlays - len(overlay_images))
            if keep:
                overlay_images.extend(images[:keep])
                overlay_labels.extend(labels[:keep])
            for model in models:
                batch = model_input(images, model.img_size, device)
                target = config.targets.get(model.task)
                for method in plan[model.name]:
                    result = attribute(
                        model.module,
                        batch,
                        method.method,
                        target=target,
                        task=model.task,
                        layer=method.layer,
                        normalise=method.normalise or config.normalise,
                        **method.options,
                    )
                    for label, part in _profiled_maps(method.name, result):
                        maps = _aggregated_map(part, config.resolution)
                        scores = label_batch.scores(maps)
                        frames.append(per_image_frame(scores, ids, model.name, label))
                        if keep:
                            shown = F.interpolate(
                                part.maps[:keep, None], size=labels.shape[-2:], mode="bilinear"
                            )
                            overlay_maps.setdefault(f"{model.name} · {label}", []).extend(
                                shown[:, 0].cpu().numpy()
                            )
                if model.name in diagnostics:
                    diagnostics[model.name].update(model.module, batch, label_tensor, ids, config.resolution)

    with stage("profiles and comparisons"):
        per_image = pd.concat(frames, ignore_index=True)
        profile_table = profiles(per_image, n_resamples=config.bootstrap_resamples, seed=config.seed)
        combos = per_image[["model", "method"]].drop_duplicates()
        comparisons = compare_all(per_image) if len(combos) > 1 else None
        tasks = {m.name: m.task for m in models}
        truth = ground_truth_table(profile_table, tasks)

    with stage("report"), atomic_directory(target_dir, overwrite=True) as staging:
        written = _write_tables(staging, per_image, profile_table, comparisons, truth, diagnostics, models)
        overlays = (
            OverlayData(
                images=np.stack(overlay_images),
                labels=np.stack(overlay_labels),
                maps={k: np.stack(v) for k, v in overlay_maps.items()},
            )
            if overlay_images
            else None
        )
        write_report(
            staging, overlays=overlays, manifest=_manifest(config, truthset, models, started, stage, device)
        )
        log.debug("wrote %s", written)
    log.info("report: %s", target_dir / "report.html")
    return target_dir


def _write_tables(
    folder: Path,
    per_image: pd.DataFrame,
    profile_table: pd.DataFrame,
    comparisons: pd.DataFrame | None,
    truth: pd.DataFrame,
    diagnostics: dict[str, AttentionDiagnostics],
    models: list[LoadedModel],
) -> list[Path]:
    written = [folder / "per_image.parquet", folder / "profiles.csv", folder / "ground_truth.csv"]
    per_image.to_parquet(written[0], index=False)
    profile_table.to_csv(written[1], index=False)
    truth.to_csv(written[2], index=False)
    if comparisons is not None:
        written.append(folder / "comparisons.csv")
        comparisons.to_csv(written[-1], index=False)
    entropy = [d.entropy_table() for d in diagnostics.values() if d.batches]
    if entropy:
        written += [folder / "attention.csv", folder / "attention_profiles.csv"]
        pd.concat(entropy, ignore_index=True).to_csv(written[-2], index=False)
        pd.concat([d.profile_table() for d in diagnostics.values() if d.batches], ignore_index=True).to_csv(
            written[-1], index=False
        )
    for model in models:
        written.append(folder / "cards" / f"{model.name}.json")
        atomic_write_json(written[-1], model.card)
    return written


def _manifest(
    config: RunConfig,
    truthset: TruthSet,
    models: list[LoadedModel],
    started: datetime,
    stage: Stage,
    device: str,
) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "config": asdict(config),
        "truthset": truthset.describe(),
        "models": {m.name: m.card for m in models},
        "families": {m.name: model_family(m.module) for m in models},
        "methods": [asdict(m) for m in config.methods],
        "normalisation": config.normalise,
        "resolution": config.resolution,
        "targets": dict(config.targets),
        "versions": library_versions(),
        "seeds": {"run": config.seed, "bootstrap": config.seed},
        "device": device,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "stage_seconds": stage.timings,
    }
