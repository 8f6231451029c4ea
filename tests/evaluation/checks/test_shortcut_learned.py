"""The shortcut check on real trained models: a PilotNet trained at rho = 0.99 on a tiny set takes the sky
tint, and the check's causal pull (no attribution involved) shows it; the same model trained fair does not."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gradsum.evaluation.base import EvaluationContext
from gradsum.evaluation.checks.shortcut import MODELS_TABLE, ShortcutCheck
from gradsum.models import ModelSpec, load_model, train_model
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import open_truthset
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)
#: 240 training scenes, 30 test scenes: the same scenes at both rho (one seed), only train tints differ
COUNT = 300
SPEC = {
    "name": "pilotnet",
    "architecture": "pilotnet",
    "task": "steering",
    "img_size": list(SIZE),
    "arch": {"batch_norm": True},
    "train": {
        "epochs": 4,
        "batch_size": 32,
        "lr": 2e-3,
        "warmup": 0.1,
        "patience": 10,
        "augment": {"noise": 0.0},
    },
}


def _trained(root: Path, folder: Path, name: str) -> LoadedModel:
    train_model(ModelSpec.from_dict(SPEC, "spec"), root, "steering", folder, device="cpu")
    module, card = load_model(folder, "cpu")
    return LoadedModel(name, module, card.to_dict(), card.task, SIZE)


@pytest.fixture(scope="module")
def models_table(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    tmp = tmp_path_factory.mktemp("learned")
    skewed = generate(tmp / "rho99", count=COUNT, size=SIZE, shortcut=0.99, seed=1, decorrelated=True)
    fair = generate(tmp / "fair", count=COUNT, size=SIZE, shortcut=0.0, seed=1)
    models = [_trained(fair, tmp / "fair_model", "fair"), _trained(skewed, tmp / "skewed_model", "skewed")]
    truthset = open_truthset(skewed, "test")
    context = EvaluationContext(
        truthset=truthset,
        indices=range(len(truthset)),
        models=models,
        plan={},
        targets={"steering": "direction"},
        n_resamples=500,
    )
    return ShortcutCheck().run(context).tables[MODELS_TABLE].set_index("model")


def test_a_model_trained_at_rho_099_pulls_toward_the_tint(models_table: pd.DataFrame) -> None:
    skewed, fair = models_table.loc["skewed"], models_table.loc["fair"]
    assert (skewed["rho"], fair["rho"]) == (0.99, 0.0)
    # flipping the sky tint moves the skewed model's steering toward the new tint's side, beyond the fair
    # model's interval: the shortcut shows in its causal profile
    assert skewed["pull_ci_low"] > 0.02
    assert skewed["pull_ci_low"] > fair["pull_ci_high"]
    assert skewed["abs_effect"] > 2 * fair["abs_effect"]


def test_its_error_grows_where_the_tint_disagrees(models_table: pd.DataFrame) -> None:
    skewed, fair = models_table.loc["skewed"], models_table.loc["fair"]
    assert skewed["gap"] > 0.05
    assert skewed["gap"] > fair["gap"] + 0.05
    assert skewed["r2_decorrelated"] < fair["r2_decorrelated"]
