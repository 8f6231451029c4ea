from __future__ import annotations

import pandas as pd

from gradsum.evaluation import ground_truth_table


def _profile(model: str, method: str, scores: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": model, "method": method, "class": name, "score_mean": value}
            for name, value in scores.items()
        ]
    )


def test_steering_profile_with_road_on_top_agrees_and_sky_on_top_does_not() -> None:
    profiles = pd.concat(
        [
            _profile("cnn", "gradcam", {"road": 0.8, "sky": 0.1, "vegetation": 0.2, "building": 0.3}),
            _profile("vit", "gradcam", {"road": 0.2, "sky": 0.9, "vegetation": 0.1, "building": 0.1}),
        ]
    )
    table = ground_truth_table(profiles, {"cnn": "steering", "vit": "steering"}).set_index("model")
    assert bool(table.loc["cnn", "agrees"]) is True
    assert bool(table.loc["vit", "agrees"]) is False
    assert "sky" in table.loc["vit", "detail"]


def test_sidewalk_may_carry_the_road_evidence() -> None:
    profiles = _profile("cnn", "gradcam", {"road": 0.1, "sidewalk": 0.7, "sky": 0.2, "building": 0.3})
    table = ground_truth_table(profiles, {"cnn": "steering"})
    assert bool(table["agrees"].iloc[0]) is True


def test_obstacle_profile_needs_car_or_person_first() -> None:
    profiles = pd.concat(
        [
            _profile("a", "gradcam", {"car": 0.9, "road": 0.5, "person": 0.2}),
            _profile("b", "gradcam", {"car": 0.3, "road": 0.5, "person": 0.2}),
        ]
    )
    table = ground_truth_table(profiles, {"a": "obstacle", "b": "obstacle"}).set_index("model")
    assert list(table["agrees"]) == [True, False]


def test_models_without_a_known_task_are_skipped() -> None:
    profiles = _profile("x", "gradcam", {"road": 1.0})
    assert ground_truth_table(profiles, {}).empty
