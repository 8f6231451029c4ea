"""The swept CAM rows: the layer pick by hand, and the run entries it makes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from gradsum.errors import SpecError
from gradsum.evaluation.planned import PlannedMethod
from gradsum.leaderboard.layers import (
    SWEPT,
    pick_layers,
    sweep_config,
    swept_entries,
    swept_label,
    swept_methods,
)
from gradsum.leaderboard.protocol import LayerSweep, builtin_protocols, load_protocol, run_configs


def _table(rows: list[tuple[str, str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["model", "method", "layer", "depth", "agreement"])


def test_the_highest_agreement_wins_per_model_and_method() -> None:
    table = _table(
        [
            ("cnn_s0", "gradcam", "features.0", 0, 0.2),
            ("cnn_s0", "gradcam", "features.1", 1, 0.7),
            ("cnn_s0", "gradcam", "features.2", 2, 0.5),
            ("cnn_s0", "layercam", "features.0", 0, 0.9),
            ("cnn_s0", "layercam", "features.2", 2, 0.1),
            ("vit_s0", "gradcam", "blocks.0", 0, -0.3),
            ("vit_s0", "gradcam", "blocks.1", 1, -0.4),
        ]
    )
    assert pick_layers(table) == {
        "cnn_s0": {"gradcam": "features.1", "layercam": "features.0"},
        "vit_s0": {"gradcam": "blocks.0"},
    }


def test_ties_and_undefined_agreement_go_to_the_deeper_layer() -> None:
    tied = _table(
        [("m", "gradcam", "a", 0, 0.5), ("m", "gradcam", "b", 1, 0.5), ("m", "gradcam", "c", 2, 0.1)]
    )
    assert pick_layers(tied) == {"m": {"gradcam": "b"}}
    undefined = _table([("m", "gradcam", "a", 0, math.nan), ("m", "gradcam", "b", 1, math.nan)])
    assert pick_layers(undefined) == {"m": {"gradcam": "b"}}
    # an undefined agreement never beats a defined one, however low
    mixed = _table([("m", "gradcam", "a", 0, -0.9), ("m", "gradcam", "b", 1, math.nan)])
    assert pick_layers(mixed) == {"m": {"gradcam": "a"}}


def test_entries_label_every_swept_row_and_run_it_on_its_own_model_only() -> None:
    picks = {"vit_s2": {"gradcam": "blocks.1"}, "cnn_s2": {"gradcam": "features.1", "hirescam": "features.0"}}
    entries = swept_entries(picks, ("gradcam", "hirescam", "layercam"))
    assert entries == (
        PlannedMethod("gradcam", label=f"gradcam@{SWEPT}", models=("cnn_s2",), layer="features.1"),
        PlannedMethod("hirescam", label=f"hirescam@{SWEPT}", models=("cnn_s2",), layer="features.0"),
        PlannedMethod("gradcam", label=f"gradcam@{SWEPT}", models=("vit_s2",), layer="blocks.1"),
    )
    assert swept_label("layercam") == "layercam@swept"


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _shipped() -> dict[str, Any]:
    data = yaml.safe_load(builtin_protocols().get("synth-v1").read_text())
    assert isinstance(data, dict)
    return data


def test_synth_v1_sweeps_its_granularity_methods_on_validation_images() -> None:
    protocol = load_protocol("synth-v1")
    assert protocol.layer_sweep == LayerSweep(split="val", images=64)
    assert swept_methods(protocol) == ("gradcam", "layercam", "hirescam")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"split": "test"},
            r"layer_sweep\.split: 'test'; pick the layer on another split than the evaluated 'test': train, val",
        ),
        ({"split": "dev"}, r"layer_sweep\.split: 'dev'"),
        ({"images": 0}, r"layer_sweep\.images: 0; must lie in 1\.\.1000 \(the val split's scenes\)"),
        ({"images": 1001}, r"layer_sweep\.images: 1001"),
    ],
)
def test_a_bad_layer_sweep_is_refused_naming_the_file_and_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    data = _shipped()
    data["layer_sweep"].update(change)
    path = _write(tmp_path, data)
    with pytest.raises(SpecError, match=message) as caught:
        load_protocol(path)
    assert str(path) in str(caught.value)


def test_a_layer_sweep_needs_the_granularity_check(tmp_path: Path) -> None:
    data = _shipped()
    del data["checks"]["granularity"]
    with pytest.raises(SpecError, match=r"layer_sweep: needs checks\.granularity"):
        load_protocol(_write(tmp_path, data))


def test_the_sweep_config_runs_granularity_alone_on_the_sweep_split() -> None:
    protocol = load_protocol("synth-v1")
    config = run_configs(protocol, [{"method": "gradcam"}])[0]
    assert protocol.layer_sweep is not None
    swept = sweep_config(config, protocol.layer_sweep, swept_methods(protocol))
    assert (swept.truthset.split, swept.truthset.limit) == ("val", 64)
    assert swept.evaluation.checks == ("granularity",) and swept.evaluation.images == 64
    assert swept.evaluation.options == {
        "causal": {"filler": "inpaint", "materiality": {"obstacle": 0.5, "steering": 0.02}},
        "granularity": {"methods": ["gradcam", "layercam", "hirescam"]},
    }
    assert swept.models == config.models and swept.methods == ()
