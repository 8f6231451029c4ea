"""The main job end to end (`gradsum run`), configured by a YAML run config."""

from __future__ import annotations

from gradsum.evaluation.planned import PlannedMethod
from gradsum.pipeline.config import (
    FinetuneConfig,
    GenerateConfig,
    ModelConfig,
    RunConfig,
    TrainingSetConfig,
    TruthSetConfig,
    config_from_dict,
    default_config,
    list_configs,
    load_config,
    with_overrides,
)
from gradsum.pipeline.run import run

__all__ = [
    "FinetuneConfig",
    "GenerateConfig",
    "ModelConfig",
    "PlannedMethod",
    "RunConfig",
    "TrainingSetConfig",
    "TruthSetConfig",
    "config_from_dict",
    "default_config",
    "list_configs",
    "load_config",
    "run",
    "with_overrides",
]
