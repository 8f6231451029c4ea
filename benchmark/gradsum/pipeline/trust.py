"""The pipeline's evaluation stage: the configured trust checks on the first images of the split."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from gradsum.evaluation.base import EvaluationContext, PlannedMethod
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.trust import TrustReport
from gradsum.fileio import atomic_write_text
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import RunConfig
from gradsum.pipeline.inputs import ensure_model, methods_for
from gradsum.truthsets import TruthSet


def planned_methods(model: LoadedModel, config: RunConfig) -> list[PlannedMethod]:
    """The run's methods for `model` as the checks call them, the null explainers after them."""
    planned = [
        PlannedMethod(
            m.name,
            m.method,
            m.layer,
            m.normalise or config.normalise,
            dict(m.options),
            postprocess=m.postprocess,
        )
        for m in methods_for(model, config.methods)
    ]
    return planned + list(NULL_EXPLAINERS) if config.evaluation.nulls else planned


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


def evaluation_context(
    config: RunConfig,
    truthset: TruthSet,
    models: list[LoadedModel],
    device: str,
    count: int,
    twins: Mapping[str, LoadedModel] | None = None,
) -> EvaluationContext:
    """The context every check reads: the first `evaluation.images` of the `count` profiled images."""
    settings = config.evaluation
    options = {name: dict(values) for name, values in settings.options.items()}
    if twins:
        options.setdefault("sanity", {})["shuffled"] = dict(twins)
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
    """Write every table of `report` as `<name>.csv` into `folder`."""
    written = []
    for name, table in report.tables().items():
        written.append(atomic_write_text(folder / f"{name}.csv", table.to_csv(index=False)))
    return written
