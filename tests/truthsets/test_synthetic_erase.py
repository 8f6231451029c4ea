"""In-domain erasure of every rendered class: removal shows what is behind, repainting borrows a donor's look."""

from __future__ import annotations

import numpy as np
import pytest

from gradsum.errors import GradSUMError
from gradsum.truthsets import open_truthset
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate, render
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.render import IDS, erase_params

SIZE = (64, 128)


@pytest.fixture(scope="module")
def truthset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruthSet:
    root = generate(tmp_path_factory.mktemp("erase") / "set", count=12, seed=5, size=SIZE)
    opened = open_truthset(root, "train")
    assert isinstance(opened, SyntheticTruthSet)
    return opened


def _first_showing(truthset: SyntheticTruthSet, cls: str) -> int:
    return next(i for i in range(len(truthset)) if (truthset[i].labels == IDS[cls]).any())


def test_every_rendered_class_has_an_erasure() -> None:
    assert set(sc.ERASURE) == set(sc.CLASSES)
    assert {c for c, how in sc.ERASURE.items() if how == "repainted"} == {"sky", "terrain"}
    assert SyntheticTruthSet.ERASURE is sc.ERASURE


@pytest.mark.parametrize("cls", sc.CLASSES)
def test_erase_changes_exactly_the_class_pixels(truthset: SyntheticTruthSet, cls: str) -> None:
    index = _first_showing(truthset, cls)
    before, after = truthset[index], truthset.erase(index, cls)
    own = before.labels == IDS[cls]
    changed = np.any(before.image != after.image, axis=-1) | (before.labels != after.labels)
    # every pixel of the class changes (grain alone differs almost surely), nothing else does
    assert np.array_equal(changed, own)
    assert after.meta["erase"]["how"] == sc.ERASURE[cls]
    if sc.ERASURE[cls] == "removed":
        assert not (after.labels == IDS[cls]).any()
        assert after.meta["erase"]["donor"] is None
    else:
        assert np.array_equal(after.labels, before.labels)
        assert after.meta["erase"]["donor"] == (index + 1) % len(truthset)


def test_road_erasure_shows_the_terrain_beneath_markings_included(truthset: SyntheticTruthSet) -> None:
    index = _first_showing(truthset, "road")
    params = truthset.scene(index)
    before, after = truthset[index], truthset.erase(index, "road")
    road = before.labels == IDS["road"]
    assert not (after.labels == IDS["road"]).any()
    assert np.all(after.labels[road] == IDS["terrain"])
    assert after.targets == before.targets
    assert np.array_equal(render(params.replace(removed=("road",))).image, after.image)


@pytest.mark.parametrize("cls", ["sky", "terrain"])
def test_repaint_takes_the_donor_colour_and_texture(truthset: SyntheticTruthSet, cls: str) -> None:
    index = _first_showing(truthset, cls)
    donor = next(
        d
        for d in range(len(truthset))
        if d != index
        and truthset.scene(d).palette[cls] != truthset.scene(index).palette[cls]
        and (cls != "sky" or truthset.scene(d).sky_cue != truthset.scene(index).sky_cue)
    )
    params, donor_params = truthset.scene(index), truthset.scene(donor)
    erased = erase_params(params, cls, donor_params)
    assert erased.palette[cls] == donor_params.palette[cls]
    assert erased.class_texture_seeds == {cls: donor_params.texture_seed}
    assert erased.sky_cue == (donor_params.sky_cue if cls == "sky" else params.sky_cue)
    after = truthset.erase(index, cls, donor=donor)
    own = truthset[index].labels == IDS[cls]
    # Oracle: the donor's own look on this scene's pixels of the class. A render of this scene with the
    # donor's palette entry, tint and texture seed for everything gives the class's pixels exactly.
    donor_look = render(
        params.replace(
            palette={**params.palette, cls: donor_params.palette[cls]},
            sky_cue=erased.sky_cue,
            texture_seed=donor_params.texture_seed,
        )
    )
    assert np.array_equal(after.image[own], donor_look.image[own])
    assert not np.array_equal(after.image[own], truthset[index].image[own])
    # the parameters survive the scene JSON round trip, so the erased frame re-renders exactly
    assert sc.SceneParams.from_dict(erased.to_dict()) == erased
    assert np.array_equal(render(sc.SceneParams.from_dict(erased.to_dict())).image, after.image)


def test_erase_is_deterministic_and_defaults_to_the_next_scene(truthset: SyntheticTruthSet) -> None:
    last = len(truthset) - 1
    assert truthset.donor(last) == 0 and truthset.donor(0) == 1
    a, b = truthset.erase(last, "sky"), truthset.erase(last, "sky", donor=0)
    assert np.array_equal(a.image, b.image)


def test_erase_rejects_unknown_classes_and_repaints_without_donor() -> None:
    params = sc.sample_scene(np.random.default_rng(0), SIZE)
    with pytest.raises(GradSUMError, match=r"cls='tree'.*valid: road, sidewalk"):
        erase_params(params, "tree", params)
    with pytest.raises(GradSUMError, match="donor_params"):
        erase_params(params, "sky")
