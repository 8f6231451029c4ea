"""Sanity checks (Adebayo et al. 2018), calibrated: do the maps change more when the model they explain
is destroyed than when it is merely retrained?

Model randomisation re-initialises the model's blocks from the output down (`randomise.cascading`,
cumulative; optionally `randomise.independent`, one block at a time) and compares every planned method's
maps on each randomised copy with its maps on the trained model: `sanity.csv`, the curve Adebayo et al.
draw, one row per model × method × mode × step × similarity with the mean over the images and its
bootstrap CI (`profile_spearman` rows: the Spearman of the two class profiles with its Fisher-z CI).
Step 0 is the trained model compared with itself. Data randomisation (`sanity_data.csv`) compares each
model's maps with those of its twin trained on permuted labels (`gradsum train --shuffle-labels`).

The verdict reads a calibrated figure (Hedström et al. 2023 argue that MPRT's raw similarity needs a
reference), per image and on the Spearman correlation of |map|, the signed Spearman beside it:

- `randomised`: the trained model's map against the map after cascading re-initialisation down to and
  including the layer the method reads (`method_depth`: a CAM's layer; every block for a method that reads
  the input or every block, such as gradients, rollout and LRP);
- `floor`: the maps of two independent re-initialisations of those blocks (seeds s and s + 1) against each
  other: what maps of a destroyed function share by structure alone (upsampling grids, input edges);
- `ceiling`: the trained model's map against its seed twin's (same spec and data, training seed + 1;
  `options.sanity.twins`); without a twin, the model against itself (1), and the verdict is uncalibrated.

The normalised drop mean(ceiling − randomised) / mean(ceiling − floor) passes above 0: the map changed more
when the function was destroyed than when the model was retrained. Rank similarities here take constant
maps as sharing no ordering (`similarity.ordering_similarity`). Maps are compared raw, before
normalisation: min–max rescaling of a signed map reorders |map|. The class profiles (`profile_spearman`)
are those of the normalised maps GradSUM scores.

Model-free planned methods (null explainers, known-answer controls) are left out of every table: their
maps are no function of the weights, so no randomisation can change them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradsum.aggregation import mean_ci
from gradsum.attribution import METHODS
from gradsum.attribution.layers import resolve_layer
from gradsum.attribution.normalise import normalise
from gradsum.errors import GradSUMError, SpecError
from gradsum.evaluation.base import (
    CheckResult,
    Criterion,
    EvaluationContext,
    PlannedMethod,
    TrustCheck,
    check_table,
    planned_maps,
    register_check,
)
from gradsum.evaluation.randomise import cascade_names, depth_to, randomised
from gradsum.evaluation.similarity import (
    PROFILE_SPEARMAN,
    SIMILARITIES,
    image_class_scores,
    normalised_drop,
    ordering_similarity,
    profile_spearman,
)
from gradsum.models import model_family
from gradsum.models.loaded import LoadedModel

logger = logging.getLogger(__name__)

#: blocks on the cascading curve by default: every block (None), the curve Adebayo et al. draw
DEFAULT_BLOCKS: int | None = None

CASCADING, INDEPENDENT, DATA = "cascading", "independent", "data"
#: the block name of step 0, the trained model compared with itself
ORIGINAL = "original"
#: the similarity the verdict reads (the paper's headline measure), and its signed companion
VERDICT_SIMILARITY, SIGNED_SIMILARITY = "spearman_abs", "spearman"
#: the drop's similarities → the suffix of their summary columns
DROP_SIMILARITIES = {VERDICT_SIMILARITY: "", SIGNED_SIMILARITY: "_signed"}
#: the floor's second re-initialisation draws from the run's seed plus this (every block's own seed
#: derives from it, so the two copies share no draw)
FLOOR_SEED_OFFSET = 1
#: where the ceiling comes from: the seed twin, or the model against itself (1.0, uncalibrated)
SEED_TWIN, SELF = "seed twin", "self"
#: methods that name a layer yet also read every layer below it (guided GradCAM multiplies by guided
#: backprop's input gradient): randomised down to the input, like the gradient methods
READS_EVERY_LAYER = frozenset({"guided_gradcam"})
#: the three similarities of a drop, each per image
RANDOMISED, FLOOR, CEILING = "randomised", "floor", "ceiling"

#: `sanity.csv`: one row per model × method × mode × step × similarity, in order.
SANITY_TABLE = check_table(
    "sanity",
    ("model", "method", "mode", "step", "block", "similarity", "value", "ci_low", "ci_high", "n_images"),
    text=("mode", "block", "similarity"),
    ints=("step", "n_images"),
)
#: `sanity_data.csv` (given shuffled-label twins): the same columns, `block` naming the twin.
SANITY_DATA_TABLE = dataclasses.replace(SANITY_TABLE, name="sanity_data", files=())
SANITY_COLUMNS = SANITY_TABLE.names
#: Columns of the check's summary, in order: the drop and its three terms (|map| Spearman, then signed),
#: where the ceiling came from, and the depth the verdict randomises (blocks, the deepest one's name).
SUMMARY_COLUMNS = (
    "model",
    "method",
    *(
        f"sanity_{term}{suffix}"
        for suffix in DROP_SIMILARITIES.values()
        for term in ("drop", RANDOMISED, FLOOR, CEILING)
    ),
    "sanity_ceiling_source",
    "sanity_depth",
    "sanity_depth_block",
    "sanity_images",
)
#: Columns of the check's per-image table: the drop's numerator and denominator (|map| Spearman).
PER_IMAGE_COLUMNS = ("model", "method", "image", "sanity_drop_num", "sanity_drop_den")

SANITY_CRITERION = Criterion(
    "sanity",
    "sanity_drop_num",
    higher_is_better=True,
    threshold=0.0,
    text=(
        "normalised drop of Spearman |map| under cascading randomisation down to the method's layer, "
        "(ceiling − randomised) / (ceiling − floor): seed twin as ceiling, two random draws as floor"
    ),
    name="sanity",
    denominator="sanity_drop_den",
    # 0 is the chance bar itself: a map that changes no more than under retraining
    against_nulls=False,
    # model dependence alone: a pass says the map changes with the weights, not that it finds the causes
    evidence=False,
)


@dataclass(frozen=True)
class SanityOptions:
    """The check's options (run config `evaluation.options.sanity`); a bad value names the option."""

    #: blocks on the cascading curve: an integer ≥ 1, or "all" / None (every block)
    blocks: int | str | None = DEFAULT_BLOCKS
    #: also re-initialise the blocks one at a time (the independent curve)
    independent: bool = False
    #: model name → its twin trained on permuted labels (data randomisation; set by the pipeline)
    shuffled: Mapping[str, LoadedModel] = field(default_factory=dict)
    #: model name → its seed twin, the drop's ceiling (set by the pipeline)
    twins: Mapping[str, LoadedModel] = field(default_factory=dict)
    #: the first N evaluated images (None: all)
    images: int | None = None
    #: names of `SIMILARITIES` on the curve (empty: all)
    similarities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        blocks = self.blocks
        if blocks == "all":
            object.__setattr__(self, "blocks", None)
        elif blocks is not None and (not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 1):
            raise SpecError(
                f"evaluation.options.sanity: field 'blocks' should be an integer ≥ 1 or 'all', got {blocks!r}"
            )
        images = self.images
        if images is not None and images < 1:
            raise SpecError(
                f"evaluation.options.sanity: field 'images' should be an integer ≥ 1 or null (all), got {images!r}"
            )
        for name in self.similarities:
            SIMILARITIES.get(name, "evaluation.options.sanity.similarities")
        object.__setattr__(self, "similarities", self.similarities or tuple(SIMILARITIES.names()))
        object.__setattr__(self, "shuffled", dict(self.shuffled or {}))
        object.__setattr__(self, "twins", dict(self.twins or {}))

    @property
    def curve_blocks(self) -> int | None:
        """The blocks on the cascading curve (None: every block)."""
        return self.blocks if isinstance(self.blocks, int) else None


