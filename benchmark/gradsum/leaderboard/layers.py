"""The CAM methods' second row: each CAM method also at the layer the granularity sweep picks.

A CAM method's default layer (the last CNN stage, the last ViT block) is a convention, and a finer layer can
see causes the last one cannot (`evaluation.checks.granularity`). So the leaderboard scores every swept CAM
method twice, both rows labelled: at its default layer (`gradcam`) and at the layer the sweep picks
(`gradcam@swept`). The pick is made per trained model on images of another split than the evaluated one
(the protocol's `layer_sweep`: the validation split), so the layer is never chosen on the images that then
judge it: the layer with the highest Spearman agreement of its class profile with the causal profile, ties
and undefined agreements going to the deeper layer (the default's side).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gradsum.contract import write_table
from gradsum.evaluation.checks.granularity import (
    DEFAULT_METHODS,
    GRANULARITY_TABLE,
    GranularityOptions,
    granularity_table,
)
from gradsum.evaluation.planned import PlannedMethod
from gradsum.leaderboard.protocol import LayerSweep, Protocol
from gradsum.pipeline import RunConfig
from gradsum.pipeline.config import EvaluationConfig
from gradsum.pipeline.inputs import ensure_model, ensure_truthset, open_configured
from gradsum.pipeline.trust import evaluation_context

log = logging.getLogger(__name__)

#: The label suffix of a CAM method's row at the swept layer (`gradcam@swept`).
SWEPT = "swept"


def swept_label(method: str) -> str:
    """The row label of `method` at the layer the sweep picks."""
    return f"{method}@{SWEPT}"


def swept_methods(protocol: Protocol) -> tuple[str, ...]:
    """The CAM methods the protocol's granularity sweep covers (its `checks.granularity.methods`)."""
    options = protocol.checks.get("granularity")
    if options is None:
        return ()
    return tuple(options.get("methods", DEFAULT_METHODS))


def pick_layers(table: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Model → method → the picked layer, from a granularity table (`granularity.csv`'s columns).

    The highest agreement wins; ties, and layers whose agreement is undefined, go to the deeper layer.
    """
    picks: dict[str, dict[str, str]] = {}
    for (model, method), rows in table.groupby(["model", "method"], sort=True):
        best = max(
            rows.to_dict("records"),
            key=lambda row: (_finite_or_lowest(row["agreement"]), int(row["depth"])),
        )
        picks.setdefault(str(model), {})[str(method)] = str(best["layer"])
    return picks


def _finite_or_lowest(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else -math.inf


def swept_entries(
    picks: Mapping[str, Mapping[str, str]], methods: Sequence[str]
) -> tuple[PlannedMethod, ...]:
    """The swept rows as a run's methods: one per model × method, at its picked layer."""
    return tuple(
        PlannedMethod(method, label=swept_label(method), models=(model,), layer=picks[model][method])
        for model in sorted(picks)
        for method in methods
        if method in picks[model]
    )


def sweep_config(config: RunConfig, sweep: LayerSweep, methods: Sequence[str]) -> RunConfig:
    """`config` pointed at the sweep's split and image count, with the granularity check alone."""
    truthset = dataclasses.replace(config.truthset, split=sweep.split, limit=sweep.images)
    evaluation = EvaluationConfig(
        checks=("granularity",),
        images=sweep.images,
        # the causal referee's options too: the agreement is with the same causal profile the checks use
        options={
            **{name: dict(values) for name, values in config.evaluation.options.items() if name == "causal"},
            "granularity": {"methods": list(methods)},
        },
        bootstrap_resamples=config.evaluation.bootstrap_resamples,
    )
    return dataclasses.replace(config, truthset=truthset, evaluation=evaluation, methods=())


def sweep_table(config: RunConfig, sweep: LayerSweep, methods: Sequence[str], device: str) -> pd.DataFrame:
    """The granularity sweep of `config`'s models on the sweep's split (models trained when missing)."""
    swept = sweep_config(config, sweep, methods)
    root = ensure_truthset(swept)
    truthset = open_configured(swept, root)
    models = [ensure_model(entry, swept, root, device) for entry in swept.models]
    count = min(sweep.images, len(truthset))
    context = evaluation_context(swept, truthset, models, device, count)
    log.info("leaderboard: sweeping %s's CAM layers on %d %s images", config.name, count, sweep.split)
    return granularity_table(context, GranularityOptions(tuple(methods)))


def swept_rows(
    config: RunConfig, protocol: Protocol, device: str, record: Path | None = None
) -> tuple[PlannedMethod, ...]:
    """The swept rows of `config`'s trained models (`swept_entries`; none where the protocol sweeps no
    layer), to add to its methods and to those of the ladder runs that judge the same models.

    `record`, when given, is a folder that receives the sweep's table (`granularity.csv`), so the picks
    can be read beside the boards.
    """
    methods = swept_methods(protocol)
    if not methods or protocol.layer_sweep is None:
        return ()
    table = sweep_table(config, protocol.layer_sweep, methods, device)
    if record is not None:
        write_table(record, GRANULARITY_TABLE, table)
    return swept_entries(pick_layers(table), methods)
