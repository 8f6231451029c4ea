"""Sanity checks (Adebayo et al. 2018): do the maps change when the model they explain is destroyed?

Model randomisation re-initialises the model's blocks from the output down (`randomise.cascading`,
cumulative; optionally `randomise.independent`, one block at a time) and compares every planned
method's maps on the randomised copy with its maps on the trained model. Data randomisation compares
each model's maps with those of its twin trained on permuted labels (`gradsum train --shuffle-labels`).
A map that stays alike explains the input, not the model. Null explainers know nothing of the model, so
their maps never change and they fail the check by design.

`sanity.csv` holds one row per model × method × mode × step × similarity, with the mean over the
images and its bootstrap CI (`profile_spearman` rows: the Spearman of the two class profiles with its
Fisher-z CI). Step 0 is the trained model compared with itself.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from gradsum.aggregation import mean_ci
from gradsum.errors import GradSUMError, SpecError
from gradsum.evaluation.base import (
    CHECKS,
    CheckResult,
    Criterion,
    EvaluationContext,
    PlannedMethod,
    planned_maps,
)
from gradsum.evaluation.randomise import cascading, independent
from gradsum.evaluation.similarity import (
    PROFILE_SPEARMAN,
    SIMILARITIES,
    image_class_scores,
    profile_spearman,
)
from gradsum.models.loaded import LoadedModel

logger = logging.getLogger(__name__)

#: A method whose maps keep a rank correlation of 0.5 or more with the trained model's maps after the
#: layers that compute the output were re-initialised does not explain the model (Adebayo et al.: maps
#: that survive randomisation are input features, e.g. edges); below 0.5 most of the map's ordering went
#: with the weights. Verdicts compare the CI's upper end with it.
SANITY_THRESHOLD = 0.5

#: blocks randomised by default: the run's fast setting (the `trust` config randomises every block)
DEFAULT_BLOCKS = 3

CASCADING, INDEPENDENT, DATA = "cascading", "independent", "data"
#: the block name of step 0, the trained model compared with itself
ORIGINAL = "original"
#: the similarity the verdict reads (the paper's headline measure)
VERDICT_SIMILARITY = "spearman_abs"

#: Columns of `sanity.csv` (and `sanity_data.csv`, where `block` names the shuffled-label twin), in order.
SANITY_COLUMNS = (
    "model",
    "method",
    "null",
    "mode",
    "step",
    "block",
    "similarity",
    "value",
    "ci_low",
    "ci_high",
    "n_images",
)
#: Columns of the check's summary, in order.
SUMMARY_COLUMNS = (
    "model",
    "method",
    "sanity_similarity",
    "sanity_similarity_ci_low",
    "sanity_similarity_ci_high",
    "sanity_blocks",
)

SANITY_CRITERION = Criterion(
    "sanity",
    "sanity_similarity",
    higher_is_better=False,
    threshold=SANITY_THRESHOLD,
    text="Spearman |map| after cascading randomisation of the top k blocks",
)


@dataclass(frozen=True)
class Variant:
    """One model the maps are compared on; `module` None is the trained model itself (step 0)."""

    mode: str
    step: int
    block: str
    module: nn.Module | None


@dataclass(frozen=True)
class SanityOptions:
    """`context.options["sanity"]`: blocks (int or "all"), independent (bool), shuffled (name → twin),
    images (the first N evaluated images; None: all), similarities (names of `SIMILARITIES`)."""

    blocks: int | None = DEFAULT_BLOCKS
    independent: bool = False
    shuffled: Mapping[str, LoadedModel] = field(default_factory=dict)
    images: int | None = None
    similarities: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SanityOptions:
        """Validated options; an unknown key or a bad value names the option."""
        valid = ("blocks", "independent", "shuffled", "images", "similarities")
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise SpecError(f"options.sanity: unknown option {', '.join(unknown)}; valid: {', '.join(valid)}")
        blocks = options.get("blocks", DEFAULT_BLOCKS)
        if blocks == "all" or blocks is None:
            blocks = None
        elif not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 1:
            raise SpecError(f"options.sanity.blocks: an integer ≥ 1 or 'all', got {blocks!r}")
        images = options.get("images")
        if images is not None and (not isinstance(images, int) or isinstance(images, bool) or images < 1):
            raise SpecError(f"options.sanity.images: an integer ≥ 1 or null (all), got {images!r}")
        names = tuple(options.get("similarities") or SIMILARITIES.names())
        for name in names:
            SIMILARITIES.get(name, "options.sanity.similarities")
        if VERDICT_SIMILARITY not in names:
            raise SpecError(
                f"options.sanity.similarities: must include {VERDICT_SIMILARITY!r}, the verdict's measure"
            )
        shuffled = dict(options.get("shuffled") or {})
        return cls(blocks, bool(options.get("independent", False)), shuffled, images, names)


def _rng(seed: int, *key: object) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32("\0".join(map(str, key)).encode())])


def _label_tensor(labels: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(labels).astype(np.int64)).to(device)


def _describe(maps: torch.Tensor, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named similarities' descriptors of a batch of maps, computed once per map batch."""
    array = maps.detach().cpu().double().numpy()
    return {name: SIMILARITIES.get(name).describe(array) for name in names}


