"""The attribution stage's per-batch work: every model and method on a batch of frames, scored per class.

`ShardProfiler` holds one shard's rows until the shard is written; `overlay_data` draws the report's
overlay grid from the first frames of the split, `outlier_thumbnails` its outliers' frames and maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from gradsum.aggregation import LabelBatch, per_image_frame
from gradsum.aggregation.outliers import VOID_COLUMNS, void_frame
from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS
from gradsum.attribution import AttributionResult, attribute
from gradsum.attribution.precision import DEFAULT_PRECISION
from gradsum.errors import AttributionError
from gradsum.evaluation import EvaluationContext
from gradsum.evaluation.attention import AttentionDiagnostics
from gradsum.evaluation.planned import PlannedMethod
from gradsum.models import model_family
from gradsum.models.inputs import model_input, resize_uint8
from gradsum.models.loaded import LoadedModel
from gradsum.names import part_label
from gradsum.pipeline.config import RunConfig
from gradsum.pipeline.inputs import methods_for
from gradsum.pipeline.stream import FrameBatch
from gradsum.report import OverlayData
from gradsum.report.input_data import Thumbnail, shown_outliers, thumbnail_size
from gradsum.truthsets import TruthSet
from gradsum.truthsets.base import sample_id

#: Shard tables: per-image GradSUM rows, each map's void shares, and each frame's index, id and label size.
PER_IMAGE = "per_image"
VOIDS = "voids"
FRAMES = "frames"
FRAME_COLUMNS = ("index", "image", "height", "width")


def _profiled_maps(label: str, result: AttributionResult) -> Iterator[tuple[str, AttributionResult]]:
    """The results to profile for one method: its own, and each named part that differs from it."""
    yield label, result
    for part, sub in result.parts.items():
        # the split technique's main map is one of its combinations; profiling it twice adds nothing
        if not torch.equal(sub.maps, result.maps):
            yield part_label(label, part), sub


def _aggregated_map(result: AttributionResult, resolution: str) -> torch.Tensor:
    """The map aggregation reads: the input-resolution map (upsampled further to the labels), or the
    method's grid after the result's own recorded steps (all but the upsampling)."""
    if resolution == "grid":
        return result.on_grid()
    return result.maps


def _attribute(
    model: LoadedModel, method: PlannedMethod, batch: torch.Tensor, config: RunConfig, ids: list[str]
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
            postprocess=method.postprocess,
            precision=config.precision,
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
    Frames are attributed `batch_size` at a time, as in the streamed stage, so a full-resolution ViT run
    at batch size 1 never holds more than one frame's attribution.
    """
    samples = [truthset[i] for i in range(min(config.overlays, count))]
    if not samples:
        return None
    size = (int(samples[0].labels.shape[0]), int(samples[0].labels.shape[1]))
    ids = [sample_id(s.meta, i) for i, s in enumerate(samples)]
    images, labels = _frames_at([s.image for s in samples], [s.labels for s in samples], size)
    shown: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(samples), config.batch_size):
        chunk = slice(start, start + config.batch_size)
        for model in models:
            batch = model_input([s.image for s in samples[chunk]], model.img_size, device)
            for method in methods_for(model, config.methods):
                result = _attribute(model, method, batch, config, ids[chunk])
                for label, part in _profiled_maps(method.name, result):
                    resized = F.interpolate(part.maps[:, None], size=size, mode="bilinear")
                    shown.setdefault(f"{model.name} · {label}", []).append(resized[:, 0].cpu().numpy())
    maps = {name: np.concatenate(parts) for name, parts in shown.items()}
    return OverlayData(images=images, labels=labels, maps=maps)


def outlier_thumbnails(
    config: RunConfig,
    truthset: TruthSet,
    models: list[LoadedModel],
    input_data: pd.DataFrame,
    frames: pd.DataFrame,
    device: str,
) -> list[Thumbnail]:
    """The frame, labels and map of each outlier the report draws (`shown_outliers`), at thumbnail size.

    The maps are computed again for these few images (at most a handful per model), as the overlay grid's
    are: the streamed stage keeps no map beyond its batch. `frames` maps image ids to split indices.
    """
    index = dict(zip(frames["image"].astype(str), frames["index"].astype(int), strict=True))
    by_name = {model.name: model for model in models}
    thumbnails = []
    for row in shown_outliers(input_data).itertuples(index=False):
        model, image, label = by_name[str(row.model)], str(row.image), str(row.method)
        sample = truthset[index[image]]
        size = thumbnail_size(int(sample.labels.shape[0]), int(sample.labels.shape[1]))
        frame, labels = _frames_at([sample.image], [sample.labels], size)
        batch = model_input([sample.image], model.img_size, device)
        planned = [
            m
            for m in methods_for(model, config.methods)
            if label == m.name or label.startswith(part_label(m.name, ""))
        ]
        maps = {
            name: part.maps
            for method in planned
            for name, part in _profiled_maps(method.name, _attribute(model, method, batch, config, [image]))
        }
        heat = F.interpolate(maps[label][:, None].float(), size=size, mode="bilinear")[0, 0].cpu().numpy()
        thumbnails.append(Thumbnail(model.name, label, image, frame[0], labels[0], heat))
    return thumbnails


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
    voids: list[pd.DataFrame] = field(default_factory=list)
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
        # the trust checks compute their own maps in fp32: half-precision maps are not theirs to reuse
        evaluation = self.evaluation if config.precision == DEFAULT_PRECISION else None
        evaluated = 0 if evaluation is None else len(evaluation.indices)
        remembered = [p for p, index in enumerate(frames.indices) if index < evaluated]
        self.sizes += [
            {"index": i, "image": image, "height": int(labels.shape[0]), "width": int(labels.shape[1])}
            for i, image, labels in zip(frames.indices, frames.ids, frames.labels, strict=True)
        ]
        for model in self.models:
            batch = model_input(frames.images, model.img_size, self.device)
            for method in self.plan[model.name]:
                result = _attribute(model, method, batch, config, frames.ids)
                if remembered and evaluation is not None:
                    evaluation.remember(
                        model.name, method.name, [frames.ids[p] for p in remembered], result.maps[remembered]
                    )
                for label, part in _profiled_maps(method.name, result):
                    aggregated = _aggregated_map(part, config.resolution)
                    for positions, label_batch in groups:
                        scores = label_batch.scores(aggregated[positions])
                        ids = [frames.ids[p] for p in positions]
                        self.frames.append(per_image_frame(scores, ids, model.name, label))
                        self.voids.append(void_frame(scores, ids, model.name, label))
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
            VOIDS: pd.concat(self.voids, ignore_index=True)
            if self.voids
            else pd.DataFrame(columns=list(VOID_COLUMNS)),
            FRAMES: pd.DataFrame(self.sizes, columns=list(FRAME_COLUMNS)),
        }
        for diagnostics in self.diagnostics.values():
            for name, table in diagnostics.shard_tables().items():
                tables[name] = (
                    pd.concat([tables[name], table], ignore_index=True) if name in tables else table
                )
        self.frames, self.voids, self.sizes = [], [], []
        return tables
