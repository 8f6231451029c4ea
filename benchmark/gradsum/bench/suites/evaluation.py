"""Trust-check cost: each registered check's seconds as a ratio to one attribution pass on the same images.

One attribution pass computes every planned map (GradCAM and the null explainers, as the default run
plans them; the known-answer controls left out, since they are read from the causal referee's effects)
once for every evaluated image and model, reading the images included: the work profiling those images
costs. The checks run with the controls planned, as the default run does, so the causal check's ratio
includes the placebo re-renders (one more render and forward per erased class) and the controls' maps.
The verdict (`trust_table` over every check's result, one shared set of bootstrap counts per model) is
timed on its own. Each check then runs once on a fresh context (no cache shared, so the granularity
sweep pays for its own causal effects) with the default run's options. The models are untrained
default architectures (the cost does not depend on the weights); the images are the test split of a
synthetic truth set generated into a temporary folder, so every check has its causes and cause masks.
Every figure comes in wall-clock seconds and in this process's CPU seconds, which other load on a shared
machine disturbs less.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradsum.bench import BenchSuite, timeit
from gradsum.evaluation import CHECKS, CheckResult, EvaluationContext
from gradsum.evaluation.base import CONTROL
from gradsum.evaluation.checks.causal import CausalCheck
from gradsum.evaluation.checks.granularity import LAYERS, GranularityCheck, GranularityOptions
from gradsum.evaluation.checks.localisation import LocalisationCheck
from gradsum.evaluation.checks.perturbation import ORDERS, PerturbationCheck, PerturbationOptions, road_inputs
from gradsum.evaluation.checks.sanity import SanityCheck, SanityOptions
from gradsum.evaluation.planned import PlannedMethod
from gradsum.evaluation.verdicts import trust_table
from gradsum.models import model_family
from gradsum.models.checkpoints import card_for
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import RunConfig, default_config
from gradsum.pipeline.inputs import configured_spec
from gradsum.pipeline.trust import evaluation_context
from gradsum.registry import Registry
from gradsum.truthsets import TruthSet, open_truthset
from gradsum.truthsets.layout import SPLITS
from gradsum.truthsets.synthetic import generate
from gradsum.truthsets.synthetic.writer import DEFAULT_SIZE


@dataclass(frozen=True)
class Scale:
    """How much the suite measures: images, models (names of the default run's), repeats, option changes."""

    images: int
    models: tuple[str, ...]
    #: the attribution pass is the minimum over this many runs (checks and ROAD imputations run once)
    repeats: int
    #: check name → options replacing the default run's (quick mode only)
    options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    #: check name → why this scale does not run it
    skipped: Mapping[str, str] = dataclasses.field(default_factory=dict)


FULL = Scale(64, ("pilotnet", "vit", "hybrid_vit", "compact_cnn"), repeats=2)
# ROAD imputes for seconds per image × map, so quick mode imputes one image at one fraction
QUICK = Scale(
    4,
    ("pilotnet", "compact_cnn"),
    repeats=1,
    options={PerturbationCheck.name: {"max_images": 1, "fractions": [0.5]}},
    skipped={GranularityCheck.name: "quick mode: the sweep attributes at every layer"},
)


def _truthset(folder: Path, images: int, seed: int, split: str) -> TruthSet:
    """A synthetic set whose `split` holds `images` scenes and the other two splits one each."""
    count = images + len(SPLITS) - 1
    fractions = tuple((images if name == split else 1) / count for name in SPLITS)
    # the tint splits re-render the test scenes: the shortcut check reads them
    root = generate(
        folder / "synthetic", count, seed=seed, size=DEFAULT_SIZE, splits=fractions, decorrelated=True
    )
    return open_truthset(root, split)


def _models(config: RunConfig, names: tuple[str, ...], device: str) -> list[LoadedModel]:
    """Untrained models of the default run's entries `names`, in eval mode on `device`."""
    entries = {entry.name: entry for entry in config.models}
    models = []
    for name in names:
        spec = configured_spec(entries[name])
        assert spec is not None, f"the default run's model {name} names a spec"
        torch.manual_seed(config.seed)
        module = spec.build().to(device).eval()
        models.append(LoadedModel(name, module, card_for(spec).to_dict(), spec.task, spec.img_size))
    return models


def _run_config(scale: Scale) -> RunConfig:
    """The default run with GradCAM as its only method and the scale's image count and option changes."""
    config = default_config()
    options = {name: dict(values) for name, values in config.evaluation.options.items()}
    for name, values in scale.options.items():
        options.setdefault(name, {}).update(values)
    evaluation = dataclasses.replace(config.evaluation, images=scale.images, options=options)
    return dataclasses.replace(config, methods=(PlannedMethod("gradcam"),), evaluation=evaluation)


def attribution_pass(context: EvaluationContext) -> int:
    """Every planned map of every model once over the context's images; returns the number of maps."""
    count = 0
    for _, images, labels, _ in context.batches():
        label_tensor = torch.from_numpy(np.stack(labels).astype(np.int64)).to(context.device)
        for model in context.models:
            batch = context.model_input(model, images)
            for planned in context.plan.get(model.name, ()):
                count += int(context.maps(model, planned, batch, label_tensor).shape[0])
    return count


def _maps_per_image(context: EvaluationContext) -> int:
    return sum(len(context.plan.get(model.name, ())) for model in context.models)


def _perturbation_options(context: EvaluationContext) -> PerturbationOptions:
    options: PerturbationOptions = PerturbationCheck().options(context)
    return options


#: check name → (its context, its result) → the settings that make its seconds readable
Settings = Callable[[EvaluationContext, CheckResult], dict[str, Any]]
SETTINGS: Registry[Settings] = Registry("check settings")


def _causal(context: EvaluationContext, result: CheckResult) -> dict[str, Any]:
    # every model reads the same erased images, so an erasure is one image × class
    effects = result.tables["causal_effects"]
    erasures = effects.drop_duplicates(["image", "class_id"])
    return {
        "images": len(context.indices),
        # each erased image × class is also re-rendered with its texture redrawn: the materiality placebo
        "placebos": int(
            effects.dropna(subset=["placebo_output"]).drop_duplicates(["image", "class_id"]).shape[0]
        ),
        "filler": CausalCheck().options(context).filler,
        "erasures": len(erasures),
        "erasure_domains": {str(k): int(v) for k, v in erasures["domain"].value_counts().items()},
        "bootstrap_resamples": context.n_resamples,
    }


def _sanity(context: EvaluationContext, result: CheckResult) -> dict[str, Any]:
    options: SanityOptions = SanityCheck().options(context)
    return {
        "images": len(context.indices),
        "blocks": "all" if options.blocks is None else options.blocks,
        "independent": options.independent,
        "maps_per_image": _maps_per_image(context),
        "bootstrap_resamples": context.n_resamples,
    }


def _perturbation(context: EvaluationContext, result: CheckResult) -> dict[str, Any]:
    options = _perturbation_options(context)
    images = (
        len(context.indices) if options.max_images is None else min(options.max_images, len(context.indices))
    )
    return {
        "images": images,
        "max_images": options.max_images,
        "fractions": list(options.fractions),
        "orders": [order.name for order in ORDERS],
        "imputations": images * _maps_per_image(context) * len(ORDERS) * len(options.fractions),
        "bootstrap_resamples": context.n_resamples,
    }


def _localisation(context: EvaluationContext, result: CheckResult) -> dict[str, Any]:
    tasks = sorted({model.task for model in context.models})
    masked = {
        task: sum(context.truthset.cause_mask(i, task) is not None for i in context.indices) for task in tasks
    }
    return {"images": len(context.indices), "images_with_cause_mask": masked}


def _granularity(context: EvaluationContext, result: CheckResult) -> dict[str, Any]:
    options: GranularityOptions = GranularityCheck().options(context)
    layers = {m.name: len(LAYERS.get(model_family(m.module))(m.module)) for m in context.models}
    return {
        "images": len(context.indices),
        "methods": list(options.methods),
        "layers": layers,
        "maps_per_image": len(options.methods) * sum(layers.values()),
        "causal_effects": "recomputed (fresh context)",
    }


SETTINGS.add(CausalCheck.name, _causal)
SETTINGS.add(SanityCheck.name, _sanity)
SETTINGS.add(PerturbationCheck.name, _perturbation)
SETTINGS.add(LocalisationCheck.name, _localisation)
SETTINGS.add(GranularityCheck.name, _granularity)


def _settings(name: str, context: EvaluationContext, result: CheckResult) -> dict[str, Any]:
    # a check registered after this suite was written still reports its images and options
    if name in SETTINGS:
        return SETTINGS.get(name)(context, result)
    return {"images": len(context.indices), "options": dict(context.options.get(name, {}))}


@dataclass(frozen=True)
class Timing:
    """Fewest wall-clock seconds (`gradsum.bench.timeit`) and fewest CPU seconds of this process."""

    seconds: float
    cpu_seconds: float

    def ratios(self, unit: Timing) -> dict[str, float]:
        """This timing's figures with their ratios to `unit`'s."""
        return {
            "seconds": self.seconds,
            "ratio_to_attribution_pass": self.seconds / unit.seconds,
            "cpu_seconds": self.cpu_seconds,
            "cpu_ratio_to_attribution_pass": self.cpu_seconds / unit.cpu_seconds,
        }


def measure(fn: Callable[[], Any], repeats: int, warmup: int) -> Timing:
    """`timeit` of `fn`, with the fewest CPU seconds this process spent in the same measured runs."""
    cpu: list[float] = []

    def timed() -> None:
        start = time.process_time()
        fn()
        cpu.append(time.process_time() - start)

    seconds = timeit(timed, repeats=repeats, warmup=warmup)
    return Timing(seconds, min(cpu[warmup:]))


def _time_check(
    name: str, fresh: Callable[[], EvaluationContext]
) -> tuple[Timing, dict[str, Any], CheckResult]:
    """Timing of one run of check `name` on a fresh context, its settings and its result."""
    context = fresh()
    results: list[CheckResult] = []
    timing = measure(lambda: results.append(CHECKS.get(name)().run(context)), repeats=1, warmup=0)
    return timing, _settings(name, context, results[0]), results[0]


def _road(context: EvaluationContext) -> dict[str, Any]:
    """Seconds of `road_inputs` on the first image with each planned map of the first model.

    One entry per map: the imputation solves a sparse system over the removed pixels, so its cost
    depends on how they clump (a smooth CAM removes blobs, the random map scattered pixels).
    """
    options = _perturbation_options(context)
    model = context.models[0]
    _, images, labels, _ = next(context.batches(1))
    batch = context.model_input(model, images)
    label_tensor = torch.from_numpy(np.stack(labels).astype(np.int64)).to(context.device)
    imputations = len(ORDERS) * len(options.fractions)
    per_map = {}
    for method in context.plan[model.name]:
        relevance = context.maps(model, method, batch, label_tensor)[0].detach()
        impute = partial(road_inputs, batch[0], relevance, options.fractions, options.noise)
        timing = measure(impute, repeats=1, warmup=0)
        per_map[method.name] = {
            "seconds_per_image_map": timing.seconds,
            "cpu_seconds_per_image_map": timing.cpu_seconds,
            "seconds_per_imputation": timing.seconds / imputations,
        }
    return {
        "image_size": list(batch.shape[-2:]),
        "model": model.name,
        "fractions": list(options.fractions),
        "imputations_per_image_map": imputations,
        "maps": per_map,
        "timing": "wall and CPU: one run per map (each takes seconds), no warm-up",
    }


def _imputation_share(road: dict[str, Any], perturbation: dict[str, Any], models: int) -> dict[str, float]:
    """Estimated share of the perturbation check spent imputing, taking the first model's per-map costs
    for every model on each of the check's images."""
    maps = road["maps"].values()
    image_maps = perturbation["images"] * models
    return {
        "share_of_perturbation_check_estimate": image_maps
        * sum(m["seconds_per_image_map"] for m in maps)
        / perturbation["seconds"],
        "cpu_share_of_perturbation_check_estimate": image_maps
        * sum(m["cpu_seconds_per_image_map"] for m in maps)
        / perturbation["cpu_seconds"],
    }


def _run(quick: bool, device: str) -> dict[str, Any]:
    scale = QUICK if quick else FULL
    config = _run_config(scale)
    with tempfile.TemporaryDirectory() as tmp:
        truthset = _truthset(Path(tmp), scale.images, config.seed, config.truthset.split or "test")
        models = _models(config, scale.models, device)

        def fresh() -> EvaluationContext:
            return evaluation_context(config, truthset, models, device, len(truthset))

        context = fresh()
        unit_plan = {name: [m for m in plan if m.role != CONTROL] for name, plan in context.plan.items()}
        unit_context = dataclasses.replace(context, plan=unit_plan)
        maps: list[int] = []
        unit = measure(lambda: maps.append(attribution_pass(unit_context)), repeats=scale.repeats, warmup=1)
        checks: dict[str, Any] = {}
        results: dict[str, CheckResult] = {}
        for name in CHECKS.names():
            if name in scale.skipped:
                checks[name] = {"skipped": scale.skipped[name]}
                continue
            timing, settings, results[name] = _time_check(name, fresh)
            checks[name] = {**timing.ratios(unit), **settings}
        roles = {m.name: m.role for plan in context.plan.values() for m in plan}
        verdict = measure(
            lambda: trust_table(results, roles, context.n_resamples, context.seed), repeats=1, warmup=0
        )
        road = _road(unit_context)
    perturbation = checks.get(PerturbationCheck.name, {})
    if "seconds" in perturbation:
        road.update(_imputation_share(road, perturbation, len(models)))
    return {
        "images": scale.images,
        "image_size": list(DEFAULT_SIZE),
        "models": {m.name: f"{m.card['spec']['architecture']} ({m.task}, untrained)" for m in models},
        "plan": [m.name for m in context.plan[models[0].name]],
        "targets": dict(config.targets),
        "batch_size": config.batch_size,
        "attribution_pass": {
            "seconds": unit.seconds,
            "cpu_seconds": unit.cpu_seconds,
            "maps": maps[0],
            "timing": f"wall and CPU: minimum of {scale.repeats} run(s) after one warm-up run; "
            "image reading included",
        },
        "checks": checks,
        "verdicts": {**verdict.ratios(unit), "criteria": sum(len(r.criteria) for r in results.values())},
        "check_timing": "wall and CPU: one run each on a fresh context (no shared cache), "
        "after the attribution pass",
        "option_changes": {name: dict(values) for name, values in scale.options.items()},
        "road_imputation": road,
    }


SUITE = BenchSuite(
    "evaluation", "each trust check's seconds as a ratio to one attribution pass; one ROAD imputation", _run
)
