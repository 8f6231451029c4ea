"""The causal referee: erase one class from an image and measure how much each model's output moves.

No attribution method is involved. For every evaluated image and every class present in it, the image
is erased once (in-domain by the truth set's renderer, else by a fill; see `erasure`) and, where the
truth set can render one, given a placebo (the class's texture redrawn, nothing else); every model reads
the original, the erased and the placebo image. A class is material for a model when its erasure moves
the output more than its placebo by a margin fixed in advance (`materiality`).

The `causal` check scores each method per image against that referee in like units (`concordance`):
whether the method's class masses order the classes as their erasure effects do, and how much of its
mass lies on the material classes against their area (the lift). The old Spearman of class densities
against effects (`agreement`) is kept as a secondary column, `density_spearman`, for one release.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import torch

from gradsum.aggregation.profiles import check_columns, mean_ci, per_image_frame
from gradsum.aggregation.scores import class_scores
from gradsum.errors import SpecError
from gradsum.evaluation.agreement import agreement_table
from gradsum.evaluation.base import CHECKS, CheckResult, Criterion, EvaluationContext
from gradsum.evaluation.concordance import causal_figures, causal_per_image
from gradsum.evaluation.erasure import (
    DEFAULT_FILLER,
    ERASERS,
    erasable_classes,
    erased_sample,
    placebo_sample,
)
from gradsum.evaluation.materiality import (
    MATERIALITY,
    material_classes,
    materiality_margins,
    materiality_table,
)
from gradsum.models.loaded import LoadedModel
from gradsum.taxonomy import TaskRegistry
from gradsum.truthsets.base import Sample
from gradsum.truthsets.labels import CITYSCAPES, NUM_CITYSCAPES_IDS, ignored_cityscapes_ids

#: Columns of `causal_effects.csv`: one row per model × image × erased class.
CAUSAL_EFFECT_COLUMNS = (
    "model",
    "task",
    "image",
    "class",
    "class_id",
    "pixels",
    "area_share",
    "output",
    "erased_output",
    "delta",
    "abs_delta",
    "flip",
    "placebo_output",
    "placebo_abs_delta",
    "domain",
)
#: Columns of `causal_profiles.csv`: one row per model × class × effect.
CAUSAL_PROFILE_COLUMNS = (
    "model",
    "task",
    "class",
    "class_id",
    "effect",
    "mean",
    "ci_low",
    "ci_high",
    "n_images",
    "domain",
)
#: Profile effect → the effect column it averages (the flip rate is the mean of the 0/1 flips).
PROFILE_EFFECTS = {"abs_delta": "abs_delta", "delta": "delta", "flip_rate": "flip"}
#: Columns of the check's summary (the trust table's causal columns), in order. `density_spearman` (and
#: its CI) is the old agreement figure, secondary for one release: it decides no verdict.
SUMMARY_COLUMNS = (
    "model",
    "method",
    "concordance",
    "image_concordance",
    "causal_lift",
    "n_material",
    "material_classes",
    "density_spearman",
    "density_spearman_ci_low",
    "density_spearman_ci_high",
    "domain",
)

#: (original outputs, erased outputs) → 1.0 where the model's decision flips, 0.0 where not, NaN where the
#: task has no decision.
DecisionFlips = Callable[[np.ndarray, np.ndarray], np.ndarray]
DECISION_FLIPS: TaskRegistry[DecisionFlips] = TaskRegistry("decision-flip rule")


def _no_decision(original: np.ndarray, erased: np.ndarray) -> np.ndarray:
    return np.full(original.shape, np.nan)


def _logit_sign_flip(original: np.ndarray, erased: np.ndarray) -> np.ndarray:
    # The decision is logit > 0, as `gradsum.models.tasks.binary_metrics` scores it.
    return ((original > 0) != (erased > 0)).astype(np.float64)


DECISION_FLIPS.add("steering", _no_decision)
DECISION_FLIPS.add("obstacle", _logit_sign_flip)


@dataclass(frozen=True)
class _Erasure:
    """One image × class to erase, with what the rows report about it."""

    position: int
    index: int
    image: str
    class_id: int
    pixels: int
    area_share: float

    @property
    def name(self) -> str:
        return CITYSCAPES.by_id[self.class_id].name


def _erasures(
    ids: Sequence[str], labels: Sequence[np.ndarray], indices: Sequence[int], erasable: frozenset[str] | None
) -> list[_Erasure]:
    """Every present, non-ignored (and, with a renderer, erasable) class of every image of a batch."""
    ignored = np.zeros(NUM_CITYSCAPES_IDS, dtype=bool)
    ignored[ignored_cityscapes_ids()] = True
    cases = []
    for position, (image_id, image_labels, index) in enumerate(zip(ids, labels, indices, strict=True)):
        counts = np.bincount(image_labels.reshape(-1), minlength=NUM_CITYSCAPES_IDS)
        counts[ignored] = 0
        # area share among the non-ignored pixels, as `class_scores` defines it
        total = counts.sum()
        for class_id in np.flatnonzero(counts):
            case = _Erasure(
                position, index, image_id, int(class_id), int(counts[class_id]), counts[class_id] / total
            )
            if erasable is None or case.name in erasable:
                cases.append(case)
    return cases


def _chunks(cases: list[_Erasure], size: int) -> Iterator[list[_Erasure]]:
    for start in range(0, len(cases), size):
        yield cases[start : start + size]


def causal_effects(context: EvaluationContext, filler: str = DEFAULT_FILLER) -> pd.DataFrame:
    """Output change of every model when each present class of each evaluated image is erased, and when
    it is only re-textured (its placebo; NaN where the truth set cannot render one).

    Each image × class is erased (and re-textured) once and read by every model, the rendered images in
    batches of the context's batch size. `filler` names the `ERASERS` entry used where the truth set
    cannot re-render.
    """
    ERASERS.get(filler, "filler")
    for model in context.models:
        DECISION_FLIPS.get(model.task, f"task of model {model.name!r}")
    erasable = erasable_classes(context.truthset)
    rows: list[dict[str, object]] = []
    for ids, images, labels, indices in context.batches():
        originals = {m.name: _predict(context, m, images) for m in context.models}
        for chunk in _chunks(_erasures(ids, labels, indices, erasable), context.batch_size):
            erased = [
                erased_sample(
                    context.truthset,
                    case.index,
                    case.name,
                    filler,
                    Sample(images[case.position], labels[case.position]),
                )
                for case in chunk
            ]
            placebos = _placebo_images(context, chunk)
            for model in context.models:
                before = originals[model.name][[case.position for case in chunk]]
                after = _predict(context, model, [image for image, _ in erased])
                placebo = (
                    np.full(len(chunk), np.nan) if placebos is None else _predict(context, model, placebos)
                )
                rows.extend(_effect_rows(model, chunk, [d for _, d in erased], before, after, placebo))
    return pd.DataFrame(rows, columns=list(CAUSAL_EFFECT_COLUMNS))


def _placebo_images(context: EvaluationContext, chunk: Sequence[_Erasure]) -> list[np.ndarray] | None:
    """The placebo of every erasure of a chunk; None when the truth set renders no placebo."""
    images = [placebo_sample(context.truthset, case.index, case.name) for case in chunk]
    present = [image for image in images if image is not None]
    # a truth set renders placebos for all of its classes or for none (the renderer is per set)
    return present if len(present) == len(images) and present else None


def _effect_rows(
    model: LoadedModel,
    chunk: Sequence[_Erasure],
    domains: Sequence[str],
    before: np.ndarray,
    after: np.ndarray,
    placebo: np.ndarray,
) -> list[dict[str, object]]:
    flips = DECISION_FLIPS.get(model.task)(before, after)
    return [
        {
            "model": model.name,
            "task": model.task,
            "image": case.image,
            "class": case.name,
            "class_id": case.class_id,
            "pixels": case.pixels,
            "area_share": case.area_share,
            "output": old,
            "erased_output": new,
            "delta": new - old,
            "abs_delta": abs(new - old),
            "flip": flip,
            "placebo_output": sham,
            "placebo_abs_delta": abs(sham - old),
            "domain": domain,
        }
        for case, domain, old, new, flip, sham in zip(
            chunk, domains, before, after, flips, placebo, strict=True
        )
    ]


def cached_causal_effects(context: EvaluationContext, filler: str = DEFAULT_FILLER) -> pd.DataFrame:
    """`causal_effects` computed once per context and filler (kept in `context.cache` for other checks)."""
    key = f"causal_effects:{filler}"
    if key not in context.cache:
        context.cache[key] = causal_effects(context, filler)
    cached: pd.DataFrame = context.cache[key]
    return cached


def _predict(context: EvaluationContext, model: LoadedModel, images: Sequence[np.ndarray]) -> np.ndarray:
    return model.predict(context.model_input(model, images)).cpu().numpy().astype(np.float64)


def causal_profiles(effects: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Model × class × effect means over images with percentile bootstrap CIs (`PROFILE_EFFECTS`).

    A task without decisions (steering) has no flip rate, so it gets no `flip_rate` rows.
    """
    check_columns(effects, CAUSAL_EFFECT_COLUMNS, "causal effects")
    rows = []
    keys = ["model", "task", "domain", "class_id"]
    for (model, task, domain, class_id), group in effects.groupby(keys, sort=True):
        for effect, column in PROFILE_EFFECTS.items():
            values = group[column].to_numpy(float)
            if not np.isfinite(values).any():
                continue
            key = f"{model}\0{class_id}\0{effect}"
            rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
            mean, low, high = mean_ci(values, rng, n_resamples)
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "class": group["class"].iloc[0],
                    "class_id": int(class_id),
                    "effect": effect,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n_images": int(group["image"].nunique()),
                    "domain": domain,
                }
            )
    return pd.DataFrame(rows, columns=list(CAUSAL_PROFILE_COLUMNS))


