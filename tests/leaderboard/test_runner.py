"""The leaderboard run's pieces: which methods a protocol scores, `--add` files, the seeds' configs and when a
seed's results folder is reused."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gradsum.attribution import METHODS
from gradsum.attribution.methods.lrp_transformer import TransformerLRP
from gradsum.contract import MANIFEST, PROTOCOL_KEY
from gradsum.errors import GradSUMError, ResultsError, SpecError, UnknownNameError
from gradsum.evaluation import CONTROL_EXPLAINERS, NULL_EXPLAINERS
from gradsum.evaluation.base import EvaluationContext
from gradsum.leaderboard.layers import swept_methods
from gradsum.leaderboard.protocol import builtin_protocols, load_protocol, protocol_from_dict, protocol_hash
from gradsum.leaderboard.runner import (
    OPTIONAL_LIBRARIES,
    add_methods,
    completed,
    protocol_methods,
    results_folder,
    run_leaderboard,
    seed_configs,
    select_methods,
)

PLUGIN = textwrap.dedent(
    '''
    """An outside method: its map is the input's red channel."""
    from gradsum.attribution import Method, register_method

    @register_method("{name}")
    class Red(Method):
        description = "the input's red channel"
        applies_to = frozenset({{{families}}})
        uses_layer = False

        def grid(self, model, images, target, layer):
            return images[:, 0]
    '''
)


def plugin(tmp_path: Path, name: str, families: str = '"cnn", "vit", "hybrid"') -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(PLUGIN.format(name=name, families=families), encoding="utf-8")
    return path


@pytest.fixture
def registered() -> Iterator[list[str]]:
    """Names a test registers, unregistered (with their plugin modules) when it ends."""
    names: list[str] = []
    yield names
    for name in names:
        if name in METHODS:
            cls = METHODS.unregister(name)
            sys.modules.pop(cls.__module__, None)


def cnn_protocol() -> Any:
    data = yaml.safe_load(builtin_protocols().get("synth-v1").read_text())
    data["models"] = [m for m in data["models"] if m["name"] == "pilotnet"]
    return protocol_from_dict(data, "cnn-only")


def names(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["method"] for entry in entries]


def test_synth_v1_scores_each_method_once_and_no_null() -> None:
    scored = names(protocol_methods(load_protocol("synth-v1")))
    assert scored == sorted(scored)
    # the fast path stands for pytorch-grad-cam's GradCAM; a method without one is scored under its plain name
    assert "gradcam" in scored and "lib:gradcam" not in scored
    assert "scorecam" in scored and "lib:scorecam" not in scored
    assert not [name for name in scored if name.startswith("lib:")]
    # the null explainers are computed beside every method, never ranked as one
    assert {"random", "uniform", "sobel"}.isdisjoint(scored)
    # synth-v1 has ViTs and hybrids: their methods are scored
    assert {"attention", "rollout", "chefer_lrp"} <= set(scored)


def test_a_cnn_only_protocol_leaves_out_the_transformer_methods() -> None:
    scored = names(protocol_methods(cnn_protocol()))
    assert "gradcam" in scored and "integrated_gradients" in scored
    assert {"attention", "rollout", "gradrollout", "chefer_lrp", "attnlrp", "cplrp"}.isdisjoint(scored)


def test_a_method_whose_library_is_missing_is_left_out_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing(name: str) -> None:
        raise GradSUMError(f"method {name}: needs the optional library lxt")

    monkeypatch.setitem(OPTIONAL_LIBRARIES, TransformerLRP, missing)
    with caplog.at_level(logging.WARNING):
        scored = names(protocol_methods(load_protocol("synth-v1")))
    assert "attnlrp" not in scored and "cplrp" not in scored
    assert "chefer_lrp" in scored
    assert "method attnlrp left out: method attnlrp: needs the optional library lxt" in caplog.text


def test_an_added_file_registers_methods_that_join_the_scored(tmp_path: Path, registered: list[str]) -> None:
    path = plugin(tmp_path, "outside_red")
    registered.append("outside_red")
    added = add_methods([path])
    assert added == ["outside_red"]
    # importing it again in the same process still names its method
    assert add_methods([path]) == ["outside_red"]
    chosen = select_methods(load_protocol("synth-v1"), ["gradcam"], added)
    assert names(chosen) == ["gradcam", "outside_red"]


def test_an_added_method_for_no_protocol_model_is_refused(tmp_path: Path, registered: list[str]) -> None:
    registered.append("vit_only_red")
    added = add_methods([plugin(tmp_path, "vit_only_red", '"vit"')])
    with pytest.raises(
        SpecError, match=r"--add: method vit_only_red applies to vit, none of which .* \(cnn\)"
    ):
        protocol_methods(cnn_protocol(), added)


def test_an_add_file_that_registers_nothing_or_fails_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("VALUE = 1\n", encoding="utf-8")
    with pytest.raises(SpecError, match=f"--add {empty}: registers no attribution method"):
        add_methods([empty])
    broken = tmp_path / "broken.py"
    broken.write_text("import gradsum_no_such_module\n", encoding="utf-8")
    with pytest.raises(SpecError, match=f"--add {broken}: .*gradsum_no_such_module"):
        add_methods([broken])
    failing = tmp_path / "failing.py"
    failing.write_text("raise RuntimeError('no GPU here')\n", encoding="utf-8")
    with pytest.raises(SpecError, match=f"--add {failing}: importing it failed: RuntimeError: no GPU here"):
        add_methods([failing])
    with pytest.raises(SpecError, match="no such file"):
        add_methods([tmp_path / "absent.py"])


def test_methods_outside_the_protocols_are_refused_naming_the_argument() -> None:
    with pytest.raises(
        SpecError, match=r"--methods: random not scored by protocol synth-v1; valid: .*gradcam"
    ):
        select_methods(load_protocol("synth-v1"), ["gradcam", "random"])
    with pytest.raises(UnknownNameError, match="--add"):
        protocol_methods(load_protocol("synth-v1"), ["no_such_method"])


def test_seed_configs_carry_the_protocol_hash_and_refuse_other_seeds(tmp_path: Path) -> None:
    protocol = load_protocol("synth-v1")
    configs = seed_configs(protocol, [{"method": "gradcam"}], results=tmp_path)
    assert list(configs) == [0, 2, 4]
    assert {config.protocol for config in configs.values()} == {protocol_hash(protocol)}
    assert {config.truthset.path for config in configs.values()} == {str(Path("datasets") / "synth-v1")}
    assert list(seed_configs(protocol, [], seeds=[4, 0])) == [4, 0]
    for bad in ([1], [0, 0]):
        with pytest.raises(SpecError, match=r"--seeds: .*training seeds of protocol synth-v1: \[0, 2, 4\]"):
            seed_configs(protocol, [], seeds=bad)


def write_manifest(folder: Path, **fields: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps(fields), encoding="utf-8")


def test_a_complete_folder_of_the_protocol_and_methods_is_reused(tmp_path: Path) -> None:
    protocol = load_protocol("synth-v1")
    config = seed_configs(protocol, [{"method": "gradcam"}], results=tmp_path, seeds=[0])[0]
    folder = results_folder(config)
    assert not completed(config)  # nothing there yet
    methods = [{"method": "gradcam", "label": None, "models": None, "layer": None, "normalise": None,
                "postprocess": None, "options": {}, "role": "method"}]  # fmt: skip
    write_manifest(folder, **{PROTOCOL_KEY: protocol_hash(protocol), "methods": methods})
    assert completed(config)
    write_manifest(folder, **{PROTOCOL_KEY: protocol_hash(protocol), "methods": methods[:0]})
    assert not completed(config)  # run again: other methods


def test_a_folder_of_another_protocol_is_never_overwritten(tmp_path: Path) -> None:
    config = seed_configs(load_protocol("synth-v1"), [], results=tmp_path, seeds=[2])[2]
    folder = results_folder(config)
    write_manifest(folder, **{PROTOCOL_KEY: "0" * 64})
    with pytest.raises(ResultsError, match=f"{folder / MANIFEST}: protocol hash 0{{64}} under 'protocol'"):
        completed(config)
    write_manifest(folder, name="a plain gradsum run")
    with pytest.raises(ResultsError, match="protocol hash none under 'protocol'"):
        completed(config)


def test_assembling_under_torchrun_leaves_the_writing_to_rank_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    protocol = load_protocol("synth-v1")
    assert run_leaderboard(protocol, results=tmp_path, methods=["gradcam"], assemble_only=True) is None
    assert not any(tmp_path.iterdir())


def test_the_evaluation_keeps_every_map_of_a_synth_v1_seed() -> None:
    # the checks reuse the attribution stage's maps only while they fit the cache; past it every check
    # recomputes them (at 1 GiB, three maps in four of a synth-v1 seed)
    protocol = load_protocol("synth-v1")
    rows = (
        len(protocol_methods(protocol))
        + len(swept_methods(protocol))
        + len(CONTROL_EXPLAINERS)
        + len(NULL_EXPLAINERS)
    )
    height, width = protocol.generator.size
    needed = protocol.attributed_images * rows * len(protocol.models) * height * width * 4
    assert EvaluationContext.map_cache_bytes >= needed
