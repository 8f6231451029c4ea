"""Ground-truth check: where a truth set declares which classes cause each task, does a profile agree?

The synthetic set declares them (road causes steering; a car or person in the ego lane causes the
obstacle label; sky, building and vegetation are independent of both); other truth sets declare
nothing unless their spec says so, and then no check runs. A profile agrees when one causal class's
score lies above every independent class's score beyond both confidence intervals, so a null map whose
classes tie cannot agree. A method that fails is reported, not tuned away.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from gradsum.contract import GROUND_TRUTH
from gradsum.truthsets.base import CauseDeclaration


def _ranking(scores: pd.Series) -> str:
    return " > ".join(f"{name} {value:.3g}" for name, value in scores.sort_values(ascending=False).items())


def expectation_text(declaration: CauseDeclaration) -> str:
    """What the declaration expects of a profile, in words."""
    return (
        f"{' or '.join(declaration.causal)} above {', '.join(declaration.independent)} "
        "(beyond both confidence intervals)"
    )


def check_profile(profile: pd.DataFrame, declaration: CauseDeclaration) -> tuple[bool, str]:
    """Whether the best causal class's CI lies above every independent class's CI, and why."""
    rows = profile.set_index("class")
    causal = [c for c in declaration.causal if c in rows.index]
    independent = [c for c in declaration.independent if c in rows.index]
    if not causal or not independent:
        return False, "no causal class or no independent class in the profile"
    best = max(causal, key=lambda c: rows.loc[c, "score_ci_low"])
    worst = max(independent, key=lambda c: rows.loc[c, "score_ci_high"])
    agrees = bool(rows.loc[best, "score_ci_low"] > rows.loc[worst, "score_ci_high"])
    detail = (
        f"{best} {rows.loc[best, 'score_mean']:.3g} [{rows.loc[best, 'score_ci_low']:.3g}, "
        f"{rows.loc[best, 'score_ci_high']:.3g}] vs {worst} {rows.loc[worst, 'score_mean']:.3g} "
        f"[{rows.loc[worst, 'score_ci_low']:.3g}, {rows.loc[worst, 'score_ci_high']:.3g}]; "
        f"{_ranking(rows['score_mean'].dropna())}"
    )
    return agrees, detail


def ground_truth_table(
    profiles: pd.DataFrame, tasks: Mapping[str, str], causes: Mapping[str, CauseDeclaration]
) -> pd.DataFrame:
    """One row per model × method whose task has declared causes (`profiles`: the profiles table's columns)."""
    rows = []
    for (model, method), group in profiles.groupby(["model", "method"], sort=True):
        task = tasks.get(str(model))
        if task is None or task not in causes:
            continue
        agrees, detail = check_profile(group, causes[task])
        rows.append(
            {
                "model": model,
                "method": method,
                "task": task,
                "expected": expectation_text(causes[task]),
                "agrees": agrees,
                "detail": detail,
            }
        )
    return pd.DataFrame(rows, columns=list(GROUND_TRUTH.names))