def gradsum_rows(context: EvaluationContext) -> pd.DataFrame:
    """per_image rows of every planned method (null explainers included) of every model on the images.

    Computed once per context (kept in `context.cache`): the causal and shortcut checks both read them,
    and each pass re-reads every evaluated image.
    """
    if GRADSUM_ROWS not in context.cache:
        context.cache[GRADSUM_ROWS] = _gradsum_rows(context)
    rows: pd.DataFrame = context.cache[GRADSUM_ROWS]
    return rows


#: `context.cache` key of `gradsum_rows`.
GRADSUM_ROWS = "gradsum_rows"


def _gradsum_rows(context: EvaluationContext) -> pd.DataFrame:
    frames = []
    for ids, images, labels, indices in context.batches():
        label_tensor = torch.from_numpy(np.stack(labels).astype(np.int64)).to(context.device)
        for model in context.models:
            batch = context.model_input(model, images)
            for planned in context.plan.get(model.name, ()):
                maps = context.maps(model, planned, batch, label_tensor, ids, indices).detach()
                scores = class_scores(maps, label_tensor, resolution=context.resolution)
                frames.append(per_image_frame(scores, ids, model.name, planned.label))
    return pd.concat(frames, ignore_index=True)


#: Primary criterion: per-image pair concordance of class masses with the referee's material effects.
CONCORDANCE_CRITERION = Criterion(
    "causal",
    "concordance",
    higher_is_better=True,
    threshold=0.5,
    name="causal",
    text="per image, over the class pairs whose erasure effects the referee separates by more than the "
    "task's margin (immaterial classes tied at 0), the fraction the method's class masses order the same "
    "way (ties 0.5, chance 0.5), averaged over images",
)
#: Image criterion: does the map follow the referee from image to image (a class ranking that ignores the
#: image, like an oracle built for another image, scores chance)?
IMAGE_CRITERION = Criterion(
    "causal",
    "image_concordance",
    higher_is_better=True,
    threshold=0.5,
    name="causal_image",
    text="per image, over (material class, other image) pairs whose erasure effects differ by more than "
    "the task's margin, the fraction the method's mass shares order the two images as the referee's effect "
    "shares do (ties 0.5, chance 0.5), averaged over images",
)
#: Companion criterion: the mass on the material classes against their area (the uniform map's is 1).
LIFT_CRITERION = Criterion(
    "causal",
    "material_mass",
    higher_is_better=True,
    threshold=1.0,
    name="causal_lift",
    denominator="material_area",
    text="mean over images of the map's mass share on the model's material classes divided by the mean "
    "of their area share (1: no more mass than area, the uniform map)",
)


