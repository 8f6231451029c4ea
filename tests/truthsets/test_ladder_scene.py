"""The difficulty ladder's scene knobs, occlusion and clutter: level 0 is the scene itself, what a level adds
is in the scene (labels, instances, scene JSON) and never an obstacle nor in front of one, the targets and
the obstacle's pixels stay, markings of other lanes are painted where their geometry says, and a set
rendered with them keeps exact cause masks and re-renders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ground_oracle import ground_xz

from gradsum.truthsets import open_truthset
from gradsum.truthsets.synthetic import KNOBS, Difficulty, generate, render, sample_scene
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.ladder import MAX_LEVEL
from gradsum.truthsets.synthetic.render import IDS, ego_lane_mask, obstacle_instances
from gradsum.truthsets.synthetic.sensitivity import label_sensitivity_mask

SIZE = (64, 128)
SEEDS = range(12)
SCENE_KNOBS = [name for name in KNOBS.names() if KNOBS.get(name).place is not None]


def _params(seed: int) -> sc.SceneParams:
    return sample_scene(np.random.default_rng(seed), SIZE, 0.0)


def test_the_scene_knobs_are_occlusion_and_clutter_and_act_on_the_scene_alone() -> None:
    assert SCENE_KNOBS == ["clutter", "occlusion"]
    assert all(KNOBS.get(name).apply is None for name in SCENE_KNOBS)


@pytest.mark.parametrize("knob", SCENE_KNOBS)
def test_level_zero_is_the_scene_itself(knob: str) -> None:
    params = _params(0)
    zero = Difficulty.of({knob: 0})
    assert zero.scene(params) is params
    np.testing.assert_array_equal(zero.render(params).image, render(params).image)
    # a scene without markings writes the JSON it wrote before markings existed
    assert "markings" not in params.to_dict()


@pytest.mark.parametrize("knob", SCENE_KNOBS)
def test_what_a_level_adds_is_in_the_scene_never_an_obstacle_nor_in_front_of_one(knob: str) -> None:
    for seed in SEEDS:
        params = _params(seed)
        clean = render(params)
        for level in range(1, MAX_LEVEL + 1):
            difficulty = Difficulty.of({knob: level})
            hard = difficulty.scene(params)
            assert difficulty.scene(_params(seed)) == hard  # same seed, same scene
            assert sc.SceneParams.from_dict(json.loads(json.dumps(hard.to_dict()))) == hard
            # only additions: every object keeps its place (and so its instance id), the targets stay
            assert hard.objects[: len(params.objects)] == params.objects
            assert hard.poles[: len(params.poles)] == params.poles
            assert sc.targets(hard) == sc.targets(params)
            assert sc.obstacle_objects(hard) == sc.obstacle_objects(params)
            added = hard.objects[len(params.objects) :]
            assert not any(sc.in_ego_lane(o) and o.z <= sc.OBSTACLE_DISTANCE for o in added)
            drawn = render(hard)
            assert obstacle_instances(hard) == obstacle_instances(params)
            for instance in obstacle_instances(params):
                # nothing added stands in front of an obstacle: its pixels are exactly the clean scene's
                np.testing.assert_array_equal(drawn.instances == instance, clean.instances == instance)
            np.testing.assert_array_equal(difficulty.render(params).labels, drawn.labels)


def _hidden_road(params: sc.SceneParams, level: int) -> float:
    clean = render(params).labels == IDS["road"]
    hard = render(Difficulty.of({"occlusion": level}).scene(params)).labels == IDS["road"]
    assert not (hard & ~clean).any()  # occluders only cover road, they never make any
    return float((clean & ~hard).sum() / clean.sum())


def test_more_of_the_road_hidden_per_occlusion_level() -> None:
    hidden = [np.mean([_hidden_road(_params(seed), level) for seed in SEEDS]) for level in (1, 2, 3)]
    assert 0.0 < hidden[0] < hidden[1] < hidden[2]


def test_kerbside_occluders_stand_beside_the_road_within_the_kerb_gap() -> None:
    kerbside = 0
    for seed in SEEDS:
        params = _params(seed)
        hard = Difficulty.of({"occlusion": 3}).scene(params)
        for o in hard.objects[len(params.objects) :]:
            lead = sc.in_ego_lane(o) and o.z >= sc.FAR_EGO_START
            oncoming = abs(o.lateral - sc.ONCOMING) <= 0.3 + 1e-9
            right = 0 <= o.lateral - o.width / 2 - sc.EGO_HALF <= sc.KERB_GAP + 1e-9
            left = 0 <= sc.ROAD_LEFT - (o.lateral + o.width / 2) <= sc.KERB_GAP + 1e-9
            assert lead or oncoming or right or left, o
            kerbside += right or left
    assert kerbside > len(SEEDS)


@pytest.mark.parametrize("size", [SIZE, (96, 192)])
def test_car_or_person_pixels_in_the_ego_lane_still_mean_obstacle_at_every_level(
    size: tuple[int, int],
) -> None:
    # the clean sampler's invariant (test_synthetic_scene): what the scene knobs add never puts a car or
    # person pixel on the ego lane's ground within 15 m, so the obstacle label stays what the pixels show
    for knob in SCENE_KNOBS:
        for seed in range(40):
            params = Difficulty.of({knob: MAX_LEVEL}).scene(
                sample_scene(np.random.default_rng(seed), size, 0.0)
            )
            hits = np.isin(render(params).labels[ego_lane_mask(params)], [IDS["car"], IDS["person"]]).sum()
            assert (hits > 0) == bool(sc.obstacle(params)), (knob, seed)


def test_clutter_adds_more_smaller_objects_per_level_and_markings_inside_the_oncoming_lane() -> None:
    counts = []
    for level in (1, 2, 3):
        added = 0
        for seed in SEEDS:
            params = _params(seed)
            hard = Difficulty.of({"clutter": level}).scene(params)
            added += len(hard.objects) + len(hard.poles) - len(params.objects) - len(params.poles)
            assert len(hard.markings) == level
            for m in hard.markings:
                # clear of the centre line and of the left edge line: another lane's paint only
                assert (
                    abs(m.lateral - sc.ONCOMING) + m.width / 2 <= sc.LANE_WIDTH / 2 - sc.MARKING_MARGIN + 1e-9
                )
            for o in hard.objects[len(params.objects) :]:
                assert (o.cls == "car" and abs(o.lateral - sc.ONCOMING) <= 0.3 + 1e-9) or o.height <= 1.35
        counts.append(added)
    assert counts[0] < counts[1] < counts[2]


def test_a_marking_is_painted_where_its_geometry_says_by_hand() -> None:
    # a straight road centred on the camera, nothing standing on it: the lane offset of a ground pixel is
    # its world x = (u − W/2) / f · z, with z = f · 1.5 / (v − horizon) at the pixel centre (u, v)
    base = _params(1).replace(curvature=0.0, heading=0.0, offset=0.0, objects=(), poles=())
    marking = sc.Marking(lateral=-3.5, width=1.0, near=6.0, far=20.0, dash=0.5, period=2.0, phase=0.0)
    clean, painted = render(base), render(base.replace(markings=(marking,)))
    x, z = ground_xz(SIZE)
    ground = np.where(np.isfinite(z), z, 0.0)
    expected = (np.abs(x + 3.5) < 0.5) & (ground % 2.0 < 0.5) & (ground >= 6.0) & (ground <= 20.0)
    assert expected.sum() > 10
    np.testing.assert_array_equal((painted.image != clean.image).any(axis=2), expected)
    np.testing.assert_array_equal(painted.labels, clean.labels)  # markings are road


def test_a_set_with_scene_knobs_keeps_exact_causes_and_re_renders(tmp_path: Path) -> None:
    settings = {"count": 6, "size": (32, 64), "seed": 2}
    clean_root = generate(tmp_path / "clean", **settings)
    hard_root = generate(
        tmp_path / "hard", **settings, difficulty={"occlusion": 3, "clutter": 2, "shadows": 1}
    )
    clean, hard = open_truthset(clean_root, "train"), open_truthset(hard_root, "train")
    changed_masks = 0
    for index in range(len(hard)):
        params = hard.scene(index)
        assert len(params.objects) > len(clean.scene(index).objects)
        assert hard.record(index)["targets"] == clean.record(index)["targets"]
        # the steering cause is the sensitivity of the scene as drawn, occluders included: a lane pixel an
        # occluder hides is not in it unless the occluder itself moves there
        steering = hard.cause_mask(index, "steering")
        np.testing.assert_array_equal(steering, label_sensitivity_mask(params))
        changed_masks += not np.array_equal(steering, clean.cause_mask(index, "steering"))
        obstacle, clean_obstacle = hard.cause_mask(index, "obstacle"), clean.cause_mask(index, "obstacle")
        assert (obstacle is None) == (clean_obstacle is None)
        if obstacle is not None:
            np.testing.assert_array_equal(obstacle, clean_obstacle)
        # a counterfactual that changes nothing is the stored frame: the scene knobs are in the parameters
        np.testing.assert_array_equal(hard.counterfactual(index).image, hard[index].image)
        np.testing.assert_array_equal(hard[index].labels, render(params).labels)
    assert changed_masks > 0