@dataclass(frozen=True)
class Source:
    """A model the maps are computed on: the trained model (no blocks), a copy with `blocks`
    re-initialised from `seed`, or the seed twin."""

    blocks: tuple[str, ...] = ()
    seed: int = 0
    twin: bool = False


TRAINED = Source()


@dataclass(frozen=True)
class Variant:
    """One point of the curve: maps on `source` against the trained model's (step 0: the model itself)."""

    mode: str
    step: int
    block: str
    source: Source


@dataclass(frozen=True)
class Calibration:
    """One method's drop: the blocks it randomises, the two copies that make the floor, the ceiling's
    source (None: the model against itself)."""

    depth: tuple[str, ...]
    randomised: Source
    second: Source
    ceiling: Source | None


class Sources:
    """The modules behind `Source`s of one model, each randomised copy made once."""

    def __init__(self, model: LoadedModel, twin: LoadedModel | None = None) -> None:
        self.model, self.twin = model, twin
        self._copies: dict[Source, nn.Module] = {}

    def module(self, source: Source) -> nn.Module:
        """The module maps on `source` are computed with."""
        if source.twin:
            if self.twin is None:
                raise GradSUMError(f"model: {self.model.name} has no seed twin")
            return self.twin.module
        if not source.blocks:
            return self.model.module
        if source not in self._copies:
            self._copies[source] = randomised(self.model.module, source.blocks, source.seed)
        return self._copies[source]


