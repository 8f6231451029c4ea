"""Where a run's models come from: a spec trained on another truth set (`train_on`), or a relevance-guided
fine-tune of another model of the run (`finetune`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gradsum.errors import SpecError
from gradsum.fileio import sha256_file
from gradsum.finetune.settings import FinetuneSettings, LossWeights
from gradsum.models.checkpoints import CARD, WEIGHTS
from gradsum.pipeline import GenerateConfig, ModelConfig, config_from_dict
from gradsum.pipeline.config import FinetuneConfig, TrainingSetConfig
from gradsum.pipeline.inputs import ensure_model, training_root

#: a ViT small enough to train for one epoch in a second or two, so rollout relevance applies
TINY_VIT: dict[str, Any] = {
    "img_size": [32, 64],
    "arch": {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2},
    "train": {"epochs": 1, "batch_size": 8},
}
SKEWED = {"count": 30, "size": [32, 64], "shortcut": 0.99}
FINETUNE = {"base": "vit", "foreground": ["road"], "samples": 4, "steps": 2, "batch_size": 2, "lr": 1e-3}


def test_train_on_and_finetune_parse_into_their_dataclasses() -> None:
    config = config_from_dict(
        {
            "models": [
                {"name": "vit", "spec": "vit", "train_on": {"path": "skewed", "generate": SKEWED}},
                {
                    "name": "tuned",
                    "finetune": {
                        **FINETUNE,
                        "foreground": ["road", "car"],
                        "weights": {"background": 1, "foreground": 1, "relevance": 1, "keep": 0},
                    },
                },
            ]
        }
    )
    assert config.models[0].train_on == TrainingSetConfig(
        "skewed", GenerateConfig(count=30, size=(32, 64), shortcut=0.99)
    )
    assert config.models[1] == ModelConfig(
        "tuned",
        finetune=FinetuneConfig(
            base="vit",
            foreground=("road", "car"),
            samples=4,
            weights=LossWeights(1.0, 1.0, 1.0, 0.0),
            lr=1e-3,
            steps=2,
            batch_size=2,
        ),
    )
    # the defaults are the settings' own, and the settings alone leave the base out
    defaults = FinetuneConfig(base="vit", foreground=("road",))
    assert defaults.settings == FinetuneSettings(("road",))


VIT = {"name": "vit", "spec": "vit"}


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            [VIT, {"name": "tuned", "finetune": {**FINETUNE, "base": "vitt"}}],
            r"<config>\.models\[tuned\]\.finetune\.base: 'vitt' is not a model listed before 'tuned'; "
            r"valid: vit$",
        ),
        (
            [{"name": "tuned", "finetune": FINETUNE}, VIT],
            r"models\[tuned\]\.finetune\.base: 'vit' is not a model listed before 'tuned'; valid: none",
        ),
        (
            [VIT, {"name": "tuned", "finetune": {**FINETUNE, "base": "tuned"}}],
            r"models\[tuned\]\.finetune\.base: 'tuned' .* valid: vit$",
        ),
        (
            [VIT, {"name": "tuned", "spec": "vit", "finetune": FINETUNE}],
            r"models\[tuned\]\.spec: a fine-tuned model inherits its base's training",
        ),
        (
            [VIT, {"name": "tuned", "train_on": {"path": "x"}, "finetune": FINETUNE}],
            r"models\[tuned\]\.train_on: a fine-tuned model inherits its base's training",
        ),
        (
            [VIT, {"name": "tuned", "finetune": {**FINETUNE, "foreground": ["road", "roads"]}}],
            r"models\[tuned\]\.finetune\.foreground: unknown Cityscapes class 'roads'; valid: .*sidewalk",
        ),
        (
            [VIT, {"name": "tuned", "finetune": {**FINETUNE, "foreground": []}}],
            r"models\[tuned\]\.finetune\.foreground: name at least one Cityscapes class",
        ),
        (
            [VIT, {"name": "tuned", "finetune": {**FINETUNE, "weights": {"keep": -1}}}],
            r"models\[tuned\]\.finetune\.weights\.keep: must be a non-negative number, got -1\.0",
        ),
        (
            [VIT, {"name": "tuned", "finetune": {**FINETUNE, "weights": "2,0.3,0.8,0.2"}}],
            r"models\[1\]\.finetune\.weights must be a mapping, got str",
        ),
        (
            [VIT, {"name": "tuned", "finetune": {**FINETUNE, "steps": 0}}],
            r"models\[tuned\]\.finetune\.steps: must be 1 or more, got 0",
        ),
        (
            [VIT, {"name": "tuned", "finetune": {**FINETUNE, "lr": -1e-3}}],
            r"models\[tuned\]\.finetune\.lr: must be a positive number, got -0\.001",
        ),
        (
            [VIT, {"name": "tuned", "finetune": {"base": "vit"}}],
            r"missing field 'models\[1\]\.finetune\.foreground'",
        ),
    ],
)
def test_a_bad_model_source_is_refused_naming_the_field(models: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        config_from_dict({"models": models})


def test_a_finetune_has_no_shuffled_label_twin() -> None:
    models = [VIT, {"name": "tuned", "finetune": FINETUNE}]
    with pytest.raises(
        SpecError, match=r"shuffled_labels\[0\]: 'tuned' is fine-tuned from 'vit', not trained"
    ):
        config_from_dict({"models": models, "evaluation": {"shuffled_labels": ["tuned"]}})


def test_a_missing_train_on_set_without_a_generate_block_names_the_field(tmp_path: Path) -> None:
    config = config_from_dict({"models": [{**VIT, "train_on": {"path": str(tmp_path / "absent")}}]})
    with pytest.raises(SpecError, match=r"^models\[vit\]\.train_on\.path: .*absent does not exist"):
        training_root(config.models[0], config, tmp_path / "run_set")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny ViT trained on a skewed set rendered from its `train_on` block; the run's set is absent, so
    training on it would fail."""
    root = tmp_path_factory.mktemp("sources")
    data = {
        "truthset": {"path": str(root / "run_set")},
        "models": [
            {
                "name": "vit",
                "spec": "vit",
                "overrides": TINY_VIT,
                "train_on": {"path": str(root / "skewed"), "generate": SKEWED},
            },
            {"name": "tuned", "finetune": FINETUNE},
        ],
        "models_dir": str(root / "models"),
    }
    config = config_from_dict(data)
    base = ensure_model(config.models[0], config, root / "run_set", "cpu")
    return {
        "root": root,
        "config": config,
        "base": base,
        "base_hash": sha256_file(root / "models/vit" / WEIGHTS),
    }


