"""Scene model and renderer: targets follow the documented causes; counterfactuals touch only their factor."""

from __future__ import annotations

import numpy as np
import pytest

from gradsum.errors import GradSUMError
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.render import IDS, ego_lane_mask, render, render_counterfactual
from gradsum.truthsets.synthetic.writer import SplitPlan, scene_params, split_seed

SIZE = (96, 192)


def _scenes(
    count: int, seed: int = 7, shortcut: float = 0.0, size: tuple[int, int] = SIZE
) -> list[sc.SceneParams]:
    return [sc.sample_scene(np.random.default_rng([seed, i]), size, shortcut) for i in range(count)]


@pytest.fixture(scope="module")
def scenes() -> list[sc.SceneParams]:
    return _scenes(300)


def test_steering_is_the_documented_pursuit_formula(scenes: list[sc.SceneParams]) -> None:
    for p in scenes:
        by_hand = (p.curvature + 2 * p.heading / 15.0 - 2 * p.offset / 15.0**2) / sc.STEERING_SCALE
        assert sc.steering(p) == pytest.approx(by_hand, abs=1e-12)
        assert -1.0 <= sc.steering(p) <= 1.0
        vehicle = sc.vehicle(p)
        # ISO 8855 yaw rate: positive turning left, the opposite of the steering sign
        assert vehicle["yawRate"] / vehicle["speed"] == pytest.approx(-sc.steering(p) * sc.STEERING_SCALE)


def test_steering_sign_follows_road_curvature(scenes: list[sc.SceneParams]) -> None:
    for p in scenes:
        straight_ahead = p.replace(offset=0.0, heading=0.0)
        assert np.sign(sc.steering(straight_ahead)) == np.sign(p.curvature)
    steer = np.array([sc.steering(p) for p in scenes])
    curvature = np.array([p.curvature for p in scenes])
    assert np.corrcoef(steer, curvature)[0, 1] > 0.85


def test_road_in_the_image_bends_with_the_steering_sign(scenes: list[sc.SceneParams]) -> None:
    # The road's pixel centroid at the look-ahead row lies on the side the car steers to.
    row = int(sc.HORIZON * SIZE[0] + sc.FOCAL * SIZE[1] * sc.CAMERA_HEIGHT / sc.LOOK_AHEAD)
    clear = [p for p in scenes if abs(sc.steering(p)) > 0.2]
    for p in clear[:40]:
        labels = render(p.replace(objects=(), poles=())).labels
        cols = np.flatnonzero(labels[row] == IDS["road"])
        # the ego lane is the road's right part: its right edge moves with the lane centre
        assert np.sign(
            cols.max() + 1 - SIZE[1] / 2 - sc.FOCAL * SIZE[1] * sc.EGO_HALF / sc.LOOK_AHEAD
        ) == np.sign(sc.steering(p))


@pytest.mark.parametrize("size", [SIZE, (64, 128)])
def test_obstacle_label_matches_car_or_person_pixels_in_the_ego_lane(size: tuple[int, int]) -> None:
    scenes = _scenes(250, seed=11, size=size)
    labels = []
    for p in scenes:
        rendered = render(p)
        region = ego_lane_mask(p)
        hits = np.isin(rendered.labels[region], [IDS["car"], IDS["person"]]).sum()
        assert (hits > 0) == bool(rendered.targets["obstacle"]), p
        labels.append(rendered.targets["obstacle"])
    assert 0.4 < np.mean(labels) < 0.6


def test_objects_outside_the_ego_lane_or_range_never_count() -> None:
    base = _scenes(1)[0]
    car = sc.SceneObject("car", 10.0, 0.0, 1.8, 1.5, (200, 0, 0))
    assert sc.obstacle(base.replace(objects=(car,))) == 1
    for moved in ({"z": 20.0}, {"lateral": -3.5}, {"lateral": 2.0}):
        assert sc.obstacle(base.replace(objects=(sc.SceneObject(**{**car.__dict__, **moved}),))) == 0


def test_every_class_is_textured_not_flat() -> None:
    seen: dict[int, list[float]] = {}
    for p in _scenes(40, seed=3):
        rendered = render(p)
        for cid in np.unique(rendered.labels):
            pixels = rendered.image[rendered.labels == cid].astype(np.float64)
            if len(pixels) >= 20:
                seen.setdefault(int(cid), []).append(float(pixels.std(axis=0).mean()))
    assert set(seen) == set(IDS.values())
    for cid, spreads in seen.items():
        assert np.median(spreads) > 2.0, cid


