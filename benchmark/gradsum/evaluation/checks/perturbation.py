"""Faithfulness by ROAD: impute a map's most (MoRF) or least (LeRF) relevant pixels and watch the output.

Removal is ROAD's noisy linear imputation (Rong et al. 2022, arXiv 2202.00449) as pytorch-grad-cam ships
it: `RemoveMostRelevantFirst` / `RemoveLeastRelevantFirst` around its `NoisyLinearImputer`'s system and
noise, solved fast by `gradsum.evaluation.imputation.FastNoisyLinearImputer`, which fills the
removed pixels from their neighbours instead of painting them black, so the perturbed image stays close
to the data and the mask's shape leaks little. For each fraction f the perturbation removes the pixels at
or above the `100·(1−f)` percentile of a tie-free priority map (about f·H·W pixels): equal map values are
put in a seeded random order shared by both removal orders, so a constant map removes the same pixels
MoRF and LeRF and its gap is exactly zero.

Curves hold the measure at x = 0 (the unperturbed image) and at each fraction; an AUC is the trapezoid
rule over x = 0, f_1, …, f_k as fractions of the image (Chefer et al.'s `np.trapz(curve, x)` without
their ×100; with the default fractions x runs to 0.9, so an AUC lies in [0, 0.9·max]). Deletion AUC is
the MoRF curve's, insertion AUC the LeRF curve's. The ROAD gap says how much more the MoRF removal moves
the output than the LeRF removal, in the direction a faithful map moves it: steering reads |Δy|
(gap = deletion − insertion), obstacle reads the explained logit s·y and the accuracy of the decision
against the truth set's label (gap = insertion − deletion, as removing evidence lowers them). Higher is
better; a map that orders pixels no better than chance has a gap near zero.

Imputation solves one sparse system per image × fraction × order on the CPU (≈5–50 ms at 96×192),
once per map; option `max_images` bounds the cost.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from scipy.integrate import trapezoid
from torch import Tensor

from gradsum.aggregation.profiles import mean_ci
from gradsum.attribution.targets import resolve_target
from gradsum.errors import SpecError
from gradsum.evaluation.base import (
    CheckResult,
    Criterion,
    EvaluationContext,
    TrustCheck,
    check_table,
    register_check,
)
from gradsum.evaluation.imputation import FastNoisyLinearImputer, Imputer
from gradsum.models.loaded import LoadedModel
from gradsum.taxonomy import TaskRegistry
from gradsum.truthsets import TruthSet

log = logging.getLogger(__name__)

#: Columns of `perturbation.csv` (one row per model × method × order × fraction × measure), in order.
CURVE_COLUMNS = ("model", "method", "order", "fraction", "measure", "mean", "ci_low", "ci_high", "n_images")
#: The per-image figures `perturbation_auc.csv` summarises, each with its `_ci_low` and `_ci_high`.
AUC_FIGURES = ("deletion_auc", "insertion_auc", "road_gap")
AUC_COLUMNS = (
    "model",
    "method",
    "measure",
    *(f"{f}{s}" for f in AUC_FIGURES for s in ("", "_ci_low", "_ci_high")),
    "n_images",
)
SUMMARY_COLUMNS = ("model", "method", "road_gap", "road_gap_ci_low", "road_gap_ci_high")


@dataclass(frozen=True)
class Order:
    """A removal order and the pytorch-grad-cam perturbation that removes the highest priority first."""

    name: str
    perturbation: type[RemoveMostRelevantFirst]
    #: +1: the highest map values go first (MoRF); −1: the lowest (LeRF)
    direction: float


ORDERS = (
    Order("morf", RemoveMostRelevantFirst, 1.0),
    # pytorch-grad-cam's LeRF removes the lowest values of its map first, so its priority is negated
    Order("lerf", RemoveLeastRelevantFirst, -1.0),
)


def removal_priority(relevance: np.ndarray, keys: np.ndarray, order: Order) -> Tensor:
    """A tie-free (H,W) map whose removal order under `order.perturbation` is the map's, ties by `keys`.

    `keys` is a permutation of the H·W pixels; equal relevance values go in ascending key order for
    both removal orders.
    """
    flat = relevance.astype(np.float64).ravel()
    sequence = np.lexsort((keys, -order.direction * flat))
    ranks = np.empty(flat.size, dtype=np.float64)
    ranks[sequence] = np.arange(flat.size, 0, -1)
    return torch.from_numpy(order.direction * ranks).view(relevance.shape)


def remove(
    image: Tensor, priority: Tensor, fraction: float, order: Order, imputer: Imputer, seed: int
) -> Tensor:
    """`image` (3,H,W) on the CPU with a `fraction` of its pixels imputed in `order`; the noise is seeded."""
    # rounding keeps 100·(1 − 0.7) from landing a hair above 30, which would remove one pixel fewer
    percentile = round(100.0 * (1.0 - fraction), 9)
    # the imputer draws from the global CPU generator; seed it inside a fork so callers' streams stay put
    # (torch.manual_seed would also queue a CUDA seed, which costs more than a small imputation)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        perturbed: Tensor = order.perturbation(percentile, imputer)(image, priority)
    return perturbed


def road_inputs(
    image: Tensor, relevance: Tensor, fractions: Sequence[float], noise: float = 0.01, seed: int = 0
) -> dict[str, Tensor]:
    """Order name → (F, 3, H, W): `image` with each fraction of `relevance`'s pixels imputed, on its device.

    The tie order and the imputation noise of fraction f depend only on `seed`, so every map of an
    image, in both orders, meets the same noise.
    """
    rng = np.random.default_rng(seed)
    keys = rng.permutation(relevance.numel())
    noise_seeds = rng.integers(0, 2**31 - 1, size=len(fractions))
    imputer = FastNoisyLinearImputer(noise=noise)
    cpu_image, values = image.detach().float().cpu(), relevance.detach().float().cpu().numpy()
    result = {}
    for order in ORDERS:
        priority = removal_priority(values, keys, order)
        perturbed = [
            remove(cpu_image, priority, f, order, imputer, int(s))
            for f, s in zip(fractions, noise_seeds, strict=True)
        ]
        result[order.name] = torch.stack(perturbed).to(image.device)
    return result


def trapezoid_auc(curves: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """(N,) areas under (N, 1+F) curves whose first column is the unperturbed value (x = 0)."""
    return np.asarray(trapezoid(curves, x=[0.0, *fractions], axis=1), dtype=np.float64)


#: (outputs (B, 1+F) with column 0 unperturbed, signs of the explained target (B,), labels (B,)) → (B, 1+F);
#: labels are NaN where the truth set has none, and then the measures needing them are skipped
MeasureFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Measure:
    """What a curve reads off the outputs, and which way a faithful map moves it."""

    name: str
    value: MeasureFn
    #: road_gap = gap_sign · (deletion AUC − insertion AUC): +1 where removing evidence raises the measure
    gap_sign: float
    needs_labels: bool = False


@dataclass(frozen=True)
class TaskMeasures:
    """A task's measures; `headline` names the one whose ROAD gap is the check's summary."""

    measures: tuple[Measure, ...]
    headline: str


def _abs_change(outputs: Tensor, signs: Tensor, labels: Tensor) -> Tensor:
    return (outputs - outputs[:, :1]).abs()


def _target_logit(outputs: Tensor, signs: Tensor, labels: Tensor) -> Tensor:
    return outputs * signs[:, None]


def _accuracy(outputs: Tensor, signs: Tensor, labels: Tensor) -> Tensor:
    # the decision and the label as training scores them (gradsum.models.tasks.binary_metrics)
    return ((outputs > 0) == (labels[:, None] > 0.5)).float()


TASK_MEASURES: TaskRegistry[TaskMeasures] = TaskRegistry("perturbation task")
TASK_MEASURES.add("steering", TaskMeasures((Measure("abs_change", _abs_change, 1.0),), "abs_change"))
TASK_MEASURES.add(
    "obstacle",
    TaskMeasures(
        (
            Measure("target_logit", _target_logit, -1.0),
            Measure("accuracy", _accuracy, -1.0, needs_labels=True),
        ),
        "target_logit",
    ),
)


@dataclass(frozen=True)
class PerturbationOptions:
    """The check's options (run config `evaluation.options.perturbation`)."""

    fractions: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(1, 10))
    #: the first images of the evaluated ones that are perturbed (None: all); imputation is the cost
    max_images: int | None = 16
    #: the imputer's noise (ROAD's default), absolute in [0, 1] pixel units
    noise: float = 0.01

    def __post_init__(self) -> None:
        steps = np.asarray(self.fractions, dtype=np.float64)
        if steps.size == 0 or np.any(steps <= 0) or np.any(steps >= 1) or np.any(np.diff(steps) <= 0):
            raise SpecError(
                f"evaluation.options.perturbation: field 'fractions' needs increasing values in (0, 1), "
                f"got {self.fractions}"
            )
        if self.max_images is not None and self.max_images < 1:
            raise SpecError(
                f"evaluation.options.perturbation: field 'max_images' needs at least 1, got {self.max_images}"
            )