def read_layers(model: nn.Module, method: PlannedMethod) -> tuple[str, ...] | None:
    """The module paths of the layer `method` reads, resolved as `attribute` resolves it; None for a
    method that reads the input or every block (gradients, rollout, LRP, guided GradCAM)."""
    cls = METHODS.get(method.method, "method")
    if not cls.uses_layer or method.method in READS_EVERY_LAYER:
        return None
    layer = method.layer if method.layer is not None else cls.default_layer.get(model_family(model))
    return resolve_layer(model, layer).paths


def method_depth(model: nn.Module, method: PlannedMethod) -> tuple[str, ...]:
    """The blocks, output first, that the drop randomises for `method`: down to and including the layer
    it reads, or every block."""
    names = cascade_names(model)
    paths = read_layers(model, method)
    return tuple(names if paths is None else names[: depth_to(model, paths)])


def calibration(model: nn.Module, method: PlannedMethod, seed: int, twin: bool) -> Calibration:
    """The sources of `method`'s drop on `model` with the run's `seed`."""
    depth = method_depth(model, method)
    return Calibration(
        depth,
        Source(depth, seed),
        Source(depth, seed + FLOOR_SEED_OFFSET),
        Source(twin=True) if twin else None,
    )


def _rng(seed: int, *key: object) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("\0".join(map(str, key)).encode())])


def _label_tensor(labels: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(labels).astype(np.int64)).to(device)


