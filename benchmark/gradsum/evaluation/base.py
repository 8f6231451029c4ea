"""What every trust check reads and returns, and the registry of checks.

A check is one object with a name, a one-line description and `run(context) -> CheckResult`. The
context holds the models, the images under evaluation and the attribution plan of the run, so a check
never re-reads a config; its result is a set of named tables (written as `<name>.csv`) plus, per
model × method, the figures the trust table shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradsum.models.inputs import model_input
from gradsum.models.loaded import LoadedModel
from gradsum.registry import Registry
from gradsum.truthsets import TruthSet
from gradsum.truthsets.base import Sample, sample_id


@dataclass(frozen=True)
class PlannedMethod:
    """One attribution method as a run configures it for a model (what `attribute` is called with)."""

    label: str
    method: str
    layer: str | None = None
    normalise: str = "minmax"
    options: Mapping[str, Any] = field(default_factory=dict)
    #: post-processing steps on the method's grid (None: the method's default)
    postprocess: tuple[str, ...] | None = None
    #: a null explainer (see `gradsum.evaluation.nulls`): verdicts of real methods are taken against it
    null: bool = False


@dataclass
class EvaluationContext:
    """The images, models and methods under evaluation, and the run's shared settings."""

    truthset: TruthSet
    #: indices into `truthset` of the evaluated images (the same images for every check)
    indices: Sequence[int]
    models: Sequence[LoadedModel]
    #: model name → the methods the run attributes it with (null explainers included by the caller)
    plan: Mapping[str, Sequence[PlannedMethod]]
    #: task → attribution target name
    targets: Mapping[str, str]
    device: str = "cpu"
    seed: int = 0
    batch_size: int = 32
    n_resamples: int = 1000
    resolution: str = "label"
    #: the run's GradSUM per-image rows (per_image.parquet columns), when the run computed them
    per_image: pd.DataFrame | None = None
    #: check name → options (e.g. {"sanity": {"blocks": 3}})
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: results one check computes and another reuses on the same images (e.g. the causal effects)
    cache: dict[str, Any] = field(default_factory=dict)
    #: maps kept for the checks that follow (model, method label, image id) → (H, W), on the CPU
    map_cache_bytes: int = 1 << 30
    _maps: dict[tuple[str, str, str], torch.Tensor] = field(default_factory=dict, repr=False)
    _cached_bytes: int = 0

    def sample_batches(self, size: int | None = None) -> Iterator[tuple[list[str], list[Sample], list[int]]]:
        """(ids, samples, indices) over the evaluated images, each sample read once."""
        step = size or self.batch_size
        for start in range(0, len(self.indices), step):
            chunk = list(self.indices[start : start + step])
            samples = [self.truthset[i] for i in chunk]
            # checks stack a batch's label maps: frames of another size go in a batch of their own
            groups: dict[tuple[int, ...], list[int]] = {}
            for position, sample in enumerate(samples):
                groups.setdefault(sample.labels.shape, []).append(position)
            for positions in groups.values():
                kept = [chunk[p] for p in positions]
                group = [samples[p] for p in positions]
                yield [sample_id(s.meta, i) for s, i in zip(group, kept, strict=True)], group, kept

    def batches(self, size: int | None = None) -> Any:
        """(ids, images uint8 (B,H,W,3) list, labels (B,H,W) uint8 array, indices) over the evaluated images."""
        for ids, samples, chunk in self.sample_batches(size):
            yield ids, [s.image for s in samples], [s.labels for s in samples], chunk

    def model_input(self, model: LoadedModel, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images as `model` takes them (the one input transform of `gradsum.models.inputs`)."""
        return model_input(images, model.img_size, self.device)

    def maps(
        self,
        model: LoadedModel,
        method: PlannedMethod,
        batch: torch.Tensor,
        labels: torch.Tensor,
        ids: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """(B, H, W) maps of `method` at the model's input size; `labels` (B,h,w) feed the class-area prior.

        With the images' `ids`, maps are computed once per image and reused by every later check (up to
        `map_cache_bytes`): the checks of one evaluation read the same images with the same methods.
        """
        keys = [(model.name, method.label, image) for image in ids] if ids is not None else None
        if keys is not None and all(key in self._maps for key in keys):
            return torch.stack([self._maps[key] for key in keys]).to(batch.device)
        maps = planned_maps(model, method, batch, labels, self.targets.get(model.task))
        if ids is not None:
            self.remember(model.name, method.label, ids, maps)
        return maps

    def remember(self, model: str, label: str, ids: Sequence[str], maps: torch.Tensor) -> None:
        """Keep maps computed elsewhere (the pipeline's attribution stage) for the checks, as `maps` would."""
        size = maps[0].numel() * 4
        for image, image_map in zip(ids, maps.detach().float().cpu(), strict=True):
            if (model, label, image) in self._maps or self._cached_bytes + size > self.map_cache_bytes:
                continue
            self._maps[(model, label, image)] = image_map
            self._cached_bytes += size


def planned_maps(
    model: LoadedModel,
    method: PlannedMethod,
    batch: torch.Tensor,
    labels: torch.Tensor,
    target: str | None,
    module: nn.Module | None = None,
) -> torch.Tensor:
    """Maps of one planned method on `module` (default: the model's own), null explainers included."""
    from gradsum.attribution import attribute
    from gradsum.attribution.normalise import normalise
    from gradsum.evaluation.nulls import CLASS_AREA, class_area_maps

    size = (int(batch.shape[-2]), int(batch.shape[-1]))
    if method.method == CLASS_AREA:
        return normalise(class_area_maps(labels.to(batch.device), size), method.normalise)
    result = attribute(
        module if module is not None else model.module,
        batch,
        method.method,
        target=target,
        task=model.task,
        layer=method.layer,
        normalise=method.normalise,
        postprocess=method.postprocess,
        **dict(method.options),
    )
    return result.maps


@dataclass(frozen=True)
class Criterion:
    """One figure of a check's summary that decides verdicts.

    The summary holds `column`, `column_ci_low` and `column_ci_high` per model × method. A method passes
    the criterion when its interval lies beyond `threshold` (if any) and beyond every null explainer's
    interval on the same model, in the better direction.
    """

    check: str
    column: str
    higher_is_better: bool = True
    threshold: float | None = None
    text: str = ""


@dataclass
class CheckResult:
    """A check's tables (name → frame, written as `<name>.csv`) and its per model × method summary.

        `summary` has one row per model × method with the columns the check adds to the trust table
        (`model`, `method`, then check-specific columns); `criteria` name the columns that decide verdicts,
    which `gradsum.evaluation.verdicts` takes against the null explainers.
    """

    tables: dict[str, pd.DataFrame]
    summary: pd.DataFrame
    criteria: list[Criterion] = field(default_factory=list)
    #: name → matplotlib Figure, saved under plots/ and shown in the report
    figures: dict[str, Any] = field(default_factory=dict)


class Check(Protocol):
    """One trust check: `name`, `description`, and `run(context)`."""

    name: str
    description: str

    def run(self, context: EvaluationContext) -> CheckResult: ...


CHECKS: Registry[Callable[[], Check]] = Registry("trust check")


def unavailable(name: str, truthset: TruthSet) -> str | None:
    """Why check `name` cannot run on `truthset` (None: it can).

    A check that needs something only some truth sets have (the shortcut check: a renderer that repaints
    the sky tint, and the tint splits) says so in an optional `unavailable(truthset)` method; the others run
    on any labelled set.
    """
    check = CHECKS.get(name, "check")()
    reason: Callable[[TruthSet], str | None] | None = getattr(check, "unavailable", None)
    return None if reason is None else reason(truthset)