def _labels(truthset: TruthSet, task: str) -> np.ndarray | None:
    """The truth set's values of `task` for every sample, or None where it has none (no accuracy then)."""
    return truthset.targets(task) if task in truthset.tasks else None


def _outputs(model: LoadedModel, inputs: Tensor, batch_size: int) -> Tensor:
    """(N,) model outputs of N perturbed inputs, forwarded `batch_size` at a time."""
    return torch.cat([model.predict(chunk) for chunk in inputs.split(batch_size)])


#: (model, method label, measure, order) → per-image curves (B, 1+F) of every batch
Curves = dict[tuple[str, str, str, str], list[np.ndarray]]


def _perturb_model(
    context: EvaluationContext, model: LoadedModel, options: PerturbationOptions
) -> tuple[Curves, list[str]]:
    """The curves of every planned method of `model` over the context's images, and the images' ids in
    curve order."""
    task = TASK_MEASURES.get(model.task, "task")
    target = resolve_target(context.targets.get(model.task), model.task)
    all_labels = _labels(context.truthset, model.task)
    measures = [m for m in task.measures if all_labels is not None or not m.needs_labels]
    curves: Curves = defaultdict(list)
    scored: list[str] = []
    for ids, images, labels, chunk in context.batches():
        scored.extend(ids)
        batch = context.model_input(model, images)
        original = model.predict(batch)
        signs = target.signs(original).cpu()
        truth = (
            torch.full((len(chunk),), float("nan"))
            if all_labels is None
            else torch.from_numpy(np.asarray(all_labels[chunk], dtype=np.float32))
        )
        label_tensor = torch.from_numpy(np.stack(labels)).to(context.device)
        for method in context.plan.get(model.name, ()):
            maps = context.maps(model, method, batch, label_tensor, ids, chunk).detach()
            per_image = [
                road_inputs(batch[b], maps[b], options.fractions, options.noise, seed=_image_seed(context, i))
                for b, i in enumerate(chunk)
            ]
            for order in ORDERS:
                inputs = torch.cat([p[order.name] for p in per_image])
                after = _outputs(model, inputs, context.batch_size).view(len(chunk), -1)
                full = torch.cat([original[:, None], after], 1).cpu()
                for measure in measures:
                    key = (model.name, method.name, measure.name, order.name)
                    curves[key].append(measure.value(full, signs, truth).numpy())
    return dict(curves), scored


