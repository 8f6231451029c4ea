"""The difficulty ladder's part of a protocol: the generator's mix reaches the run configs, the `ladder`
section is hashed and checked, and a protocol without either is a clean protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gradsum.errors import SpecError
from gradsum.leaderboard.protocol import builtin_protocols, load_protocol, protocol_hash, run_configs
from gradsum.truthsets.synthetic import KNOBS
from gradsum.truthsets.synthetic.writer import MIXED_SPLITS

SHIPPED = builtin_protocols().get("synth-v1")


def shipped_data() -> dict[str, Any]:
    data = yaml.safe_load(SHIPPED.read_text())
    assert isinstance(data, dict)
    return data


def write(tmp_path: Path, data: dict[str, Any], name: str = "protocol.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def changed(data: dict[str, Any], field: tuple[Any, ...], value: Any) -> dict[str, Any]:
    parent = data
    for key in field[:-1]:
        parent = parent[key]
    parent[field[-1]] = value
    return data


def test_the_shipped_models_train_on_a_mix_of_every_ladder_knob_and_test_on_clean_scenes() -> None:
    protocol = load_protocol("synth-v1")
    ladder = protocol.ladder
    assert ladder is not None
    assert set(ladder.knobs) <= set(protocol.generator.mix) <= set(KNOBS.names())
    assert ladder.levels == (1, 2, 3) and set(ladder.training_seeds) <= set(protocol.training_seeds)
    assert set(ladder.checks) <= set(protocol.checks)
    assert protocol.split not in MIXED_SPLITS
    for config in run_configs(protocol):
        generate = config.truthset.generate
        assert generate is not None and generate.mix == protocol.generator.mix and not generate.difficulty
        # every model trains on the run's truth set: the mixed one
        assert all(m.train_on is None for m in config.models)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (("ladder", "levels"), [1, 3]),
        (("ladder", "evaluated_images"), 99),
        (("ladder", "checks"), ["causal"]),
        (("ladder", "training_seeds"), [0, 2]),
        (("generator", "mix"), ["camera", "shadows", "weather"][1:]),
    ],
)
def test_a_ladder_or_mix_value_changes_the_hash(tmp_path: Path, field: tuple[Any, ...], value: Any) -> None:
    data = changed(shipped_data(), field, value)
    if field == ("generator", "mix"):
        data["ladder"]["knobs"] = value
    assert protocol_hash(load_protocol(write(tmp_path, data))) != protocol_hash(load_protocol("synth-v1"))


def test_a_protocol_without_mix_or_ladder_is_a_clean_protocol(tmp_path: Path) -> None:
    data = shipped_data()
    del data["ladder"], data["generator"]["mix"]
    protocol = load_protocol(write(tmp_path, data))
    assert protocol.ladder is None and protocol.generator.mix == ()
    generate = run_configs(protocol)[0].truthset.generate
    assert generate is not None and generate.mix == ()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (("generator", "mix"), ["fog"], r"generator\.mix: .*'fog'.*valid: .*camera"),
        (
            ("generator", "mix"),
            ["weather", "camera"],
            r"generator\.mix: list the knobs sorted \(camera, weather\)",
        ),
        (("generator", "mix"), ["camera", "camera"], r"generator\.mix: .*named twice"),
        (("ladder", "knobs"), ["fog"], r"ladder\.knobs; valid: .*camera"),
        (("ladder", "knobs"), [], r"ladder\.knobs: need one or more distinct values"),
        (("ladder", "knobs"), ["camera", "camera"], r"ladder\.knobs: need one or more distinct values"),
        (("ladder", "levels"), [0, 1], r"ladder\.levels: \[0, 1\]; each must lie in 1\.\.3"),
        (("ladder", "levels"), [4], r"ladder\.levels: \[4\]; each must lie in 1\.\.3"),
        (("ladder", "evaluated_images"), 0, r"ladder\.evaluated_images: 0; must lie in 1\.\.1000"),
        (("ladder", "evaluated_images"), 1001, r"ladder\.evaluated_images: 1001; must lie in 1\.\.1000"),
        (
            ("ladder", "checks"),
            ["sanity", "shap"],
            r"ladder\.checks: \['shap'\] not among the protocol's checks",
        ),
        (("ladder", "checks"), ["localisation"], r"ladder\.checks: need 'causal': the task metric per level"),
        (("ladder", "training_seeds"), [1], r"ladder\.training_seeds: \[1\] not among .* \(0, 2, 4\)"),
        (("ladder", "stages"), 3, r"unknown field 'ladder\.stages'"),
        (("split",), "val", r"split: 'val' draws the mix's levels"),
    ],
)
def test_bad_ladders_are_refused_naming_the_file_and_field(
    tmp_path: Path, field: tuple[Any, ...], value: Any, message: str
) -> None:
    path = write(tmp_path, changed(shipped_data(), field, value), "bad.yaml")
    with pytest.raises(SpecError, match=message) as caught:
        load_protocol(path)
    assert str(path) in str(caught.value)


def test_a_ladder_knob_the_models_never_trained_on_is_refused(tmp_path: Path) -> None:
    data = shipped_data()
    data["generator"]["mix"] = ["camera", "clutter", "occlusion", "shadows"]
    path = write(tmp_path, data, "bad.yaml")
    with pytest.raises(
        SpecError,
        match=r"ladder\.knobs: 'weather' is not in generator\.mix \(camera, clutter, occlusion, shadows\)",
    ):
        load_protocol(path)
