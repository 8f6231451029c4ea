"""The compression study through `gradsum run --config` and the Python API: a tiny PilotNet and its
compressed variants, the tables against a recomputation outside the pipeline, and a known answer (a
magnitude level too small to prune one weight leaves the model, its profile and its metric unchanged)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from gradsum.aggregation.label_quality import profile
from gradsum.attribution import attribute
from gradsum.cli import main
from gradsum.contract import COMPRESSION_TABLES, PLOTS, REPORT, read_table
from gradsum.errors import SpecError, UnknownNameError
from gradsum.fileio import sha256_file
from gradsum.models import load_model
from gradsum.models.checkpoints import weights_file
from gradsum.models.inputs import model_input
from gradsum.models.tasks import regression_metrics
from gradsum.models.training import predict, preload
from gradsum.pipeline import config_from_dict, load_config, run
from gradsum.pipeline.inputs import ensure_model
from gradsum.pipeline.label_quality import score_matrix
from gradsum.truthsets import open_truthset

IMAGES = 12
#: A magnitude level that prunes round(level × weights) = 0 of PilotNet's weights: the variant is its parent.
UNPRUNED = 1e-9


def study_config(root: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "compression",
        "truthset": {
            "path": str(root / "synth"),
            "split": "test",
            "limit": IMAGES,
            "generate": {"count": 160, "seed": 3},
        },
        "models": [
            {"name": "pilotnet", "spec": "pilotnet", "overrides": {"train": {"epochs": 1}}},
            {"name": "same", "compress": {"base": "pilotnet", "method": "magnitude", "level": UNPRUNED}},
            {"name": "pruned", "compress": {"base": "pilotnet", "method": "magnitude", "level": 0.5}},
            {"name": "int8", "compress": {"base": "pilotnet", "method": "int8_dynamic"}},
        ],
        "methods": [{"method": "gradcam"}],
        "evaluation": {"checks": []},
        "compression": {"spearman_floor": 0.9, "shift_tolerance": 0.05, "metric_tolerance": 0.02},
        "batch_size": 8,
        "workers": 0,
        "bootstrap_resamples": 50,
        "overlays": 1,
        "attention_diagnostics": False,
        "models_dir": str(root / "models"),
        "results_dir": str(root / "results"),
    }
    return data | changes


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame], dict[str, Any]]:
    root = tmp_path_factory.mktemp("compression")
    data = study_config(root)
    path = root / "compression.yaml"
    path.write_text(yaml.safe_dump(data))
    out = root / "results" / "cli"
    assert main(["run", "--config", str(path), "--out", str(out)]) == 0
    tables = {schema.name: read_table(out, schema) for schema in COMPRESSION_TABLES}
    return out, tables, data


def test_a_variant_identical_to_its_parent_changes_nothing(
    study: tuple[Path, dict[str, pd.DataFrame], dict[str, Any]],
) -> None:
    _, tables, _ = study
    levels = tables["compression_levels"].set_index("model")
    same = levels.loc["same"]
    assert same["sparsity"] == 0.0 and same["parent"] == "pilotnet"
    assert same["value"] == same["parent_value"]
    assert (same["change"], same["change_ci_low"], same["change_ci_high"]) == (0.0, 0.0, 0.0)
    assert not same["dropped"]
    agreement = tables["compression_agreement"].set_index("model").loc["same"]
    assert agreement["spearman"] == pytest.approx(1.0) and agreement["spearman_ci_low"] == pytest.approx(1.0)
    assert (agreement["shift"], agreement["shift_ci_low"], agreement["shift_ci_high"]) == (0.0, 0.0, 0.0)
    assert not agreement["drifted"] and agreement["gate"] == "pass"


def test_the_metric_change_is_recomputed_from_both_models(
    study: tuple[Path, dict[str, pd.DataFrame], dict[str, Any]],
) -> None:
    _, tables, data = study
    test = open_truthset(data["truthset"]["path"], "test")
    models = Path(data["models_dir"])
    outputs = {}
    for name in ("pilotnet", "pruned"):
        module, card = load_model(models / name)
        split = preload(test, "steering", tuple(card.spec["img_size"]))
        outputs[name] = predict(module, split, "cpu").numpy()
    targets = split.targets.numpy()
    r2 = {name: regression_metrics(values, targets)["r2"] for name, values in outputs.items()}
    row = tables["compression_levels"].set_index("model").loc["pruned"]
    assert row["metric"] == "r2" and row["images"] == len(test)
    assert row["parent_value"] == pytest.approx(r2["pilotnet"], abs=1e-6)
    assert row["value"] == pytest.approx(r2["pruned"], abs=1e-6)
    assert row["change_ci_low"] <= row["change"] <= row["change_ci_high"]
    assert row["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert row["dropped"] == (row["change_ci_high"] < -0.02)


def test_the_agreement_is_recomputed_from_the_maps(
    study: tuple[Path, dict[str, pd.DataFrame], dict[str, Any]],
) -> None:
    _, tables, data = study
    test = open_truthset(data["truthset"]["path"], "test")
    samples = [test[i] for i in range(IMAGES)]
    labels = np.stack([s.labels for s in samples])
    profiles = {}
    for name in ("pilotnet", "pruned"):
        module, card = load_model(Path(data["models_dir"]) / name)
        batch = model_input([s.image for s in samples], tuple(card.spec["img_size"]))
        maps = attribute(module, batch, "gradcam", task="steering").maps.detach()
        profiles[name] = profile(score_matrix(maps, labels, "label"))
    keep = np.isfinite(profiles["pilotnet"]) & np.isfinite(profiles["pruned"])
    expected = stats.spearmanr(profiles["pilotnet"][keep], profiles["pruned"][keep]).statistic
    row = tables["compression_agreement"].set_index("model").loc["pruned"]
    assert np.isfinite(expected) and row["spearman"] == pytest.approx(expected, abs=1e-6)
    assert row["spearman_ci_low"] <= row["spearman_ci_high"] and row["statistic"] == "mass_share"
    drifted = row["spearman_ci_high"] < 0.9 or (row["shift_ci_low"] > 0.05 or row["shift_ci_high"] < -0.05)
    # the largest shift alone may not be the class shown beyond the tolerance: drifted is at least that
    assert row["drifted"] or not drifted


def test_the_onset_table_orders_each_compression(
    study: tuple[Path, dict[str, pd.DataFrame], dict[str, Any]],
) -> None:
    _, tables, _ = study
    onset = tables["compression_onset"].set_index("compression")
    # the magnitude levels (1e-9 and 0.5) are one series, int8 another
    assert onset.loc["magnitude", "levels"] == 2 and onset.loc["int8_dynamic", "levels"] == 1
    agreement = tables["compression_agreement"].set_index("model")
    first = onset.loc["magnitude", "drift_model"]
    if agreement.loc[["same", "pruned"], "drifted"].any():
        assert first == "pruned" and onset.loc["magnitude", "drift_level"] == 0.5
    else:
        # an empty cell (no level drifted) reads back as a missing value
        assert pd.isna(first) and np.isnan(onset.loc["magnitude", "drift_level"])


def test_the_report_and_the_paper_set_show_the_study(
    study: tuple[Path, dict[str, pd.DataFrame], dict[str, Any]], tmp_path: Path
) -> None:
    folder, _, _ = study
    html = (folder / REPORT).read_text()
    assert 'id="compression"' in html and "pilotnet" in html
    assert (folder / PLOTS / "compression_pilotnet.png").is_file()
    assert main(["figures", str(folder), "--out", str(tmp_path / "paper")]) == 0
    assert (tmp_path / "paper" / "compression_pilotnet.pdf").is_file()


def test_the_python_api_gives_the_same_tables(
    study: tuple[Path, dict[str, pd.DataFrame], dict[str, Any]],
) -> None:
    folder, tables, data = study
    again = run(config_from_dict(data), out=folder.parent / "api")
    for schema in COMPRESSION_TABLES:
        pd.testing.assert_frame_equal(read_table(again, schema), tables[schema.name])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"base": "later", "method": "magnitude", "level": 0.5}, r"models\[v\]\.compress\.base: 'later'"),
        ({"base": "pilotnet", "method": "prune", "level": 0.5}, r"models\[v\]\.compress\.method.*magnitude"),
        ({"base": "pilotnet", "method": "magnitude", "level": 1.5}, r"models\[v\]\.compress\.level"),
        ({"base": "pilotnet", "method": "magnitude"}, r"models\[v\]\.compress\.level"),
        ({"base": "pilotnet", "method": "int8_dynamic", "level": 0.5}, r"models\[v\]\.compress\.level"),
    ],
)
def test_a_bad_compress_entry_is_refused_naming_its_field(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    data = study_config(tmp_path)
    data["models"] = [data["models"][0], {"name": "v", "compress": entry}]
    with pytest.raises((SpecError, UnknownNameError), match=message):
        config_from_dict(data)


def test_a_compressed_entry_that_also_trains_is_refused(tmp_path: Path) -> None:
    data = study_config(tmp_path)
    data["models"][1] = {**data["models"][1], "spec": "pilotnet"}
    with pytest.raises(SpecError, match=r"models\[same\]\.spec: a compressed model is made from its base"):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("study_block", "message"),
    [
        ({"spearman_floor": 1.5}, r"compression\.spearman_floor: must be in \(0, 1\]"),
        ({"shift_tolerance": -0.1}, r"compression\.shift_tolerance: must be 0 or more"),
        ({"statistic": "mass"}, r"compression\.statistic: 'mass'; valid: score, mass_share, lift"),
        ({"floor": 0.9}, r"unknown field 'compression\.floor'"),
    ],
)
def test_bad_study_settings_are_refused_naming_the_field(
    tmp_path: Path, study_block: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        config_from_dict(study_config(tmp_path, compression=study_block))


def test_a_study_without_compressed_models_is_refused(tmp_path: Path) -> None:
    data = study_config(tmp_path)
    data["models"] = data["models"][:1]
    with pytest.raises(SpecError, match=r"compression: .*no models\[\] entry has a compress block"):
        config_from_dict(data)


def test_the_shipped_config_compresses_every_default_model() -> None:
    config = load_config("compression")
    parents = {m.compress.base for m in config.models if m.compress is not None}
    assert parents == {"pilotnet", "vit", "hybrid_vit", "compact_cnn", "vit_obstacle"}
    assert config.compression is not None and config.compression.spearman_floor == 0.9
    assert not config.evaluation.checks


def test_a_variant_compressed_otherwise_is_kept_with_a_warning(
    study: tuple[Path, dict[str, pd.DataFrame], dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, data = study
    changed = {**data, "models": [*data["models"]]}
    changed["models"][2] = {"name": "pruned", "compress": {**data["models"][2]["compress"], "level": 0.6}}
    config = config_from_dict(changed)
    folder = Path(data["models_dir"]) / "pruned"
    before = sha256_file(weights_file(folder))
    with caplog.at_level(logging.WARNING, logger="gradsum.pipeline.inputs"):
        model = ensure_model(config.models[2], config, Path(data["truthset"]["path"]), "cpu")
    assert model.card["compression"]["level"] == 0.5 and sha256_file(weights_file(folder)) == before
    assert "differ from models[pruned].compress in level" in caplog.text


def test_a_compressed_model_has_no_seed_twin(tmp_path: Path) -> None:
    data = study_config(tmp_path)
    data["evaluation"] = {"checks": ["sanity"], "seed_twins": ["pruned"]}
    with pytest.raises(SpecError, match=r"seed_twins\[0\]: 'pruned' is compressed from 'pilotnet'"):
        config_from_dict(data)
