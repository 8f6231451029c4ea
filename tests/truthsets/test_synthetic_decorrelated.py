"""The shortcut's measurements without attribution: the tint splits (test_decorrelated, test_agreeing)
and the opposite-tint repaint of the sky."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradsum.errors import TruthSetError
from gradsum.fileio import read_json_object
from gradsum.truthsets import open_truthset
from gradsum.truthsets.layout import MANIFEST
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import TINT_SPLITS, generate, render
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.render import IDS

SIZE = (48, 96)
COUNT = 30
#: train 12, val 6, test 12: enough test scenes that the fair coin gives both agreeing and disagreeing ones
FRACTIONS = (0.4, 0.2, 0.4)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tint") / "set"
    return generate(folder, count=COUNT, seed=3, size=SIZE, splits=FRACTIONS, decorrelated=True)


def _open(root: Path, split: str) -> SyntheticTruthSet:
    opened = open_truthset(root, split)
    assert isinstance(opened, SyntheticTruthSet)
    return opened


def _sign(steer: float) -> int:
    return 1 if steer >= 0 else -1


@pytest.mark.parametrize("split", list(TINT_SPLITS))
def test_every_scene_of_a_tint_split_has_its_fixed_tint(root: Path, split: str) -> None:
    truthset = _open(root, split)
    agrees = TINT_SPLITS[split]
    assert len(truthset) == len(_open(root, "test")) == 12
    for index in range(len(truthset)):
        record = truthset.record(index)
        cue = record["parameters"]["sky_cue"]
        # read back from the files, against the sign of the stored steering target
        assert (cue == _sign(record["targets"]["steering"])) is agrees
        assert record["shortcut_agrees"] is agrees
    split_entry = read_json_object(root / MANIFEST, TruthSetError)["splits"][split]
    assert split_entry["shortcut_agreement"] == (1.0 if agrees else 0.0)
    assert split_entry["source"] == "test" and split_entry["tint_agrees"] is agrees


@pytest.mark.parametrize("split", list(TINT_SPLITS))
def test_tint_splits_hold_the_test_scenes_apart_from_the_sky(root: Path, split: str) -> None:
    test, shifted = _open(root, "test"), _open(root, split)
    changed_scenes = 0
    for index in range(len(test)):
        before, after = test[index], shifted[index]
        assert after.targets == before.targets
        assert np.array_equal(after.labels, before.labels)
        assert after.instances is not None and before.instances is not None
        assert np.array_equal(after.instances, before.instances)
        sky = before.labels == IDS["sky"]
        assert np.array_equal(after.image[~sky], before.image[~sky])
        tint_changed = test.record(index)["shortcut_agrees"] is not TINT_SPLITS[split]
        changed_scenes += tint_changed
        # the sky changes exactly when the tint does, and then in every sky pixel
        assert np.array_equal(np.any(after.image != before.image, axis=-1), sky & tint_changed)
        assert shifted.scene(index) == test.scene(index).replace(sky_cue=shifted.scene(index).sky_cue)
    # the fair coin of the test split left some scenes to re-tint and some as they were
    assert 0 < changed_scenes < len(test)


def test_tint_splits_are_listed_and_read_without_the_sky_as_independent(root: Path) -> None:
    assert SyntheticTruthSet.splits(root, None) == ["train", "val", "test", *TINT_SPLITS]
    assert "sky" in _open(root, "test").causes["steering"].independent
    for split in TINT_SPLITS:
        causes = _open(root, split).causes
        assert "sky" not in causes["steering"].independent
        assert causes["steering"].causal == sc.CAUSES["steering"].causal


def test_tint_splits_are_opt_in(tmp_path: Path) -> None:
    plain = generate(tmp_path / "plain", count=3, seed=3, size=SIZE)
    manifest = read_json_object(plain / MANIFEST, TruthSetError)
    assert sorted(manifest["splits"]) == ["test", "train", "val"]
    assert manifest["parameters"]["decorrelated"] is False
    assert not (plain / "leftImg8bit" / "test_decorrelated").exists()
    with pytest.raises(TruthSetError, match="no split 'test_decorrelated'"):
        open_truthset(plain, "test_decorrelated")


def test_flip_tint_repaints_only_the_sky_with_the_opposite_tint(root: Path) -> None:
    truthset = _open(root, "train")
    for index in range(4):
        before, after = truthset[index], truthset.flip_tint(index)
        cue = truthset.scene(index).sky_cue
        assert after.meta["flip_tint"] == {"from": cue, "to": -cue}
        assert after.meta["scene"]["sky_cue"] == -cue
        assert after.targets == before.targets
        assert np.array_equal(after.labels, before.labels)
        sky = before.labels == IDS["sky"]
        assert sky.any()
        assert np.array_equal(np.any(after.image != before.image, axis=-1), sky)
        # warm (+1) adds red and removes blue (render._SKY_TINT): flipping warm → cool lowers red in every
        # sky pixel, cool → warm raises it
        red = after.image[..., 0].astype(int) - before.image[..., 0].astype(int)
        assert np.all(np.sign(red[sky]) == -cue)
        # and flipping back gives the stored frame
        back = render(sc.opposite_tint(sc.SceneParams.from_dict(after.meta["scene"])))
        assert np.array_equal(back.image, before.image)
