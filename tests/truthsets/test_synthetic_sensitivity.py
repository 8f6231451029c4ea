"""The steering cause mask is the label's sensitivity: where the rendering moves with curvature, heading or
offset, far road and sidewalks included, never the sky; the old ego-lane road mask stays as plausibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gradsum.truthsets import open_truthset
from gradsum.truthsets.readers import synthetic as reader_module
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.render import IDS, ego_lane_mask, render
from gradsum.truthsets.synthetic.sensitivity import NUDGE, label_sensitivity_mask

SIZE = (96, 192)


def _scene(seed: int) -> sc.SceneParams:
    return sc.sample_scene(np.random.default_rng([seed, 0]), SIZE)


def _changed(params: sc.SceneParams, **change: float) -> np.ndarray:
    before, after = render(params), render(params.replace(**change))
    return np.any(before.image != after.image, axis=-1) | (before.labels != after.labels)


def test_the_mask_is_every_pixel_a_small_nudge_of_a_steering_latent_changes() -> None:
    # by hand: NUDGE = 0.05 of each sampling range, both ways (curvature ±0.02, heading ±0.05, offset ±0.6)
    assert NUDGE == 0.05
    params = _scene(3)
    expected = np.zeros(SIZE, dtype=bool)
    for name, step in (("curvature", 0.002), ("heading", 0.005), ("offset", 0.06)):
        for sign in (-1.0, 1.0):
            expected |= _changed(params, **{name: getattr(params, name) + sign * step})
    mask = label_sensitivity_mask(params)
    assert mask.dtype == bool and np.array_equal(mask, expected)
    # deterministic: the same scene gives the same mask
    assert np.array_equal(label_sensitivity_mask(params), mask)


def test_the_mask_reaches_beyond_the_near_ego_lane() -> None:
    look_ahead_row = sc.HORIZON * SIZE[0] + sc.FOCAL * SIZE[1] * sc.CAMERA_HEIGHT / sc.LOOK_AHEAD
    far = (np.arange(SIZE[0]) + 0.5 < look_ahead_row)[:, None]
    for seed in range(5):
        params = _scene(seed).replace(sidewalk_right=2.0)
        labels = render(params).labels
        mask = label_sensitivity_mask(params)
        outside = mask & ~ego_lane_mask(params, sc.LOOK_AHEAD)
        # road beyond the 15 m look-ahead (curvature bends it most there) and the sidewalk's edges
        assert (outside & far & (labels == IDS["road"])).sum() > 10
        assert (outside & (labels == IDS["sidewalk"])).sum() > 10


def test_the_mask_leaves_out_sky_buildings_and_trees() -> None:
    # Without billboards (poles, signs, cars, people stand relative to the lane and may move across the
    # sky), nothing above the horizon follows the lane.
    for seed in range(5):
        params = _scene(seed).replace(poles=(), objects=())
        labels = render(params).labels
        mask = label_sensitivity_mask(params)
        assert mask.any()
        assert not mask[np.isin(labels, [IDS["sky"], IDS["building"], IDS["vegetation"]])].any()
        assert not mask[: int(sc.HORIZON * SIZE[0])].any()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruthSet:
    root: Path = generate(tmp_path_factory.mktemp("sensitivity") / "set", count=8, seed=5, size=(64, 128))
    opened = open_truthset(root, "train")
    assert isinstance(opened, SyntheticTruthSet)
    return opened


def test_the_reader_serves_the_sensitivity_mask_once_per_index(
    synthetic: SyntheticTruthSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = reader_module.label_sensitivity_mask

    def counting(params: sc.SceneParams) -> np.ndarray:
        calls.append(1)
        return real(params)

    monkeypatch.setattr(reader_module, "label_sensitivity_mask", counting)
    fresh = SyntheticTruthSet(synthetic.root, synthetic.split)
    first = fresh.cause_mask(1, "steering")
    assert first is not None and np.array_equal(first, real(fresh.scene(1)))
    first[:] = False  # a caller editing its copy edits nobody else's
    again = fresh.cause_mask(1, "steering")
    assert again is not None and np.array_equal(again, real(fresh.scene(1)))
    assert calls == [1]


def test_the_plausibility_mask_is_the_near_ego_lane_road(synthetic: SyntheticTruthSet) -> None:
    h, w = synthetic[0].labels.shape
    near = (np.arange(h) + 0.5) > sc.HORIZON * h + sc.FOCAL * w * sc.CAMERA_HEIGHT / sc.LOOK_AHEAD
    for index in range(len(synthetic)):
        labels, params = synthetic[index].labels, synthetic.scene(index)
        plausible = synthetic.plausibility_mask(index, "steering")
        assert plausible is not None
        assert np.array_equal(plausible, ego_lane_mask(params, sc.LOOK_AHEAD) & (labels == IDS["road"]))
        assert not plausible[~near].any()
        obstacle = synthetic.cause_mask(index, "obstacle")
        same = synthetic.plausibility_mask(index, "obstacle")
        if obstacle is None or same is None:
            assert obstacle is None and same is None
        else:
            assert np.array_equal(obstacle, same)