def compare_variants(
    context: EvaluationContext,
    model: LoadedModel,
    variants: Sequence[Variant],
    similarities: Sequence[str] | None = None,
) -> pd.DataFrame:
    """`sanity.csv` rows: every planned method's maps on each variant against its maps on `model`."""
    names = list(similarities or SIMILARITIES.names())
    methods: Sequence[PlannedMethod] = context.plan.get(model.name, ())
    target = context.targets.get(model.task)
    values: dict[tuple[int, str, str], list[np.ndarray]] = defaultdict(list)
    # per (variant index, method) the per-image class scores; index -1 holds the trained model's
    scores: dict[tuple[int, str], list[np.ndarray]] = defaultdict(list)
    for ids, images, labels, _ in context.batches():
        batch = context.model_input(model, images)
        label_tensor = _label_tensor(labels, batch.device)
        for method in methods:
            original = context.maps(model, method, batch, label_tensor, ids)
            scores[(-1, method.label)].append(image_class_scores(original, label_tensor, context.resolution))
            described = _describe(original, names)
            for index, variant in enumerate(variants):
                if variant.module is None or method.null:
                    # a null explainer knows nothing of the model: a randomised copy gives it the same maps
                    maps, descriptors = original, described
                else:
                    maps = planned_maps(model, method, batch, label_tensor, target, module=variant.module)
                    descriptors = _describe(maps, names)
                scores[(index, method.label)].append(
                    image_class_scores(maps, label_tensor, context.resolution)
                )
                for name in names:
                    values[(index, method.label, name)].append(
                        SIMILARITIES.get(name).compare(described[name], descriptors[name])
                    )
    rows = []
    for index, variant in enumerate(variants):
        for method in methods:
            base = {
                "model": model.name,
                "method": method.label,
                "null": method.null,
                "mode": variant.mode,
                "step": variant.step,
                "block": variant.block,
            }
            for name in names:
                per_image = np.concatenate(values[(index, method.label, name)])
                rng = _rng(context.seed, model.name, method.label, variant.mode, variant.step, name)
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
            trained = np.concatenate(scores[(-1, method.label)])
            rho, low, high = profile_spearman(trained, np.concatenate(scores[(index, method.label)]))
            profile = {"similarity": PROFILE_SPEARMAN, "value": rho, "ci_low": low, "ci_high": high}
            rows.append({**base, **profile, "n_images": len(trained)})
    return pd.DataFrame(rows, columns=list(SANITY_COLUMNS))


def model_randomisation(
    context: EvaluationContext,
    model: LoadedModel,
    blocks: int | None = DEFAULT_BLOCKS,
    with_independent: bool = False,
    similarities: Sequence[str] | None = None,
) -> pd.DataFrame:
    """`sanity.csv` rows of one model: cascading over the top `blocks` (None: all), optionally independent."""
    variants = [Variant(CASCADING, 0, ORIGINAL, None)]
    variants += [
        Variant(CASCADING, step, name, module)
        for step, (name, module) in enumerate(cascading(model.module, blocks, context.seed), start=1)
    ]
    if with_independent:
        variants.append(Variant(INDEPENDENT, 0, ORIGINAL, None))
        variants += [
            Variant(INDEPENDENT, step, name, module)
            for step, (name, module) in enumerate(independent(model.module, blocks, context.seed), start=1)
        ]
    logger.info("sanity: %s, randomising %s", model.name, ", ".join(v.block for v in variants if v.step))
    return compare_variants(context, model, variants, similarities)


