"""The frozen leaderboard protocol: the shipped file agrees with the code, its hash, its checks and its expansion
into run configs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradsum.contract import MANIFEST
from gradsum.errors import ResultsError, SpecError, UnknownNameError
from gradsum.evaluation.materiality import MATERIALITY
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.verdicts import ALPHA
from gradsum.leaderboard.protocol import (
    PROTOCOL_KEY,
    builtin_protocols,
    check_protocol,
    load_protocol,
    protocol_hash,
    run_configs,
)
from gradsum.pipeline.config import ModelConfig
from gradsum.pipeline.inputs import check_names, configured_spec
from gradsum.truthsets.synthetic.writer import FORMAT_VERSION

DOCS = Path(__file__).parents[2] / "docs" / "leaderboard.md"
SHIPPED = builtin_protocols().get("synth-v1")


def shipped_data() -> dict[str, Any]:
    return yaml.safe_load(SHIPPED.read_text())


def write(tmp_path: Path, data: dict[str, Any], name: str = "protocol.yaml", **dump: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, **dump))
    return path


def test_the_shipped_protocol_holds_the_codes_alpha_margins_and_nulls() -> None:
    # a changed code default without a new protocol version must fail here
    protocol = load_protocol("synth-v1")
    assert (protocol.name, protocol.version) == ("synth-v1", 1)
    assert protocol.alpha == ALPHA
    assert protocol.materiality == MATERIALITY
    assert protocol.nulls == tuple(null.method for null in NULL_EXPLAINERS)
    assert protocol.generator.format_version == FORMAT_VERSION


def test_the_shipped_protocol_trains_the_issues_models_with_three_seeds() -> None:
    protocol = load_protocol("synth-v1")
    assert len(protocol.training_seeds) == 3
    tasks = {m.name: configured_spec_task(m.spec, m.overrides) for m in protocol.models}
    assert tasks == {
        "pilotnet": "steering",
        "compact_cnn_steering": "steering",
        "vit": "steering",
        "hybrid_vit": "steering",
        "compact_cnn": "obstacle",
        "vit_obstacle": "obstacle",
    }


def configured_spec_task(spec: str, overrides: dict[str, Any]) -> str:
    loaded = configured_spec(ModelConfig("m", spec=spec, overrides=overrides))
    assert loaded is not None
    return loaded.task


def test_the_docs_state_the_shipped_hash() -> None:
    assert protocol_hash(load_protocol("synth-v1")) in DOCS.read_text()


def test_the_hash_is_the_sha256_of_the_sorted_compact_json() -> None:
    protocol = load_protocol("synth-v1")
    text = json.dumps(dataclasses.asdict(protocol), sort_keys=True, separators=(",", ":"))
    assert protocol_hash(protocol) == hashlib.sha256(text.encode()).hexdigest()


def test_key_order_and_yaml_formatting_do_not_change_the_hash(tmp_path: Path) -> None:
    data = shipped_data()
    reordered = {key: data[key] for key in reversed(list(data))}
    reordered["checks"] = {key: reordered["checks"][key] for key in reversed(list(reordered["checks"]))}
    path = write(tmp_path, reordered, sort_keys=False, default_flow_style=True, width=40)
    assert path.read_text() != SHIPPED.read_text()
    reformatted = load_protocol(path)
    assert protocol_hash(reformatted) == protocol_hash(load_protocol("synth-v1"))
    assert run_configs(reformatted) == run_configs(load_protocol("synth-v1"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (("evaluated_images",), 199),
        (("materiality", "steering"), 0.03),
        (("checks", "sanity", "blocks"), 2),
        (("generator", "seed"), 1),
        (("models", 0, "overrides", "train", "epochs"), 2),
    ],
)
def test_any_value_change_changes_the_hash(tmp_path: Path, field: tuple[Any, ...], value: Any) -> None:
    data = shipped_data()
    parent = data
    for key in field[:-1]:
        parent = parent[key]
    parent[field[-1]] = value
    changed = load_protocol(write(tmp_path, data))
    assert protocol_hash(changed) != protocol_hash(load_protocol("synth-v1"))


def test_an_unknown_protocol_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"--protocol.*valid: synth-v1"):
        load_protocol("synth-v9")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (("evaluated_imges",), 200, "unknown field 'evaluated_imges'"),
        (("checks", "sanity", "blocs"), 3, r"checks\.sanity: .*blocs"),
        (("checks", "causal", "materiality"), {"steering": 0.1}, r"checks\.causal\.materiality"),
        (("checks", "shap"), {}, r"checks\.shap: unknown trust check"),
        (("models", 1, "task"), "obstacle", r"models\[1\]\.task"),
        (("models", 0, "overrides", "train", "seed"), 3, r"models\[0\]\.overrides\.train\.seed"),
        (("training_seeds",), [0, 1, 4], "training_seeds: seed"),
        (("generator", "format_version"), 1, r"generator\.format_version"),
        (("generator", "split_fractions"), [0.7, 0.2, 0.1], r"generator\.split_fractions"),
        (("split",), "holdout", "split: 'holdout'"),
        (("materiality",), {"steering": 0.02}, "materiality: need a margin for every task"),
        (("attributed_images",), 100, "attributed_images: 100"),
        (("checks", "perturbation", "noise"), float("nan"), "no exact JSON form"),
        (("targets", "steering"), "left", r"targets\.steering"),
        (("targets",), {"steering": "direction"}, "targets: need a target for every task"),
        (("normalise",), "softmax", "normalisation 'softmax' for normalise"),
        (("resolution",), "native", "resolution: 'native'"),
    ],
)
def test_bad_protocols_are_refused_naming_the_file_and_field(
    tmp_path: Path, field: tuple[Any, ...], value: Any, message: str
) -> None:
    data = shipped_data()
    parent = data
    for key in field[:-1]:
        parent = parent[key]
    parent[field[-1]] = value
    path = write(tmp_path, data, "bad.yaml")
    with pytest.raises(SpecError, match=message) as caught:
        load_protocol(path)
    assert str(path) in str(caught.value)


def results_folder(root: Path, name: str, manifest: dict[str, Any]) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_folders_of_one_protocol_pass_and_give_its_hash(tmp_path: Path) -> None:
    folders = [results_folder(tmp_path, n, {PROTOCOL_KEY: "aa" * 32, "files": {}}) for n in ("a", "b")]
    assert check_protocol(folders) == "aa" * 32


def test_folders_of_two_protocols_are_refused_naming_the_manifest_and_both_hashes(tmp_path: Path) -> None:
    first = results_folder(tmp_path, "a", {PROTOCOL_KEY: "aa" * 32})
    second = results_folder(tmp_path, "b", {PROTOCOL_KEY: "bb" * 32})
    with pytest.raises(ResultsError) as caught:
        check_protocol([first, second])
    message = str(caught.value)
    assert message.startswith(str(second / MANIFEST))
    assert "aa" * 32 in message and "bb" * 32 in message


def test_a_folder_without_a_protocol_hash_is_refused(tmp_path: Path) -> None:
    first = results_folder(tmp_path, "a", {"files": {}})
    second = results_folder(tmp_path, "b", {PROTOCOL_KEY: "bb" * 32})
    with pytest.raises(
        ResultsError, match=rf"^{re.escape(str(first / MANIFEST))}: protocol hash none.*{'bb' * 32}"
    ):
        check_protocol([first, second])
    with pytest.raises(ResultsError, match=r"protocol hash none.*no folder records one"):
        check_protocol([first])


def test_a_folder_without_a_manifest_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ResultsError, match=f"{re.escape(str(tmp_path / 'empty' / MANIFEST))}: results manifest is missing"
    ):
        check_protocol([tmp_path / "empty"])


def without_seed(config: Any, seed: int) -> dict[str, Any]:
    """A run config as a mapping with what may differ between training seeds taken out."""
    data = dataclasses.asdict(config)
    suffix = f"_s{seed}"
    data["name"] = data["name"].removesuffix(f"-seed{seed}")
    for model in data["models"]:
        assert model["name"].endswith(suffix) and model["overrides"]["train"].pop("seed") == seed
        model["name"] = model["name"].removesuffix(suffix)
    data["evaluation"]["seed_twins"] = tuple(n.removesuffix(suffix) for n in data["evaluation"]["seed_twins"])
    return data


def test_run_configs_train_every_model_once_per_seed_and_differ_in_nothing_else() -> None:
    protocol = load_protocol("synth-v1")
    configs = run_configs(protocol, methods=[{"method": "gradcam"}])
    for config in configs:
        check_names(config)  # what `gradsum run` refuses before any work starts
    assert [c.name for c in configs] == ["synth-v1-seed0", "synth-v1-seed2", "synth-v1-seed4"]
    trained = {(m.name, m.overrides["train"]["seed"]) for c in configs for m in c.models}
    assert trained == {(f"{m.name}_s{s}", s) for m in protocol.models for s in (0, 2, 4)}
    stripped = [without_seed(c, s) for c, s in zip(configs, protocol.training_seeds, strict=True)]
    assert stripped[0] == stripped[1] == stripped[2]
    config = configs[0]
    assert config.evaluation.images == 200 and config.truthset.limit == 200
    assert config.evaluation.options["causal"]["materiality"] == MATERIALITY
    assert config.evaluation.checks == tuple(sorted(protocol.checks))
    assert config.truthset.generate is not None and config.truthset.generate.count == 10_000


def test_run_configs_refuse_an_alpha_or_nulls_the_code_cannot_run() -> None:
    protocol = load_protocol("synth-v1")
    with pytest.raises(SpecError, match=r"alpha 0\.1 is not the code's ALPHA 0\.05"):
        run_configs(dataclasses.replace(protocol, alpha=0.1))
    with pytest.raises(SpecError, match=r"nulls .* are not the code's null explainers"):
        run_configs(dataclasses.replace(protocol, nulls=("random",)))
