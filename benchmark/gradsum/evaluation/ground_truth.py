"""Ground-truth check: the synthetic set knows which classes cause each target.

Steering is a function of the road geometry, so a steering model's profile should rank road above
sky, vegetation and building; the obstacle label is a car or person in the ego lane, so an obstacle
model's profile should rank car or person first. A method that fails is reported, not tuned away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from gradsum.registry import Registry


@dataclass(frozen=True)
class Expectation:
    """What a task's profiles should show, and the test that checks one profile."""

    task: str
    text: str
    check: Callable[[pd.Series], tuple[bool, str]]


EXPECTATIONS: Registry[Expectation] = Registry("ground-truth expectation")
#: Columns of `ground_truth.csv`, in order.
GROUND_TRUTH_COLUMNS = ("model", "method", "task", "expected", "agrees", "detail")

_DISTRACTORS = ("sky", "vegetation", "building")


def _ranking(scores: pd.Series) -> str:
    return " > ".join(f"{name} {value:.3g}" for name, value in scores.sort_values(ascending=False).items())


def _road_above_distractors(scores: pd.Series) -> tuple[bool, str]:
    present = [c for c in _DISTRACTORS if c in scores.index]
    if "road" not in scores.index or not present:
        return False, "road or all of sky/vegetation/building absent from the profile"
    # sidewalk follows the road geometry, so "road and sidewalk" together may carry the evidence
    road = max(scores["road"], scores.get("sidewalk", float("-inf")))
    worst = max(present, key=lambda c: scores[c])
    agrees = bool(road > scores[worst])
    return (
        agrees,
        f"road/sidewalk {road:.3g} vs highest distractor {worst} {scores[worst]:.3g}; {_ranking(scores)}",
    )


def _obstacle_first(scores: pd.Series) -> tuple[bool, str]:
    if scores.empty:
        return False, "empty profile"
    top = str(scores.idxmax())
    return top in ("car", "person"), f"top class {top}; {_ranking(scores)}"


EXPECTATIONS.add(
    "steering",
    Expectation(
        "steering", "road (or road and sidewalk) above sky, vegetation and building", _road_above_distractors
    ),
)
EXPECTATIONS.add("obstacle", Expectation("obstacle", "car or person ranked first", _obstacle_first))


def ground_truth_table(profiles: pd.DataFrame, tasks: dict[str, str]) -> pd.DataFrame:
    """One row per model × method: the task's expectation, whether the profile agrees, and why.

    `profiles` has the profiles.csv columns; `tasks` maps model name → task. Models whose task has no
    expectation are skipped.
    """
    rows = []
    for (model, method), group in profiles.groupby(["model", "method"], sort=True):
        task = tasks.get(str(model))
        if task is None or task not in EXPECTATIONS:
            continue
        expectation = EXPECTATIONS.get(task)
        agrees, detail = expectation.check(group.set_index("class")["score_mean"].dropna())
        rows.append(
            {
                "model": model,
                "method": method,
                "task": task,
                "expected": expectation.text,
                "agrees": agrees,
                "detail": detail,
            }
        )
    return pd.DataFrame(rows, columns=list(GROUND_TRUTH_COLUMNS))
