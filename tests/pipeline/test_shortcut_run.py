"""The shortcut and fine-tuning studies through `gradsum run`: the example configs' shape, and a tiny run whose
models come from two truth sets and a fine-tune, ending in a report with the Shortcuts section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from gradsum.cli import main
from gradsum.evaluation.checks.shortcut import FINETUNE_TABLE, MODELS_TABLE
from gradsum.pipeline import load_config
from gradsum.pipeline.config import ModelConfig, RunConfig

TINY_VIT: dict[str, Any] = {
    "img_size": [32, 64],
    "arch": {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2},
    "train": {"epochs": 1, "batch_size": 8},
}


def _training_rho(entry: ModelConfig, config: RunConfig) -> float:
    generate = entry.train_on.generate if entry.train_on is not None else config.truthset.generate
    assert generate is not None
    return generate.shortcut


def test_the_shortcut_config_trains_every_series_at_every_rho() -> None:
    config = load_config("shortcut")
    grid = {(entry.spec, _training_rho(entry, config)) for entry in config.models}
    assert grid == {(s, r) for s in ("pilotnet", "vit", "hybrid_vit") for r in (0.0, 0.75, 0.9, 0.99)}
    assert config.truthset.generate is not None and config.truthset.generate.decorrelated
    assert "shortcut" in config.evaluation.checks
    # same scenes at every rho: one seed, count and size for every training set
    sets = {entry.train_on or config.truthset for entry in config.models}
    assert {(s.generate.seed, s.generate.count, s.generate.size) for s in sets if s.generate} == {
        (0, 10000, (96, 192))
    }


def test_the_finetune_config_tunes_both_vits_with_three_seeds() -> None:
    config = load_config("finetune")
    tuned = [entry.finetune for entry in config.models if entry.finetune is not None]
    assert sorted((t.base, t.seed) for t in tuned) == [(b, s) for b in ("vit", "vit_rho99") for s in range(3)]
    assert {(t.samples, t.lr, t.steps, t.foreground) for t in tuned} == {(50, tuned[0].lr, 100, ("road",))}
    assert "shortcut" in config.evaluation.checks


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    skewed = {"count": 40, "seed": 3, "size": [32, 64], "shortcut": 0.99, "decorrelated": True}
    config = {
        "name": "study",
        "truthset": {"path": str(root / "skewed"), "split": "test", "generate": skewed},
        "models": [
            {
                "name": "fair",
                "spec": "vit",
                "overrides": TINY_VIT,
                "train_on": {"path": str(root / "fair"), "generate": {**skewed, "shortcut": 0.0}},
            },
            {"name": "skewed", "spec": "vit", "overrides": TINY_VIT},
            {
                "name": "tuned",
                "finetune": {
                    "base": "skewed",
                    "foreground": ["road"],
                    "samples": 4,
                    "steps": 2,
                    "batch_size": 2,
                },
            },
        ],
        "methods": [{"method": "gradrollout"}],
        "targets": {"steering": "direction"},
        "bootstrap_resamples": 50,
        "overlays": 1,
        "attention_diagnostics": False,
        "models_dir": str(root / "models"),
        "evaluation": {"checks": ["shortcut"], "images": 4, "bootstrap_resamples": 50, "options": {}},
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    out = root / "results"
    assert main(["run", "--config", str(path), "--out", str(out)]) == 0
    return out


def test_the_study_measures_every_model_and_pairs_the_finetune(study: Path) -> None:
    models = pd.read_csv(study / f"{MODELS_TABLE}.csv").set_index("model")
    assert models.loc[["fair", "skewed", "tuned"], "rho"].tolist() == [0.0, 0.99, 0.99]
    assert models.loc["tuned", "base"] == "skewed" and bool(models.loc["tuned", "finetuned"])
    finetune = pd.read_csv(study / f"{FINETUNE_TABLE}.csv")
    assert finetune[["model", "base"]].values.tolist() == [["tuned", "skewed"]]
    # the fine-tune's before figures are its base's own row
    assert finetune["r2_decorrelated_before"].iloc[0] == pytest.approx(
        models.loc["skewed", "r2_decorrelated"]
    )
    manifest = json.loads((study / "manifest.json").read_text())
    assert {"shortcut_models", "shortcut_detection"} <= set(manifest["trust_tables"])


def test_the_report_has_the_shortcuts_section(study: Path) -> None:
    html = (study / "report.html").read_text()
    assert 'id="shortcuts"' in html and "What each model learned" in html
    assert "tuned" in html and "skewed" in html
