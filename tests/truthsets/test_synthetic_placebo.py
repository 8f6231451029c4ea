"""The in-domain placebo of an erasure: the class re-rendered with only its texture noise redrawn."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from gradsum.errors import GradSUMError
from gradsum.truthsets import open_truthset
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.render import IDS, placebo_params

SIZE = (64, 128)


@pytest.fixture(scope="module")
def truthset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruthSet:
    root = generate(tmp_path_factory.mktemp("placebo") / "set", count=12, seed=5, size=SIZE)
    opened = open_truthset(root, "train")
    assert isinstance(opened, SyntheticTruthSet)
    return opened


def _first_showing(truthset: SyntheticTruthSet, cls: str) -> int:
    return next(i for i in range(len(truthset)) if (truthset[i].labels == IDS[cls]).any())


def test_placebo_params_change_only_the_class_texture_seed(truthset: SyntheticTruthSet) -> None:
    params = truthset.scene(0)
    placebo = placebo_params(params, "road")
    # the documented derivation: crc32 of the scene's texture seed and the class name
    expected = zlib.crc32(f"{params.texture_seed}\0placebo\0road".encode())
    assert placebo.class_texture_seeds == {**params.class_texture_seeds, "road": expected}
    assert expected != params.texture_seed
    assert placebo.replace(class_texture_seeds=params.class_texture_seeds) == params
    assert placebo_params(params, "road") == placebo  # deterministic
    assert placebo_params(params, "car").class_texture_seeds["car"] != expected  # one seed per class


def test_placebo_seed_differs_from_a_seed_the_class_already_borrows(truthset: SyntheticTruthSet) -> None:
    params = truthset.scene(0)
    taken = zlib.crc32(f"{params.texture_seed}\0placebo\0sky".encode())
    borrowed = params.replace(class_texture_seeds={"sky": taken})
    assert placebo_params(borrowed, "sky").class_texture_seeds["sky"] == (taken + 1) % 2**32


def test_placebo_params_refuse_an_unrendered_class(truthset: SyntheticTruthSet) -> None:
    with pytest.raises(GradSUMError, match=r"'bus'.*valid: "):
        placebo_params(truthset.scene(0), "bus")


@pytest.mark.parametrize("cls", sc.CLASSES)
def test_placebo_changes_some_pixels_of_the_class_and_nothing_else(
    truthset: SyntheticTruthSet, cls: str
) -> None:
    index = _first_showing(truthset, cls)
    before, after = truthset[index], truthset.placebo(index, cls)
    own = before.labels == IDS[cls]
    changed = np.any(before.image != after.image, axis=-1)
    np.testing.assert_array_equal(after.labels, before.labels)
    assert not changed[~own].any()
    assert changed[own].any()
    assert after.targets == before.targets
    assert after.meta["placebo"] == {"cls": cls}