class BatchMaps:
    """One batch's raw maps of one method on each source, and their descriptors, each computed once."""

    def __init__(
        self,
        model: LoadedModel,
        method: PlannedMethod,
        batch: torch.Tensor,
        labels: torch.Tensor,
        target: str | None,
        sources: Sources,
    ) -> None:
        self.model, self.batch, self.labels, self.target, self.sources = model, batch, labels, target, sources
        # raw maps: min–max or sum normalisation of a signed map would reorder |map|
        self.method = dataclasses.replace(method, normalise="raw")
        self.normalisation = method.normalisation
        self._maps: dict[Source, torch.Tensor] = {}
        self._described: dict[tuple[Source, str], np.ndarray] = {}
        self._scores: dict[Source, np.ndarray] = {}

    def raw(self, source: Source) -> torch.Tensor:
        """(B, H, W) maps on `source`, before normalisation."""
        if source not in self._maps:
            module = self.sources.module(source)
            self._maps[source] = planned_maps(
                self.model, self.method, self.batch, self.labels, self.target, module=module
            )
        return self._maps[source]

    def described(self, source: Source, name: str) -> np.ndarray:
        """Similarity `name`'s descriptors of the maps on `source`."""
        if (source, name) not in self._described:
            array = self.raw(source).detach().cpu().double().numpy()
            self._described[(source, name)] = SIMILARITIES.get(name).describe(array)
        return self._described[(source, name)]

    def similarity(self, name: str, first: Source, second: Source) -> np.ndarray:
        """Per-image similarity `name` of the maps on two sources (the curve's convention)."""
        return SIMILARITIES.get(name).compare(self.described(first, name), self.described(second, name))

    def ordering(self, name: str, first: Source, second: Source | None) -> np.ndarray:
        """Per-image rank similarity `name` for the drop (constant maps share no ordering); None: the
        trained model against itself, 1."""
        if second is None:
            return np.ones(self.batch.shape[0])
        return ordering_similarity(self.described(first, name), self.described(second, name))

    def class_scores(self, source: Source, resolution: str) -> np.ndarray:
        """(B, C) GradSUM scores of the normalised maps on `source`, as the run scores them."""
        if source not in self._scores:
            maps = normalise(self.raw(source), self.normalisation)
            self._scores[source] = image_class_scores(maps, self.labels, resolution)
        return self._scores[source]