def data_randomisation(context: EvaluationContext, shuffled: Mapping[str, LoadedModel]) -> pd.DataFrame:
    """`sanity_data.csv`: each model's maps against its twin's, trained on permuted labels (mode `data`)."""
    models = {model.name: model for model in context.models}
    stray = sorted(set(shuffled) - set(models))
    if stray:
        raise SpecError(
            f"options.sanity.shuffled: no evaluated model {', '.join(stray)}; models: {', '.join(models)}"
        )
    frames = []
    for name, twin in shuffled.items():
        model = models[name]
        if (twin.task, tuple(twin.img_size)) != (model.task, tuple(model.img_size)):
            raise SpecError(
                f"options.sanity.shuffled.{name}: twin {twin.name} is {twin.task} at {twin.img_size}, "
                f"the model is {model.task} at {model.img_size}"
            )
        frames.append(compare_variants(context, model, [Variant(DATA, 1, twin.name, twin.module)]))
    return _concat(frames)


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=list(SANITY_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def sanity_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model × method: Spearman |map| at the last cascading step, the figure the verdict reads."""
    rows = table[(table["mode"] == CASCADING) & (table["similarity"] == VERDICT_SIMILARITY)]
    summary = []
    for (model, method), group in rows.groupby(["model", "method"], sort=True):
        last = group.loc[group["step"].idxmax()]
        summary.append(
            {
                "model": model,
                "method": method,
                "sanity_similarity": last["value"],
                "sanity_similarity_ci_low": last["ci_low"],
                "sanity_similarity_ci_high": last["ci_high"],
                "sanity_blocks": int(last["step"]),
            }
        )
    return pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS))


#: the two panels of the cascading figure: similarity → title
_PANELS = {
    "spearman_abs": "Spearman rank correlation, |map|",
    "spearman": "Spearman rank correlation, signed",
}


def cascading_figure(table: pd.DataFrame, model: str) -> Figure:
    """Adebayo et al.'s cascading plot for one model: similarity to the original map per randomised block.

    x: the blocks in cascade order ("original" first); one line per method with its CI band, null
    explainers dashed grey; the dotted line is `SANITY_THRESHOLD`.
    """
    rows = table[(table["model"] == model) & (table["mode"] == CASCADING)]
    if rows.empty:
        raise GradSUMError(f"model: the sanity table has no cascading rows for {model!r}")
    ticks = rows[["step", "block"]].drop_duplicates().sort_values("step")
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots(1, len(_PANELS), sharey=True)
    for axis, (similarity, title) in zip(axes, _PANELS.items(), strict=True):
        for method, group in rows[rows["similarity"] == similarity].groupby("method", sort=True):
            group = group.sort_values("step")
            null = bool(group["null"].iloc[0])
            style: dict[str, Any] = (
                {"color": "grey", "linestyle": "--", "linewidth": 1.0}
                if null
                else {"marker": "o", "markersize": 3}
            )
            (line,) = axis.plot(group["step"], group["value"], label=str(method), **style)
            axis.fill_between(
                group["step"], group["ci_low"], group["ci_high"], color=line.get_color(), alpha=0.12
            )
        axis.axhline(SANITY_THRESHOLD, color="black", linestyle=":", linewidth=0.8)
        axis.set_xticks(ticks["step"].tolist(), ticks["block"].tolist(), rotation=45, ha="right")
        axis.set_title(title)
        axis.set_xlabel("randomised block (cascading, from the output)")
        axis.set_ylim(-1.05, 1.05)
    axes[0].set_ylabel("similarity to the original map")
    legend_axis = next((axis for axis in reversed(axes) if axis.get_legend_handles_labels()[0]), None)
    if legend_axis is not None:
        legend_axis.legend(fontsize="small", loc="lower left")
    figure.suptitle(f"{model}: cascading model randomisation")
    return figure


class SanityCheck:
    """Model (and, given shuffled-label twins, data) randomisation sanity checks."""

    name = "sanity"
    description = "maps must change when the model's top blocks are re-initialised (Adebayo et al. 2018)"

    def run(self, context: EvaluationContext) -> CheckResult:
        """Tables `sanity` (and `sanity_data`), the summary per model × method, one figure per model."""
        options = SanityOptions.from_options(context.options.get("sanity", {}))
        if options.images is not None:
            # the same context (and map cache) on its first images
            context = dataclasses.replace(context, indices=context.indices[: options.images])
        table = _concat(
            [
                model_randomisation(context, m, options.blocks, options.independent, options.similarities)
                for m in context.models
            ]
        )
        tables = {"sanity": table}
        if options.shuffled:
            tables["sanity_data"] = data_randomisation(context, options.shuffled)
        figures = {f"sanity_{name}": cascading_figure(table, name) for name in table["model"].unique()}
        return CheckResult(tables, sanity_summary(table), [SANITY_CRITERION], figures)


CHECKS.add("sanity", SanityCheck)
