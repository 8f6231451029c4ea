"""Mixed-level training sets (`generate(mix=...)`): train and val scenes each draw their own level of the mix's
knobs, reproducibly and as recorded; test stays clean; `only` renders some splits alone; the plumbing through
the run config and the CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from gradsum.cli import main
from gradsum.errors import GradSUMError, SpecError
from gradsum.pipeline.config import GenerateConfig, config_from_dict
from gradsum.pipeline.inputs import ensure_rendered
from gradsum.truthsets import open_truthset
from gradsum.truthsets.layout import MANIFEST
from gradsum.truthsets.synthetic import KNOBS, Difficulty, generate
from gradsum.truthsets.synthetic.ladder import MAX_LEVEL
from gradsum.truthsets.synthetic.writer import (
    MIXED_SPLITS,
    SplitPlan,
    check_mix,
    frame_id,
    mix_level,
    scene_params,
    split_seed,
)

SIZE = (32, 64)


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern)) if p.is_file()}


def _scene_json(root: Path, split: str, index: int) -> dict[str, object]:
    data = json.loads(frame_id(split, index).scene(root).read_text())
    assert isinstance(data, dict)
    return data


def test_each_mixed_scene_is_rendered_at_its_own_draw_and_records_it(tmp_path: Path) -> None:
    knobs = tuple(KNOBS.names())
    mixed = generate(tmp_path / "mixed", count=20, size=SIZE, seed=3, mix=knobs)
    for split in MIXED_SPLITS:
        plan = SplitPlan(split, 0, split_seed(3, split), 0.0)
        stored = open_truthset(mixed, split)
        for index in range(len(stored)):
            params = scene_params(plan, index, SIZE)
            # the oracle: the scene rendered at the levels its texture seed draws, knob by knob
            levels = {k: mix_level(params, k) for k in knobs}
            expected = Difficulty.of(levels).render(params)
            np.testing.assert_array_equal(stored[index].image, expected.image)
            np.testing.assert_array_equal(stored[index].labels, expected.labels)
            assert _scene_json(mixed, split, index)["difficulty"] == levels


def test_a_mix_level_is_uniform_over_the_levels_and_its_own_knobs_alone() -> None:
    plan = SplitPlan("train", 0, split_seed(0, "train"), 0.0)
    scenes = [scene_params(plan, i, SIZE) for i in range(400)]
    counts = np.bincount([mix_level(p, "camera") for p in scenes], minlength=MAX_LEVEL + 1)
    assert len(counts) == MAX_LEVEL + 1 and counts.min() > 60  # 100 expected per level
    # another knob's draw is not the same draw
    assert [mix_level(p, "camera") for p in scenes] != [mix_level(p, "shadows") for p in scenes]


def test_test_stays_clean_and_the_manifest_counts_the_levels(tmp_path: Path) -> None:
    clean = generate(tmp_path / "clean", count=20, size=SIZE, seed=3)
    mixed = generate(tmp_path / "mixed", count=20, size=SIZE, seed=3, mix=["shadows", "camera"])
    test_files = {k: v for k, v in _files(mixed, "*").items() if "/test/" in k}
    assert test_files and test_files == {k: v for k, v in _files(clean, "*").items() if "/test/" in k}
    assert _files(mixed, "*gtFine*.png") == _files(clean, "*gtFine*.png")
    manifest = json.loads((mixed / MANIFEST).read_text())
    assert manifest["parameters"]["mix"] == ["camera", "shadows"]
    assert "mix" not in json.loads((clean / MANIFEST).read_text())["parameters"]
    assert "mix_levels" not in manifest["splits"]["test"]
    for split in MIXED_SPLITS:
        count = manifest["splits"][split]["count"]
        drawn = [_scene_json(mixed, split, i)["difficulty"] for i in range(count)]
        for knob in ("camera", "shadows"):
            hand = [
                sum(1 for d in drawn if isinstance(d, dict) and d[knob] == lv) for lv in range(MAX_LEVEL + 1)
            ]
            assert manifest["splits"][split]["mix_levels"][knob] == hand
            assert sum(hand) == count


def test_a_knob_mixed_and_given_a_level_is_drawn_in_train_and_val_and_at_the_level_in_test(
    tmp_path: Path,
) -> None:
    both = generate(
        tmp_path / "both", count=20, size=SIZE, seed=3, mix=["occlusion"], difficulty={"occlusion": 3}
    )
    mixed = generate(tmp_path / "mixed", count=20, size=SIZE, seed=3, mix=["occlusion"])
    fixed = generate(tmp_path / "fixed", count=20, size=SIZE, seed=3, difficulty={"occlusion": 3})
    for split in ("train", "val", "test"):
        source = fixed if split == "test" else mixed
        ours = {k: v for k, v in _files(both, "*").items() if f"/{split}/" in k}
        assert ours and ours == {k: v for k, v in _files(source, "*").items() if f"/{split}/" in k}
    parameters = json.loads((both / MANIFEST).read_text())["parameters"]
    assert parameters["mix"] == ["occlusion"] and parameters["difficulty"]["occlusion"] == 3


def test_a_mixed_scenes_re_render_goes_through_its_own_levels(tmp_path: Path) -> None:
    mixed = open_truthset(generate(tmp_path / "mixed", count=20, size=SIZE, seed=3, mix=["weather"]), "train")
    levels = [mix_level(mixed.scene(i), "weather") for i in range(len(mixed))]
    index = next(i for i, level in enumerate(levels) if level > 0)
    # a counterfactual that changes nothing is the stored frame, at the scene's drawn level
    np.testing.assert_array_equal(mixed.counterfactual(index).image, mixed[index].image)


def test_the_same_seed_gives_the_same_files(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", count=12, size=SIZE, seed=5, mix=["camera"])
    second = generate(tmp_path / "b", count=12, size=SIZE, seed=5, mix=["camera"], workers=2)
    assert _files(first, "*") == _files(second, "*")


def test_bad_mixes_are_refused_naming_the_option() -> None:
    with pytest.raises(GradSUMError, match=r"--mix.*valid: .*camera"):
        check_mix(["fog"])
    with pytest.raises(GradSUMError, match="--mix camera, camera: a knob is named twice"):
        check_mix(["camera", "camera"])
    assert check_mix(["shadows", "camera"]) == ("camera", "shadows")


def test_only_renders_the_splits_named_with_their_scenes(tmp_path: Path) -> None:
    whole = generate(tmp_path / "whole", count=20, size=SIZE, seed=3, difficulty={"camera": 2})
    alone = generate(tmp_path / "alone", count=20, size=SIZE, seed=3, difficulty={"camera": 2}, only=["test"])
    assert {k: v for k, v in _files(whole, "*").items() if "/test/" in k} == {
        k: v for k, v in _files(alone, "*").items() if k != MANIFEST
    }
    manifest = json.loads((alone / MANIFEST).read_text())
    assert list(manifest["splits"]) == ["test"] and manifest["parameters"]["only"] == ["test"]
    assert len(open_truthset(alone, "test")) == 2
    with pytest.raises(GradSUMError, match="--only 'holdout': not a split; valid: train, val, test"):
        generate(tmp_path / "bad", count=20, size=SIZE, only=["holdout"])


def test_a_run_config_renders_the_mix_and_refuses_a_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = GenerateConfig(count=10, seed=1, size=SIZE, mix=("camera",), only=("train", "test"))
    root = ensure_rendered(tmp_path / "set", settings, "truthset")
    manifest = json.loads((root / MANIFEST).read_text())
    assert sorted(manifest["splits"]) == ["test", "train"] and manifest["parameters"]["mix"] == ["camera"]
    with caplog.at_level(logging.WARNING):
        ensure_rendered(root, settings, "truthset")  # as rendered: no warning
        assert not caplog.records
        ensure_rendered(root, GenerateConfig(count=10, seed=1, size=SIZE, only=("test",)), "truthset")
    assert "mix ['camera'] (config: [])" in caplog.text and "only" not in caplog.text
    for generate_block, field in (({"mix": ["fog"]}, "mix"), ({"only": ["holdout"]}, "only")):
        with pytest.raises(SpecError, match=rf"cfg\.truthset\.generate\.{field}: .*--{field}"):
            config_from_dict({"truthset": {"generate": generate_block}}, "cfg")


def test_cli_mix_and_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    args = ["generate", "--out", str(out), "--count", "10", "--size", "32x64"]
    assert main([*args, "--mix", "shadows", "--mix", "camera", "--only", "val"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["parameters"]["mix"] == ["camera", "shadows"] and list(manifest["splits"]) == ["val"]
    capsys.readouterr()
    assert main([*args, "--overwrite", "--mix", "fog"]) == 2
    err = capsys.readouterr().err
    assert "--mix" in err and err.count("\n") == 1
