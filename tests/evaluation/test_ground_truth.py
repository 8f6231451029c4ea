from __future__ import annotations

import pandas as pd

from gradsum.evaluation import ground_truth_table
from gradsum.truthsets.base import CauseDeclaration

STEERING = CauseDeclaration(causal=("road",), independent=("sky", "vegetation", "building"))
OBSTACLE = CauseDeclaration(causal=("car", "person"), independent=("sky", "vegetation", "building"))
CAUSES = {"steering": STEERING, "obstacle": OBSTACLE}


def _profile(model: str, method: str, scores: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": model, "method": method, "class": name, "score_mean": m, "score_ci_low": lo}
            | {"score_ci_high": hi}
            for name, (m, lo, hi) in scores.items()
        ]
    )


def test_road_above_independent_classes_agrees_and_sky_on_top_does_not() -> None:
    profiles = pd.concat(
        [
            _profile(
                "cnn",
                "gradcam",
                {"road": (0.8, 0.7, 0.9), "sky": (0.1, 0.0, 0.2), "building": (0.3, 0.2, 0.4)},
            ),
            _profile(
                "vit",
                "gradcam",
                {"road": (0.2, 0.1, 0.3), "sky": (0.9, 0.8, 1.0), "building": (0.1, 0.0, 0.2)},
            ),
        ]
    )
    table = ground_truth_table(profiles, {"cnn": "steering", "vit": "steering"}, CAUSES).set_index("model")
    assert bool(table.loc["cnn", "agrees"]) is True
    assert bool(table.loc["vit", "agrees"]) is False
    assert "sky" in table.loc["vit", "detail"]


def test_point_estimates_above_but_overlapping_intervals_do_not_agree() -> None:
    # the paper_figures random map's case: 0.502 against 0.501, intervals overlapping
    profiles = _profile("cnn", "random", {"road": (0.502, 0.49, 0.51), "sky": (0.501, 0.49, 0.51)})
    table = ground_truth_table(profiles, {"cnn": "steering"}, CAUSES)
    assert bool(table["agrees"].iloc[0]) is False


def test_obstacle_profile_needs_car_or_person_above_the_independent_classes() -> None:
    profiles = pd.concat(
        [
            _profile("a", "gradcam", {"person": (0.9, 0.8, 1.0), "sky": (0.5, 0.4, 0.6)}),
            _profile("b", "gradcam", {"car": (0.3, 0.2, 0.4), "vegetation": (0.5, 0.4, 0.6)}),
        ]
    )
    table = ground_truth_table(profiles, {"a": "obstacle", "b": "obstacle"}, CAUSES).set_index("model")
    assert list(table["agrees"]) == [True, False]


def test_no_check_without_declared_causes() -> None:
    profiles = _profile("x", "gradcam", {"road": (1.0, 1.0, 1.0), "sky": (0.0, 0.0, 0.0)})
    assert ground_truth_table(profiles, {"x": "steering"}, {}).empty
    assert ground_truth_table(profiles, {}, CAUSES).empty
