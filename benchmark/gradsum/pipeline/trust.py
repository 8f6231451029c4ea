"""The pipeline's evaluation stage: the configured trust checks on the first images of the split."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gradsum.contract import table_schema, write_table
from gradsum.errors import SpecError
from gradsum.evaluation.base import EvaluationContext, PlannedMethod
from gradsum.evaluation.controls import CONTROL_EXPLAINERS
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.trust import TrustReport
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import ModelConfig, RunConfig
from gradsum.pipeline.inputs import configured_spec, ensure_model, methods_for
from gradsum.truthsets import TruthSet


def planned_methods(model: LoadedModel, config: RunConfig) -> list[PlannedMethod]:
    """The run's methods for `model` as the checks call them, the known-answer controls and the null
    explainers after them."""
    planned = [
        dataclasses.replace(m, normalise=m.normalise or config.normalise)
        for m in methods_for(model, config.methods)
    ]
    nulls = list(NULL_EXPLAINERS) if config.evaluation.nulls else []
    controls = list(CONTROL_EXPLAINERS) if config.evaluation.controls else []
    return planned + controls + nulls


#: The suffix of a shuffled-label twin's model name and checkpoint folder.
SHUFFLED_SUFFIX = "_shuffled"


def shuffled_twins(
    config: RunConfig, truthset_root: Path, device: str, train: bool = True
) -> dict[str, LoadedModel]:
    """Each `evaluation.shuffled_labels` model's twin trained on permuted labels, trained when missing."""
    entries = {entry.name: entry for entry in config.models}
    twins = {}
    for name in config.evaluation.shuffled_labels:
        entry = dataclasses.replace(entries[name], name=f"{name}{SHUFFLED_SUFFIX}", checkpoint=None)
        twins[name] = ensure_model(entry, config, truthset_root, device, train=train, shuffle_labels=True)
    return twins


#: A seed twin trains with its model's training seed plus this, into `<name><SEED_SUFFIX>`.
SEED_OFFSET = 1
SEED_SUFFIX = f"_seed{SEED_OFFSET}"


def seed_twin_entry(
    entry: ModelConfig, offset: int = SEED_OFFSET, field: str = "evaluation.seed_twins"
) -> ModelConfig:
    """The entry of `entry`'s seed twin: the same spec, overrides and training set, the training seed +
    `offset`, in its own folder (`<models_dir>/<name>_seed<offset>`; `field` names the setting that asked
    for it in the error for an entry without a spec)."""
    spec = configured_spec(entry)
    if spec is None:
        raise SpecError(f"{field}: models[{entry.name}] has no spec to train a seed twin from")
    train = {**entry.overrides.get("train", {}), "seed": spec.train.seed + offset}
    overrides = {**entry.overrides, "train": train}
    return dataclasses.replace(entry, name=f"{entry.name}_seed{offset}", checkpoint=None, overrides=overrides)


def seed_twins(
    config: RunConfig, truthset_root: Path, device: str, train: bool = True
) -> dict[str, LoadedModel]:
    """Each `evaluation.seed_twins` model's twin trained with another seed, trained when missing (as
    `shuffled_twins`): the sanity check's ceiling."""
    entries = {entry.name: entry for entry in config.models}
    return {
        name: ensure_model(seed_twin_entry(entries[name]), config, truthset_root, device, train=train)
        for name in config.evaluation.seed_twins
    }


def evaluation_settings(
    config: RunConfig, twins: Mapping[str, LoadedModel], seeds: Mapping[str, LoadedModel]
) -> dict[str, Any]:
    """What a finished check depends on beyond the work folder's fingerprint (which pins the images,
    models, methods and targets): the evaluation settings and the sanity check's twins' weights."""
    return {
        "evaluation": dataclasses.asdict(config.evaluation),
        "shuffled_twins": {name: model.card.get("weights_sha256") for name, model in twins.items()},
        "seed_twins": {name: model.card.get("weights_sha256") for name, model in seeds.items()},
    }


def evaluation_context(
    config: RunConfig,
    truthset: TruthSet,
    models: list[LoadedModel],
    device: str,
    count: int,
    twins: Mapping[str, LoadedModel] | None = None,
    seeds: Mapping[str, LoadedModel] | None = None,
) -> EvaluationContext:
    """The context every check reads: the first `evaluation.images` of the `count` profiled images.

    `twins` (shuffled-label twins, `shuffled_twins`) and `seeds` (seed twins, `seed_twins`) reach the
    sanity check as its `shuffled` and `twins` options.
    """
    settings = config.evaluation
    options = {name: dict(values) for name, values in settings.options.items()}
    if twins:
        options.setdefault("sanity", {})["shuffled"] = dict(twins)
    if seeds:
        options.setdefault("sanity", {})["twins"] = dict(seeds)
    return EvaluationContext(
        truthset=truthset,
        indices=range(min(settings.images, count)),
        models=models,
        plan={m.name: planned_methods(m, config) for m in models},
        targets=dict(config.targets),
        device=device,
        seed=config.seed,
        batch_size=config.batch_size,
        n_resamples=settings.bootstrap_resamples,
        resolution=config.resolution,
        options=options,
    )


def write_trust_tables(folder: Path, report: TrustReport) -> list[Path]:
    """Write every table of `report` into `folder`, each as its schema says (`contract.table_schema`)."""
    return [write_table(folder, table_schema(name), table) for name, table in report.tables().items()]
