"""Seed twins: the sanity check's ceiling, a model retrained with the training seed + 1 beside the original."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradsum.errors import SpecError
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline import config_from_dict
from gradsum.pipeline import trust as trust_stage
from gradsum.pipeline.config import ModelConfig, RunConfig
from gradsum.pipeline.inputs import configured_spec, model_folder
from gradsum.pipeline.trust import SEED_SUFFIX, evaluation_context, seed_twin_entry, seed_twins
from gradsum.truthsets import ArrayTruthSet


def run_config(evaluation: dict[str, Any], models: list[dict[str, Any]] | None = None) -> RunConfig:
    entries = models or [
        {"name": "pilotnet", "spec": "pilotnet", "overrides": {"train": {"epochs": 1}}},
        {"name": "compact_cnn", "spec": "compact_cnn"},
    ]
    return config_from_dict({"models": entries, "evaluation": evaluation, "models_dir": "/tmp/models"})


def test_the_twin_entry_trains_the_same_spec_with_the_next_seed() -> None:
    config = run_config({"seed_twins": ["pilotnet"]})
    entry = config.models[0]
    twin = seed_twin_entry(entry)
    assert twin.name == "pilotnet_seed1" == f"pilotnet{SEED_SUFFIX}"
    # the other overrides stay; the spec's seed (0 in pilotnet.yaml) moves by one
    assert twin.overrides == {"train": {"epochs": 1, "seed": 1}}
    spec, twin_spec = configured_spec(entry), configured_spec(twin)
    assert spec is not None and twin_spec is not None
    assert spec.train.seed == 0 and twin_spec.train.seed == 1
    assert twin_spec.to_dict() | {"train": None} == spec.to_dict() | {"train": None}
    assert twin_spec.train.epochs == spec.train.epochs == 1
    # its own folder beside the model's
    assert model_folder(twin, config) == Path("/tmp/models/pilotnet_seed1")


def test_a_seed_set_in_the_overrides_moves_too() -> None:
    entry = ModelConfig("p", spec="pilotnet", overrides={"train": {"seed": 5}})
    twin_spec = configured_spec(seed_twin_entry(entry))
    assert twin_spec is not None and twin_spec.train.seed == 6


def test_seed_twins_are_ensured_like_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[ModelConfig, bool, dict[str, Any]]] = []

    def fake_ensure(
        entry: ModelConfig, config: RunConfig, root: Path, device: str, **flags: Any
    ) -> LoadedModel:
        calls.append((entry, flags.pop("train"), flags))
        return LoadedModel(entry.name, None, {}, "steering", (96, 192))  # type: ignore[arg-type]

    monkeypatch.setattr(trust_stage, "ensure_model", fake_ensure)
    config = run_config({"seed_twins": ["compact_cnn", "pilotnet"]})
    twins = seed_twins(config, Path("data"), "cpu", train=False)
    assert {name: twin.name for name, twin in twins.items()} == {
        "compact_cnn": "compact_cnn_seed1",
        "pilotnet": "pilotnet_seed1",
    }
    # trained on the true labels, with the caller's train flag
    assert [(entry.name, train, flags) for entry, train, flags in calls] == [
        ("compact_cnn_seed1", False, {}),
        ("pilotnet_seed1", False, {}),
    ]
    assert seed_twins(run_config({}), Path("data"), "cpu") == {}


def test_the_context_passes_seed_twins_to_the_sanity_check() -> None:
    config = run_config({"seed_twins": ["pilotnet"], "shuffled_labels": ["pilotnet"]})
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    truthset = ArrayTruthSet(images, np.zeros((2, 8, 8), dtype=np.uint8))
    twin = LoadedModel("pilotnet_seed1", None, {}, "steering", (96, 192))  # type: ignore[arg-type]
    shuffled = LoadedModel("pilotnet_shuffled", None, {}, "steering", (96, 192))  # type: ignore[arg-type]
    context = evaluation_context(config, truthset, [], "cpu", 2, {"pilotnet": shuffled}, {"pilotnet": twin})
    assert context.options["sanity"]["twins"] == {"pilotnet": twin}
    assert context.options["sanity"]["shuffled"] == {"pilotnet": shuffled}
    # the config's own sanity options stay beside them
    assert context.options["sanity"]["blocks"] == 3


@pytest.mark.parametrize(
    ("models", "twins", "message"),
    [
        (None, ["resnet"], r"seed_twins\[0\]: unknown model 'resnet'"),
        (
            [
                {"name": "pilotnet", "spec": "pilotnet"},
                {"name": "tuned", "finetune": {"base": "pilotnet", "foreground": ["road"]}},
            ],
            ["tuned"],
            r"seed_twins\[0\]: 'tuned' is fine-tuned from 'pilotnet'.*no seed twin",
        ),
        (
            [{"name": "local", "checkpoint": "models/local"}],
            ["local"],
            "'local' has no spec to train its seed twin",
        ),
    ],
)
def test_seed_twins_name_trained_models_with_a_spec(
    models: list[dict[str, Any]] | None, twins: list[str], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        run_config({"seed_twins": twins}, models)


def test_shuffled_twins_of_a_checkpoint_without_spec_are_still_accepted() -> None:
    config = run_config({"shuffled_labels": ["local"]}, [{"name": "local", "checkpoint": "models/local"}])
    assert config.evaluation.shuffled_labels == ("local",)