def test_rendering_is_deterministic_and_round_trips_through_json() -> None:
    p = _scenes(1, seed=5)[0]
    again = sc.SceneParams.from_dict(p.to_dict())
    assert again == p
    a, b = render(p), render(again)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)


def test_shortcut_cue_agrees_with_rho_in_train_and_half_in_test() -> None:
    rho = 0.9
    train = SplitPlan("train", 1500, split_seed(0, "train"), rho)
    test = SplitPlan("test", 1500, split_seed(0, "test"), 0.0)
    agree_train = np.mean([sc.shortcut_agrees(scene_params(train, i, (32, 64))) for i in range(train.count)])
    agree_test = np.mean([sc.shortcut_agrees(scene_params(test, i, (32, 64))) for i in range(test.count)])
    assert agree_train == pytest.approx(rho, abs=0.03)
    assert agree_test == pytest.approx(0.5, abs=0.05)


def test_shortcut_cue_changes_only_the_sky() -> None:
    p = _scenes(1, seed=9)[0]
    a, b = render(p), render(p.replace(sky_cue=-p.sky_cue))
    changed = np.any(a.image != b.image, axis=-1)
    assert changed.any()
    assert np.all(a.labels[changed] == IDS["sky"])
    warm = a if p.sky_cue == 1 else b
    cool = b if p.sky_cue == 1 else a
    sky = a.labels == IDS["sky"]
    assert warm.image[sky, 0].mean() > cool.image[sky, 0].mean()
    assert warm.image[sky, 2].mean() < cool.image[sky, 2].mean()


@pytest.mark.parametrize("cls", sc.REMOVABLE)
def test_removing_a_class_changes_only_its_pixels(cls: str) -> None:
    for p in _scenes(30, seed=13):
        before = render(p)
        mask = before.labels == IDS[cls]
        if not mask.any():
            continue
        after = render_counterfactual(p, remove=cls)
        assert np.array_equal(after.image[~mask], before.image[~mask])
        assert np.array_equal(after.labels[~mask], before.labels[~mask])
        # what was behind shows through, so the class is gone from the label map
        assert not (after.labels == IDS[cls]).any()
        assert (after.image[mask] != before.image[mask]).any()
        return
    pytest.fail(f"no scene shows {cls}")


def test_removing_the_obstacle_clears_the_label_and_shows_the_road() -> None:
    p = next(p for p in _scenes(50, seed=17) if sc.obstacle(p) and len({o.cls for o in p.objects}) == 1)
    cls = p.objects[0].cls
    before = render(p)
    after = render_counterfactual(p, remove=cls)
    assert before.targets["obstacle"] == 1.0 and after.targets["obstacle"] == 0.0
    assert after.targets["steering"] == before.targets["steering"]
    region = ego_lane_mask(p) & (before.labels == IDS[cls])
    assert region.any() and np.all(after.labels[region] == IDS["road"])


def test_repainting_changes_only_that_class() -> None:
    p = next(p for p in _scenes(30, seed=19) if any(o.cls == "car" for o in p.objects))
    before = render(p)
    after = render_counterfactual(p, repaint={"car": (250, 250, 0)})
    mask = before.labels == IDS["car"]
    assert np.array_equal(after.labels, before.labels)
    assert np.array_equal(after.image[~mask], before.image[~mask])

    def yellowness(image: np.ndarray) -> float:
        return float(image[mask, 1].astype(np.float64).mean() - image[mask, 2].astype(np.float64).mean())

    # every car palette colour has green ≤ blue + 60; yellow paint lifts green far above blue
    assert yellowness(after.image) > yellowness(before.image) + 60


def test_changing_curvature_changes_the_targets_accordingly() -> None:
    p = _scenes(1, seed=23)[0]
    left = render_counterfactual(p, curvature=-0.015)
    right = render_counterfactual(p, curvature=0.015)
    delta = (right.targets["steering"] - left.targets["steering"]) * sc.STEERING_SCALE
    assert delta == pytest.approx(0.03)
    assert left.targets["obstacle"] == right.targets["obstacle"] == float(sc.obstacle(p))
    # the sky above the skyline does not move with the road
    assert np.array_equal(left.image[:5], right.image[:5])
    assert not np.array_equal(left.labels, right.labels)


def test_bad_counterfactuals_name_the_argument() -> None:
    p = _scenes(1)[0]
    with pytest.raises(GradSUMError, match="remove='sky'"):
        render_counterfactual(p, remove="sky")
    with pytest.raises(GradSUMError, match="curvatur="):
        render_counterfactual(p, curvatur=0.01)
    with pytest.raises(GradSUMError, match="repaint='tree'"):
        render_counterfactual(p, repaint={"tree": (0, 0, 0)})