def _image_seed(context: EvaluationContext, index: int) -> int:
    """One seed per run seed × truth-set index, so every model and method meets the same noise."""
    return int(np.random.SeedSequence([context.seed, index]).generate_state(1)[0])


def _interval_columns(name: str, values: np.ndarray, rng: np.random.Generator, n: int) -> dict[str, float]:
    mean, low, high = mean_ci(values, rng, n)
    return {name: mean, f"{name}_ci_low": low, f"{name}_ci_high": high}


def _tables(
    context: EvaluationContext, curves: Curves, fractions: Sequence[float], scored: Mapping[str, list[str]]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The curve table, the AUC table, the summary and the headline measure's per-image ROAD gap."""
    rng = np.random.default_rng(context.seed)
    xs = [0.0, *fractions]
    curve_rows, auc_rows, summary_rows = [], [], []
    per_image: list[pd.DataFrame] = []
    for model in context.models:
        task = TASK_MEASURES.get(model.task, "task")
        for method in context.plan.get(model.name, ()):
            for measure in task.measures:
                stacked = {
                    o.name: np.concatenate(curves[(model.name, method.name, measure.name, o.name)])
                    for o in ORDERS
                    if curves.get((model.name, method.name, measure.name, o.name))
                }
                if len(stacked) != len(ORDERS):
                    continue
                for order, values in stacked.items():
                    for step, x in enumerate(xs):
                        mean, low, high = mean_ci(values[:, step], rng, context.n_resamples)
                        curve_rows.append(
                            (model.name, method.name, order, x, measure.name, mean, low, high, len(values))
                        )
                deletion = trapezoid_auc(stacked["morf"], fractions)
                insertion = trapezoid_auc(stacked["lerf"], fractions)
                figures = {
                    "deletion_auc": deletion,
                    "insertion_auc": insertion,
                    "road_gap": measure.gap_sign * (deletion - insertion),
                }
                row: dict[str, Any] = {"model": model.name, "method": method.name, "measure": measure.name}
                for name, values in figures.items():
                    row.update(_interval_columns(name, values, rng, context.n_resamples))
                row["n_images"] = len(deletion)
                auc_rows.append(row)
                if measure.name == task.headline:
                    summary_rows.append({k: row[k] for k in SUMMARY_COLUMNS})
                    gaps = {"image": scored[model.name], "road_gap": figures["road_gap"]}
                    per_image.append(pd.DataFrame({"model": model.name, "method": method.name, **gaps}))
    return (
        pd.DataFrame(curve_rows, columns=list(CURVE_COLUMNS)),
        pd.DataFrame(auc_rows, columns=list(AUC_COLUMNS)),
        pd.DataFrame(summary_rows, columns=list(SUMMARY_COLUMNS)),
        pd.concat(per_image, ignore_index=True)
        if per_image
        else pd.DataFrame(columns=["model", "method", "image", "road_gap"]),
    )


#: The verdict's figure: the ROAD gap per image (0 is chance: a map that orders pixels at random moves
#: the output alike under both removal orders).
PERTURBATION_CRITERION = Criterion(
    "perturbation",
    "road_gap",
    higher_is_better=True,
    threshold=0.0,
    text=(
        "ROAD gap above 0 and above the gating nulls, paired: imputing the map's most relevant pixels first "
        "moves the output more than imputing its least relevant first (steering |Δy|, obstacle the explained "
        "logit)"
    ),
)


CURVE_TABLE = check_table("perturbation", CURVE_COLUMNS, text=("order", "measure"), ints=("n_images",))
AUC_TABLE = check_table("perturbation_auc", AUC_COLUMNS, text=("measure",), ints=("n_images",))


@register_check("perturbation")
class PerturbationCheck(TrustCheck):
    """ROAD deletion and insertion of every planned method's maps, null explainers included."""

    Options = PerturbationOptions
    tables = (CURVE_TABLE, AUC_TABLE)
    description = (
        "ROAD: impute the most / least relevant pixels first (noisy linear imputation); "
        "a faithful map moves the output more under MoRF than under LeRF"
    )

    def evaluate(self, context: EvaluationContext, options: PerturbationOptions) -> CheckResult:
        """Curves per fraction, AUCs and the ROAD gap per model × method, with bootstrap intervals."""
        indices = list(context.indices)
        if options.max_images is not None and len(indices) > options.max_images:
            log.info("perturbation: imputing the first %d of %d images", options.max_images, len(indices))
            indices = indices[: options.max_images]
        subset = replace(context, indices=indices)
        curves: Curves = {}
        scored: dict[str, list[str]] = {}
        for model in context.models:
            # a model's curves are its share of the work: a killed run resumes after the last finished one
            found, scored[model.name] = subset.part(
                self.name, model.name, functools.partial(_perturb_model, subset, model, options)
            )
            curves.update(found)
        curve_table, auc_table, summary, per_image = _tables(subset, curves, options.fractions, scored)
        return CheckResult(
            tables={CURVE_TABLE.name: curve_table, AUC_TABLE.name: auc_table},
            summary=summary,
            criteria=[PERTURBATION_CRITERION],
            per_image=per_image,
        )
