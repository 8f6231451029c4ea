"""The causal referee: erase one class from an image and measure how much each model's output moves.

No attribution method is involved. For every evaluated image and every class present in it, the image
is erased once (in-domain by the truth set's renderer, else by a fill; see `erasure`) and every model
reads the original and the erased image. A model × class profile of the output changes is the causal
profile; the `causal` check measures how well each method's GradSUM profile agrees with it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gradsum.aggregation.profiles import check_columns, mean_ci, per_image_frame
from gradsum.aggregation.scores import class_scores
from gradsum.evaluation.agreement import agreement_table
from gradsum.evaluation.base import CHECKS, CheckResult, Criterion, EvaluationContext
from gradsum.evaluation.erasure import DEFAULT_FILLER, ERASERS, erasable_classes, erased_sample
from gradsum.models.loaded import LoadedModel
from gradsum.registry import Registry
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
#: Columns of the check's summary (the trust table's causal columns), in order.
SUMMARY_COLUMNS = (
    "model",
    "method",
    "agreement",
    "agreement_ci_low",
    "agreement_ci_high",
    "cause_mass_share",
    "cause_mass_share_ci_low",
    "cause_mass_share_ci_high",
    "cause_lift",
    "domain",
)

#: (original outputs, erased outputs) → 1.0 where the model's decision flips, 0.0 where not, NaN where the
#: task has no decision.
DecisionFlips = Callable[[np.ndarray, np.ndarray], np.ndarray]
DECISION_FLIPS: Registry[DecisionFlips] = Registry("decision-flip rule")


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
    """Output change of every model when each present class of each evaluated image is erased.

    Each image × class is erased once and read by every model, the erased images in batches of the
    context's batch size. `filler` names the `ERASERS` entry used where the truth set cannot re-render.
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
            erased_images = [image for image, _ in erased]
            for model in context.models:
                before = originals[model.name][[case.position for case in chunk]]
                after = _predict(context, model, erased_images)
                flips = DECISION_FLIPS.get(model.task)(before, after)
                for case, (_, domain), old, new, flip in zip(
                    chunk, erased, before, after, flips, strict=True
                ):
                    rows.append(
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
                            "domain": domain,
                        }
                    )
    return pd.DataFrame(rows, columns=list(CAUSAL_EFFECT_COLUMNS))


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
    for ids, images, labels, _ in context.batches():
        label_tensor = torch.from_numpy(np.stack(labels).astype(np.int64)).to(context.device)
        for model in context.models:
            batch = context.model_input(model, images)
            for planned in context.plan.get(model.name, ()):
                maps = context.maps(model, planned, batch, label_tensor, ids).detach()
                scores = class_scores(maps, label_tensor, resolution=context.resolution)
                frames.append(per_image_frame(scores, ids, model.name, planned.label))
    return pd.concat(frames, ignore_index=True)


#: The verdict-deciding figure: rank agreement of the method's profile with the causal profile.
AGREEMENT_CRITERION = Criterion(
    "causal",
    "agreement",
    higher_is_better=True,
    threshold=0.0,
    text="Spearman correlation over classes between the method's GradSUM profile and the causal profile "
    "(mean |output change| when the class is erased), with a bootstrap CI over images",
)


class CausalCheck:
    """Causal erasure profiles and each method's agreement with them."""

    name = AGREEMENT_CRITERION.check
    description = "erase each class, measure each model's output change, and rank-correlate with the profiles"

    def run(self, context: EvaluationContext) -> CheckResult:
        """Tables causal_effects, causal_profiles, agreement; summary per model × method."""
        filler = str(context.options.get(self.name, {}).get("filler", DEFAULT_FILLER))
        effects = cached_causal_effects(context, filler)
        profile_table = causal_profiles(effects, context.n_resamples, context.seed)
        agreement = agreement_table(
            gradsum_rows(context), effects, context.truthset.causes, context.n_resamples, context.seed
        )
        summary = agreement.rename(
            columns={
                "spearman": "agreement",
                "spearman_ci_low": "agreement_ci_low",
                "spearman_ci_high": "agreement_ci_high",
            }
        )[list(SUMMARY_COLUMNS)]
        return CheckResult(
            tables={"causal_effects": effects, "causal_profiles": profile_table, "agreement": agreement},
            summary=summary.reset_index(drop=True),
            criteria=[AGREEMENT_CRITERION],
        )


CHECKS.add(CausalCheck.name, CausalCheck)