@dataclass(frozen=True)
class CausalOptions:
    """The check's options (run config `evaluation.options.causal`)."""

    #: the `ERASERS` entry used where the truth set cannot re-render
    filler: str = DEFAULT_FILLER
    #: task → materiality margin (`materiality.MATERIALITY`, overridden per task)
    materiality: Mapping[str, float] = field(default_factory=lambda: dict(MATERIALITY))

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> CausalOptions:
        """Options from a config mapping; unknown keys, fillers and tasks are errors."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise SpecError(
                f"options.causal: unknown option(s) {', '.join(map(str, unknown))}; valid: {', '.join(sorted(valid))}"
            )
        filler = str(options.get("filler", DEFAULT_FILLER))
        ERASERS.get(filler, "options.causal.filler")
        return cls(filler=filler, materiality=materiality_margins(options.get("materiality")))


class CausalCheck:
    """Causal erasure profiles, the referee's material classes, and each method's concordance with them."""

    name = CONCORDANCE_CRITERION.check
    description = (
        "erase and re-texture each class, call classes material by a fixed margin, and score each "
        "method's class masses per image against the erasure effects"
    )

    def run(self, context: EvaluationContext) -> CheckResult:
        """Tables causal_effects, causal_profiles, causal_materiality, agreement (secondary); per-image
        concordance and material shares; summary per model × method (`SUMMARY_COLUMNS`)."""
        options = CausalOptions.from_mapping(context.options.get(self.name, {}))
        effects = cached_causal_effects(context, options.filler)
        materiality = materiality_table(effects, options.materiality, context.n_resamples, context.seed)
        material = material_classes(materiality)
        rows = gradsum_rows(context)
        per_image = causal_per_image(rows, effects, material, options.materiality)
        agreement = agreement_table(rows, effects, context.truthset.causes, context.n_resamples, context.seed)
        return CheckResult(
            tables={
                "causal_effects": effects,
                "causal_profiles": causal_profiles(effects, context.n_resamples, context.seed),
                "causal_materiality": materiality,
                "agreement": agreement,
            },
            summary=_summary(causal_figures(per_image, material), agreement),
            criteria=[CONCORDANCE_CRITERION, IMAGE_CRITERION, LIFT_CRITERION],
            per_image=per_image,
        )


def _summary(figures: pd.DataFrame, agreement: pd.DataFrame) -> pd.DataFrame:
    """The concordance figures beside the secondary density Spearman and the erasure domain."""
    density = agreement.rename(
        columns={
            "spearman": "density_spearman",
            "spearman_ci_low": "density_spearman_ci_low",
            "spearman_ci_high": "density_spearman_ci_high",
        }
    )
    columns = ["model", "method", "density_spearman", "density_spearman_ci_low", "density_spearman_ci_high"]
    merged = figures.merge(density[[*columns, "domain"]], on=["model", "method"], how="outer")
    return merged.sort_values(["model", "method"], ignore_index=True)[list(SUMMARY_COLUMNS)]


CHECKS.add(CausalCheck.name, CausalCheck)
