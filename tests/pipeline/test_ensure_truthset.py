"""The configured synthetic set: rendered with every generate setting, and compared with what is on disk."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gradsum.errors import SpecError
from gradsum.pipeline import config_from_dict
from gradsum.pipeline.inputs import ensure_truthset
from gradsum.truthsets import open_truthset
from gradsum.truthsets.layout import MANIFEST

GENERATE = {"count": 30, "seed": 1, "size": [48, 96], "decorrelated": True}


def test_the_tint_splits_are_rendered_when_the_config_asks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_from_dict({"truthset": {"path": str(tmp_path / "synth"), "generate": GENERATE}})
    root = ensure_truthset(config)
    test, decorrelated = open_truthset(root, "test"), open_truthset(root, "test_decorrelated")
    assert len(decorrelated) == len(test) > 0

    # a set rendered before the manifest recorded `decorrelated` was rendered without the tint splits
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["parameters"]["decorrelated"]
    (root / MANIFEST).write_text(json.dumps(manifest))
    caplog.set_level(logging.WARNING)
    ensure_truthset(config)
    assert [r.getMessage() for r in caplog.records if "decorrelated False (config: True)" in r.getMessage()]
    caplog.clear()
    plain = config_from_dict(
        {"truthset": {"path": str(root), "generate": {**GENERATE, "decorrelated": False}}}
    )
    ensure_truthset(plain)
    assert not caplog.records


def test_a_harder_set_is_rendered_from_the_configs_difficulty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    generate = {"count": 30, "seed": 1, "size": [32, 64]}
    hard = config_from_dict(
        {"truthset": {"path": str(tmp_path / "hard"), "generate": {**generate, "difficulty": ["camera=2"]}}}
    )
    root = ensure_truthset(hard)
    recorded = json.loads((root / MANIFEST).read_text())["parameters"]["difficulty"]
    assert recorded == {"camera": 2, "clutter": 0, "occlusion": 0, "shadows": 0, "weather": 0}
    caplog.set_level(logging.WARNING)
    ensure_truthset(hard)
    assert not caplog.records
    # the same folder asked for clean: used as it is, with a warning naming both difficulties
    ensure_truthset(config_from_dict({"truthset": {"path": str(root), "generate": generate}}))
    assert [
        r.getMessage() for r in caplog.records if "difficulty {'camera': 2} (config: {})" in r.getMessage()
    ]


def test_an_unknown_knob_is_refused_naming_the_config_field(tmp_path: Path) -> None:
    data = {"truthset": {"path": str(tmp_path / "x"), "generate": {"count": 30, "difficulty": ["fogg=1"]}}}
    with pytest.raises(SpecError, match=r"truthset\.generate\.difficulty: .*fogg"):
        config_from_dict(data)
    data["truthset"]["generate"]["difficulty"] = ["camera=4"]
    with pytest.raises(SpecError, match=r"truthset\.generate\.difficulty: .*0\.\.3"):
        config_from_dict(data)