def test_a_model_is_trained_on_its_train_on_set(trained: dict[str, Any]) -> None:
    root = trained["root"]
    assert (root / "skewed").is_dir() and not (root / "run_set").exists()
    card = json.loads((root / "models" / "vit" / CARD).read_text())
    assert card["truthset"]["root"] == str(root / "skewed")
    assert card["truthset"]["parameters"]["shortcut"] == 0.99
    assert card["truthset"]["parameters"]["count"] == 30
    assert trained["base"].card["truthset"] == card["truthset"]


def test_a_finetune_is_made_from_its_base_once_and_then_loaded(
    trained: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    root, config = trained["root"], trained["config"]
    caplog.set_level(logging.INFO)
    tuned = ensure_model(config.models[1], config, root / "run_set", "cpu")
    assert "fine-tuning tuned from vit" in caplog.text
    base_folder, folder = root / "models" / "vit", root / "models" / "tuned"
    record = json.loads((folder / CARD).read_text())["finetune"]
    base_card = json.loads((base_folder / CARD).read_text())
    assert record["base_weights_sha256"] == base_card["weights_sha256"] == trained["base_hash"]
    assert (record["lr"], record["steps"], record["samples"], record["batch_size"]) == (1e-3, 2, 4, 2)
    assert record["foreground"] == ["road"] and record["foreground_ids"] == [7]
    # fine-tuned on the base's training set, not the run's
    assert record["truthset"] == str(root / "skewed")
    assert sha256_file(base_folder / WEIGHTS) == trained["base_hash"]
    assert sha256_file(folder / WEIGHTS) != trained["base_hash"]
    assert tuned.name == "tuned" and tuned.card["finetune"] == record

    caplog.clear()
    stamp = (folder / WEIGHTS).stat().st_mtime_ns
    again = ensure_model(config.models[1], config, root / "run_set", "cpu")
    assert (folder / WEIGHTS).stat().st_mtime_ns == stamp
    assert again.card["weights_sha256"] == tuned.card["weights_sha256"]
    assert "fine-tuning" not in caplog.text and "differ" not in caplog.text


def test_a_finetune_made_otherwise_is_kept_with_a_warning(
    trained: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    root, config = trained["root"], trained["config"]
    tuned_entry = config.models[1]
    ensure_model(tuned_entry, config, root / "run_set", "cpu")  # made by the test above, or here
    card_path = root / "models" / "tuned" / CARD
    stamp = card_path.stat().st_mtime_ns
    other = config_from_dict(
        {
            "truthset": {"path": str(root / "run_set")},
            "models": [
                {
                    "name": "vit",
                    "spec": "vit",
                    "overrides": TINY_VIT,
                    "train_on": {"path": str(root / "skewed")},
                },
                {"name": "tuned", "finetune": {**FINETUNE, "steps": 3, "weights": {"keep": 0.5}}},
            ],
            "models_dir": str(root / "models"),
        }
    )
    caplog.set_level(logging.WARNING)
    ensure_model(other.models[1], other, root / "run_set", "cpu")
    assert "differ from models[tuned].finetune in steps, weights.keep;" in caplog.text
    assert card_path.stat().st_mtime_ns == stamp
