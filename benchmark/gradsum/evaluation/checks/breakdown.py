"""Breakdown: the profiles a class profile averages away, shown apart.

A class profile pools the in-lane obstacle with every other car, and left turns with right turns. This
check splits them, for every model × planned method (null explainers included, so a reader can compare):

- **instance profiles**: on images whose cause mask covers thing instances (the obstacle task on the
  synthetic set) and whose truth set has instance ids, the GradSUM score (mean map value) of the causal
  instance against that of the other instances of its class (the distractors), and their paired
  difference, which says whether the method singles out the obstacle among the cars or people;
- **target profiles**: the GradSUM class profile of each target group (`TARGET_GROUPS`: obstacle
  positives and negatives; left, straight and right steering).

These are profiles that explain; they give no verdict.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gradsum.aggregation import PROFILE_COLUMNS, class_scores, mean_ci, per_image_frame, profiles
from gradsum.attribution.base import upsample
from gradsum.evaluation.base import (
    CheckResult,
    EvaluationContext,
    NoOptions,
    TrustCheck,
    check_table,
    register_check,
)
from gradsum.models.loaded import LoadedModel
from gradsum.taxonomy import TaskRegistry
from gradsum.truthsets.base import Sample
from gradsum.truthsets.labels import CITYSCAPES
from gradsum.truthsets.layout import INSTANCE_SCALE

log = logging.getLogger(__name__)

#: |steering| up to which a frame counts as straight. Steering is the pure-pursuit curvature divided by
#: `STEERING_SCALE` ≈ 0.032 1/m (datasets/SYNTHETIC.md), so 0.1 is a curvature of 0.0032 1/m: an arc of
#: radius ≈ 310 m, about the 300 m above which a road reads as straight.
STRAIGHT = 0.1

#: The roles of `instance_profiles.csv`: the causal instance, the other instances of its class, and the
#: paired per-image difference of the two over the images that have both.
CAUSE, DISTRACTOR, DIFFERENCE = "cause", "distractor", "cause − distractor"
#: Columns of `instance_profiles.csv` (one row per model × method × class × role), in order;
#: `pixels_mean` is the role's mean pixel count per image (NaN for the difference).
INSTANCE_PROFILE_COLUMNS = (
    "model",
    "method",
    "class",
    "role",
    "score_mean",
    "score_ci_low",
    "score_ci_high",
    "pixels_mean",
    "n_images",
)
#: Columns of `target_profiles.csv`: the profiles.csv columns with the target group after the method.
TARGET_PROFILE_COLUMNS = (*PROFILE_COLUMNS[:2], "group", *PROFILE_COLUMNS[2:])
#: The summary has no figures: the breakdown explains profiles, it judges no method.
SUMMARY_COLUMNS = ("model", "method")

#: a sample's target value → the name of its group
TargetGroup = Callable[[float], str]
TARGET_GROUPS: TaskRegistry[TargetGroup] = TaskRegistry("target grouping")


def obstacle_group(target: float) -> str:
    """ "positive" for an obstacle in the ego lane (target ≥ 0.5), else "negative"."""
    return "positive" if target >= 0.5 else "negative"


def steering_group(target: float) -> str:
    """ "left" below −STRAIGHT, "right" above STRAIGHT, "straight" in between (bounds included)."""
    # compared in float32, the precision readers store targets in, so a stored ±0.1 is straight
    value, bound = np.float32(target), np.float32(STRAIGHT)
    if value < -bound:
        return "left"
    if value > bound:
        return "right"
    return "straight"


TARGET_GROUPS.add("obstacle", obstacle_group)
TARGET_GROUPS.add("steering", steering_group)


@dataclass(frozen=True)
class InstanceMasks:
    """The causal instance's Cityscapes class, its pixels and those of the other instances of its class."""

    class_id: int
    cause: np.ndarray
    distractors: np.ndarray