@dataclass
class Collected:
    """Per-image values gathered over the batches of one model."""

    #: (variant index, method, similarity) → per-image values, one array per batch
    values: dict[tuple[int, str, str], list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    #: (variant index or -1 for the trained model, method) → per-image class scores
    scores: dict[tuple[int, str], list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    #: (method, similarity, term) → per-image drop terms
    terms: dict[tuple[str, str, str], list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    #: method → image ids, in the order of `terms`
    ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def tested_methods(context: EvaluationContext, model: LoadedModel) -> list[PlannedMethod]:
    """The planned methods whose maps depend on the weights (null explainers and controls left out)."""
    return [method for method in context.plan.get(model.name, ()) if not method.model_free]


def collect(
    context: EvaluationContext,
    model: LoadedModel,
    sources: Sources,
    variants: Sequence[Variant],
    calibrations: Mapping[str, Calibration],
    similarities: Sequence[str],
) -> Collected:
    """One pass over the images: each method's curve similarities and, where calibrated, its drop terms."""
    methods = tested_methods(context, model)
    target = context.targets.get(model.task)
    found = Collected()
    for ids, images, labels, _ in context.batches():
        batch = context.model_input(model, images)
        label_tensor = _label_tensor(labels, batch.device)
        for method in methods:
            maps = BatchMaps(model, method, batch, label_tensor, target, sources)
            found.scores[(-1, method.name)].append(maps.class_scores(TRAINED, context.resolution))
            for index, variant in enumerate(variants):
                found.scores[(index, method.name)].append(
                    maps.class_scores(variant.source, context.resolution)
                )
                for name in similarities:
                    found.values[(index, method.name, name)].append(
                        maps.similarity(name, TRAINED, variant.source)
                    )
            chosen = calibrations.get(method.name)
            if chosen is None:
                continue
            found.ids[method.name] += list(ids)
            for name in DROP_SIMILARITIES:
                terms = {
                    RANDOMISED: maps.ordering(name, TRAINED, chosen.randomised),
                    FLOOR: maps.ordering(name, chosen.randomised, chosen.second),
                    CEILING: maps.ordering(name, TRAINED, chosen.ceiling),
                }
                for term, values in terms.items():
                    found.terms[(method.name, name, term)].append(values)
    return found


def curve_rows(
    context: EvaluationContext,
    model: LoadedModel,
    variants: Sequence[Variant],
    found: Collected,
    similarities: Sequence[str],
) -> pd.DataFrame:
    """`sanity.csv` rows (or `sanity_data.csv`) of one model from its collected values."""
    rows = []
    for index, variant in enumerate(variants):
        for method in tested_methods(context, model):
            base = {
                "model": model.name,
                "method": method.name,
                "mode": variant.mode,
                "step": variant.step,
                "block": variant.block,
            }
            for name in similarities:
                per_image = np.concatenate(found.values[(index, method.name, name)])
                rng = _rng(context.seed, model.name, method.name, variant.mode, variant.step, name)
                mean, low, high = mean_ci(per_image, rng, context.n_resamples)
                n_images = int(np.isfinite(per_image).sum())
                rows.append(
                    {
                        **base,
                        "similarity": name,
                        "value": mean,
                        "ci_low": low,
                        "ci_high": high,
                        "n_images": n_images,
                    }
                )
            trained = np.concatenate(found.scores[(-1, method.name)])
            rho, low, high = profile_spearman(trained, np.concatenate(found.scores[(index, method.name)]))
            profile = {"similarity": PROFILE_SPEARMAN, "value": rho, "ci_low": low, "ci_high": high}
            rows.append({**base, **profile, "n_images": len(trained)})
    return pd.DataFrame(rows, columns=list(SANITY_COLUMNS))


def curve_variants(model: nn.Module, blocks: int | None, with_independent: bool, seed: int) -> list[Variant]:
    """The curve's points: step 0, then the cascade over the top `blocks` (None: all), optionally the
    blocks one at a time."""
    names = cascade_names(model, blocks)
    variants = [Variant(CASCADING, 0, ORIGINAL, TRAINED)]
    variants += [
        Variant(CASCADING, step, name, Source(tuple(names[:step]), seed))
        for step, name in enumerate(names, start=1)
    ]
    if with_independent:
        variants.append(Variant(INDEPENDENT, 0, ORIGINAL, TRAINED))
        variants += [
            Variant(INDEPENDENT, step, name, Source((name,), seed))
            for step, name in enumerate(names, start=1)
        ]
    return variants


@dataclass(frozen=True)
class ModelSanity:
    """One model's part of the check: curve rows, summary rows and per-image drop rows."""

    table: pd.DataFrame
    summary: pd.DataFrame
    per_image: pd.DataFrame


def drop_summary(
    model: LoadedModel, calibrations: Mapping[str, Calibration], found: Collected
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary rows, per-image rows) of one model's drops."""
    summary, per_image = [], []
    for label, chosen in calibrations.items():
        row: dict[str, Any] = {"model": model.name, "method": label}
        for name, suffix in DROP_SIMILARITIES.items():
            terms = {
                term: np.concatenate(found.terms[(label, name, term)])
                for term in (RANDOMISED, FLOOR, CEILING)
            }
            row[f"sanity_drop{suffix}"] = normalised_drop(terms[RANDOMISED], terms[FLOOR], terms[CEILING])
            for term, values in terms.items():
                row[f"sanity_{term}{suffix}"] = (
                    float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
                )
            if name == VERDICT_SIMILARITY:
                numerator, denominator = terms[CEILING] - terms[RANDOMISED], terms[CEILING] - terms[FLOOR]
                row["sanity_images"] = int(np.isfinite(numerator + denominator).sum())
                per_image.append(
                    pd.DataFrame(
                        {
                            "model": model.name,
                            "method": label,
                            "image": found.ids[label],
                            "sanity_drop_num": numerator,
                            "sanity_drop_den": denominator,
                        }
                    )
                )
        row["sanity_ceiling_source"] = SELF if chosen.ceiling is None else SEED_TWIN
        row["sanity_depth"] = len(chosen.depth)
        row["sanity_depth_block"] = chosen.depth[-1]
        summary.append(row)
    return pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)), _concat(per_image, PER_IMAGE_COLUMNS)


def model_sanity(
    context: EvaluationContext, model: LoadedModel, options: SanityOptions, twin: LoadedModel | None = None
) -> ModelSanity:
    """One model's curve (cascading over `options.blocks`, optionally independent) and each method's drop."""
    if twin is None:
        logger.warning(
            "sanity: %s has no seed twin (evaluation.seed_twins): the ceiling is the model against itself "
            "(1.0), so its sanity verdicts are uncalibrated",
            model.name,
        )
    variants = curve_variants(model.module, options.curve_blocks, options.independent, context.seed)
    calibrations = {
        method.name: calibration(model.module, method, context.seed, twin is not None)
        for method in tested_methods(context, model)
    }
    depths = ", ".join(f"{label} {len(c.depth)} ({c.depth[-1]})" for label, c in calibrations.items())
    curve = len(cascade_names(model.module, options.curve_blocks))
    logger.info("sanity: %s, curve over %d blocks; drop depths: %s", model.name, curve, depths)
    sources = Sources(model, twin)
    found = collect(context, model, sources, variants, calibrations, options.similarities)
    table = curve_rows(context, model, variants, found, options.similarities)
    summary, per_image = drop_summary(model, calibrations, found)
    return ModelSanity(table, summary, per_image)


def checked_twins(
    context: EvaluationContext, twins: Mapping[str, LoadedModel], option: str
) -> dict[str, LoadedModel]:
    """`twins` (model name → twin), each naming an evaluated model of the twin's task and input size."""
    models = {model.name: model for model in context.models}
    stray = sorted(set(twins) - set(models))
    if stray:
        raise SpecError(
            f"options.sanity.{option}: no evaluated model {', '.join(stray)}; models: {', '.join(models)}"
        )
    for name, twin in twins.items():
        model = models[name]
        if (twin.task, tuple(twin.img_size)) != (model.task, tuple(model.img_size)):
            raise SpecError(
                f"options.sanity.{option}.{name}: twin {twin.name} is {twin.task} at {twin.img_size}, "
                f"the model is {model.task} at {model.img_size}"
            )
    return dict(twins)


def data_randomisation(context: EvaluationContext, shuffled: Mapping[str, LoadedModel]) -> pd.DataFrame:
    """`sanity_data.csv`: each model's maps against its twin's, trained on permuted labels (mode `data`)."""
    models = {model.name: model for model in context.models}
    frames = []
    names = SIMILARITIES.names()
    for name, twin in checked_twins(context, shuffled, "shuffled").items():
        model = models[name]
        variants = [Variant(DATA, 1, twin.name, Source(twin=True))]
        found = collect(context, model, Sources(model, twin), variants, {}, names)
        frames.append(curve_rows(context, model, variants, found, names))
    return _concat(frames, SANITY_COLUMNS)


def _concat(frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True)


@register_check("sanity")
class SanityCheck(TrustCheck):
    """Model randomisation (the cascading curve and the calibrated drop) and, given shuffled-label twins,
    data randomisation."""

    Options = SanityOptions
    tables = (SANITY_TABLE, SANITY_DATA_TABLE)
    description = (
        "maps must change more when the model is re-initialised down to the method's layer than when it is "
        "retrained with another seed (Adebayo et al. 2018, calibrated)"
    )

    def evaluate(self, context: EvaluationContext, options: SanityOptions) -> CheckResult:
        """Tables `sanity` (and `sanity_data`), the drop per model × method and its per-image terms."""
        if options.images is not None:
            # the same context (and map cache) on its first images
            context = dataclasses.replace(context, indices=context.indices[: options.images])
        twins = checked_twins(context, options.twins, "twins")
        # a model's curve and drops are its share of the work: a killed run resumes after the last finished one
        parts = [
            context.part(
                self.name, m.name, functools.partial(model_sanity, context, m, options, twins.get(m.name))
            )
            for m in context.models
        ]
        table = _concat([part.table for part in parts], SANITY_COLUMNS)
        tables = {SANITY_TABLE.name: table}
        if options.shuffled:
            tables[SANITY_DATA_TABLE.name] = data_randomisation(context, options.shuffled)
        summary = _concat([part.summary for part in parts], SUMMARY_COLUMNS)
        per_image = _concat([part.per_image for part in parts], PER_IMAGE_COLUMNS)
        return CheckResult(tables, summary, [SANITY_CRITERION], per_image=per_image)