def instance_masks(cause: np.ndarray, labels: np.ndarray, instances: np.ndarray) -> InstanceMasks | None:
    """Cause and distractor masks of one image; None when the cause mask covers no thing instance.

    The class is the majority class id under the cause mask; distractors are the pixels of every other
    instance of that class (an instance id the cause mask touches is never a distractor). A cause mask
    over stuff (steering's: mostly road, sidewalk and terrain, with the odd car or pole edge) has no
    instance: the majority class must itself be a thing the mask covers.
    """
    covered = np.unique(instances[cause])
    class_id = int(np.bincount(labels[cause]).argmax())
    if not ((covered >= INSTANCE_SCALE) & (covered // INSTANCE_SCALE == class_id)).any():
        return None
    distractors = (
        (instances >= INSTANCE_SCALE)
        & (instances // INSTANCE_SCALE == class_id)
        & ~np.isin(instances, covered)
    )
    return InstanceMasks(class_id, cause, distractors)


#: Columns of the per-image instance rows `instance_profiles` reads, in order.
INSTANCE_ROW_COLUMNS = (
    "model",
    "method",
    "class",
    "image",
    "cause",
    "cause_pixels",
    "distractor",
    "distractor_pixels",
)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


@dataclass
class _Batch:
    """One evaluated batch with what the breakdown reads beside the images: targets and instances."""

    ids: list[str]
    images: list[np.ndarray]
    labels: torch.Tensor
    samples: list[Sample]
    chunk: list[int]

    def groups(self, task: str) -> list[str | None]:
        """Each image's target group for `task`; None where the image has no (finite) target."""
        group = TARGET_GROUPS.get(task, "task")
        values = [sample.targets.get(task) for sample in self.samples]
        return [None if v is None or not np.isfinite(v) else group(float(v)) for v in values]

    def instance_masks(self, context: EvaluationContext, task: str) -> list[InstanceMasks | None]:
        """Each image's causal-instance masks for `task`, where it has a cause mask and instance ids."""
        return [_image_instance(context, i, s, task) for i, s in zip(self.chunk, self.samples, strict=True)]


def _image_instance(
    context: EvaluationContext, index: int, sample: Sample, task: str
) -> InstanceMasks | None:
    if sample.instances is None:
        return None
    mask = context.truthset.cause_mask(index, task)
    if mask is None:
        return None
    return instance_masks(np.asarray(mask, dtype=bool), sample.labels, sample.instances)


def _batches(context: EvaluationContext) -> Iterator[_Batch]:
    for ids, samples, chunk in context.sample_batches():
        labels = np.stack([sample.labels for sample in samples]).astype(np.int64)
        label_tensor = torch.from_numpy(labels).to(context.device)
        yield _Batch(ids, [sample.image for sample in samples], label_tensor, samples, chunk)


def _instance_rows(
    model: LoadedModel,
    label: str,
    maps: torch.Tensor,
    batch: _Batch,
    found: Sequence[InstanceMasks | None],
) -> list[dict[str, object]]:
    """Per image with a causal instance: the mean map value and pixel count of cause and distractors."""
    rows: list[dict[str, object]] = []
    if not any(found):
        return rows
    size = (int(batch.labels.shape[-2]), int(batch.labels.shape[-1]))
    resized = upsample(maps.detach().float().cpu(), size).double().numpy()
    for values, image, masks in zip(resized, batch.ids, found, strict=True):
        if masks is None:
            continue
        rows.append(
            {
                "model": model.name,
                "method": label,
                "class": CITYSCAPES.by_id[masks.class_id].name,
                "image": image,
                "cause": _masked_mean(values, masks.cause),
                "cause_pixels": int(masks.cause.sum()),
                "distractor": _masked_mean(values, masks.distractors),
                "distractor_pixels": int(masks.distractors.sum()),
            }
        )
    return rows


def _role_row(
    key: tuple[str, str, str], role: str, values: np.ndarray, pixels: np.ndarray, n_resamples: int, seed: int
) -> dict[str, object]:
    """One instance-profile row: mean and bootstrap CI over the images where `values` is finite."""
    finite = np.isfinite(values)
    # one generator per row, keyed like `profiles`, so a row does not depend on the rows before it
    rng = np.random.default_rng([seed, zlib.crc32("\0".join((*key, role)).encode())])
    mean, low, high = mean_ci(values, rng, n_resamples)
    return {
        "model": key[0],
        "method": key[1],
        "class": key[2],
        "role": role,
        "score_mean": mean,
        "score_ci_low": low,
        "score_ci_high": high,
        "pixels_mean": float(pixels[finite].mean()) if finite.any() else float("nan"),
        "n_images": int(finite.sum()),
    }


def instance_profiles(per_image: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Model × method × class: cause, distractor and paired cause − distractor scores with bootstrap CIs.

    `per_image` has one row per image with a causal instance: model, method, class, image, cause,
    cause_pixels, distractor (NaN without distractors), distractor_pixels.
    """
    rows = []
    for key, group in per_image.groupby(["model", "method", "class"], sort=False):
        cause, distractor = group["cause"].to_numpy(float), group["distractor"].to_numpy(float)
        for role, values, pixels in (
            (CAUSE, cause, group["cause_pixels"].to_numpy(float)),
            (DISTRACTOR, distractor, group["distractor_pixels"].to_numpy(float)),
            (DIFFERENCE, cause - distractor, np.full(len(group), np.nan)),
        ):
            rows.append(_role_row(key, role, values, pixels, n_resamples, seed))
    return pd.DataFrame(rows, columns=list(INSTANCE_PROFILE_COLUMNS))


def target_profiles(per_image: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """`profiles` of each target group's per_image rows (`per_image` columns plus `group`)."""
    frames = []
    for name, rows in per_image.groupby("group", sort=True):
        table = profiles(rows.drop(columns="group"), n_resamples=n_resamples, seed=seed)
        table.insert(TARGET_PROFILE_COLUMNS.index("group"), "group", name)
        frames.append(table)
    if not frames:
        return pd.DataFrame(columns=list(TARGET_PROFILE_COLUMNS))
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["model", "method", "group", "class_id"], kind="stable", ignore_index=True)


def breakdown_rows(context: EvaluationContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(instance rows, per_image rows with `group`) of every model × planned method on the images."""
    instance_rows: list[dict[str, object]] = []
    frames = []
    tasks = {model.task for model in context.models}
    for batch in _batches(context):
        groups = {task: batch.groups(task) for task in tasks}
        found = {task: batch.instance_masks(context, task) for task in tasks}
        for model in context.models:
            group_of = dict(zip(batch.ids, groups[model.task], strict=True))
            inputs = context.model_input(model, batch.images)
            for planned in context.plan.get(model.name, ()):
                maps = context.maps(model, planned, inputs, batch.labels, batch.ids, batch.chunk).detach()
                instance_rows += _instance_rows(model, planned.name, maps, batch, found[model.task])
                scores = class_scores(maps, batch.labels, resolution=context.resolution)
                frame = per_image_frame(scores, batch.ids, model.name, planned.name)
                frame.insert(frame.columns.get_loc("method") + 1, "group", frame["image"].map(group_of))
                frames.append(frame[frame["group"].notna()])
    rows = pd.DataFrame(instance_rows, columns=list(INSTANCE_ROW_COLUMNS))
    grouped = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["group"])
    return rows, grouped


INSTANCE_PROFILES_TABLE = check_table(
    "instance_profiles", INSTANCE_PROFILE_COLUMNS, text=("role",), ints=("n_images",)
)
TARGET_PROFILES_TABLE = check_table(
    "target_profiles", TARGET_PROFILE_COLUMNS, text=("group", "category"), ints=("class_id", "n_images")
)


@register_check("breakdown")
class BreakdownCheck(TrustCheck):
    """Instance profiles (cause vs same-class distractors) and class profiles split by target group."""

    description = "causal instance vs same-class distractors, and class profiles per target group"
    tables = (INSTANCE_PROFILES_TABLE, TARGET_PROFILES_TABLE)

    def evaluate(self, context: EvaluationContext, options: NoOptions) -> CheckResult:
        """Tables instance_profiles and target_profiles; an empty summary and no criteria."""
        rows, grouped = breakdown_rows(context)
        if rows.empty:
            log.info(
                "breakdown: no evaluated image has a causal instance with instance ids; no instance rows"
            )
        return CheckResult(
            tables={
                INSTANCE_PROFILES_TABLE.name: instance_profiles(rows, context.n_resamples, context.seed),
                TARGET_PROFILES_TABLE.name: target_profiles(grouped, context.n_resamples, context.seed),
            },
            summary=pd.DataFrame(columns=list(SUMMARY_COLUMNS)),
        )
