"""What the report leads with: the questions a run's configuration asks, answered from its tables.

A question is a pair of models on the same task under the same method ("does the ViT look at the scene
like PilotNet?"); its answer is the profile Spearman ρ with its CI and the classes whose paired test
differs, read from comparisons.csv. The headline profile of each model comes from the method the trust
verdicts recommend for that model (`best_methods`), GradCAM kept beside it when another method wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from gradsum.aggregation.compare import ALIKE, OPPOSITE, UNRELATED, ranking_relation
from gradsum.contract import RECOMMENDATIONS
from gradsum.evaluation.base import METHOD
from gradsum.evaluation.verdicts import margin_floor, recommend
from gradsum.names import pair_label
from gradsum.report.plots import class_order, label
from gradsum.report.results import Results

#: The method every model is profiled with in the field's papers; the headline keeps it beside the best.
REFERENCE_METHOD = "gradcam"
#: Column added to a profiles subset to name one model · method series of a grouped figure.
SERIES = "series"
#: Task name for models without a card (the tables alone do not say their task).
UNKNOWN_TASK = "unknown task"
#: How many differing classes a finding names before it says "and N more".
NAMED_CLASSES = 5


@dataclass(frozen=True)
class Finding:
    """One question of the run (two models, one task, one method) and its answer from comparisons.csv."""

    task: str
    method: str
    model_a: str
    model_b: str
    rho: float
    ci_low: float
    ci_high: float
    n_classes: int
    #: (class, mean score of b − mean score of a) for every class that differs after Holm, largest |difference| first
    differing: tuple[tuple[str, float], ...]

    @property
    def question(self) -> str:
        return f"Does {self.model_b} look at the scene like {self.model_a} ({self.method}, {self.task})?"

    @property
    def answer(self) -> str:
        """The sentence that answers the question: ρ [CI], what it means, then the classes that differ."""
        rho = f"Profile Spearman ρ = {_number(self.rho)} [{_number(self.ci_low)}, {_number(self.ci_high)}]"
        if not self.differing:
            return f"{rho}: {self._reading()}. No class differs (paired test, Holm)."
        named = [
            f"{name} ({self.model_b if diff > 0 else self.model_a} higher)"
            for name, diff in self.differing[:NAMED_CLASSES]
        ]
        more = len(self.differing) - len(named)
        tail = f" and {more} more" if more else ""
        return (
            f"{rho}: {self._reading()}. {len(self.differing)} of {self.n_classes} classes differ "
            f"(paired test, Holm): {', '.join(named)}{tail}."
        )

    def _reading(self) -> str:
        return _READINGS[ranking_relation(self.ci_low, self.ci_high)]


_READINGS = {
    ALIKE: "they rank the classes alike",
    OPPOSITE: "they rank the classes in opposite order",
    UNRELATED: "the interval includes 0, so their class rankings may be unrelated",
}


def _number(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}".replace("-", "−")


def model_tasks(results: Results) -> dict[str, str]:
    """Each profiled model's task, from its card."""
    return {
        model: str(results.cards.get(model, {}).get("task", UNKNOWN_TASK))
        for model in results.profiles["model"].unique()
    }


def _sides(results: Results) -> dict[str, tuple[str, str]]:
    # Labels are matched against the profiled pairs, not split, because method names may hold a "/".
    pairs = results.profiles[["model", "method"]].drop_duplicates().itertuples(index=False, name=None)
    return {pair_label(model, method): (model, method) for model, method in pairs}


def meaningful_comparisons(results: Results) -> pd.DataFrame:
    """The comparisons rows worth showing: same task, and the same method across models or the same
    model across methods (comparisons.csv keeps every pair)."""
    comparisons = results.comparisons
    if comparisons is None or comparisons.empty:
        return pd.DataFrame()
    sides, tasks = _sides(results), model_tasks(results)
    keep = []
    for a, b in zip(comparisons["a"], comparisons["b"], strict=True):
        if a not in sides or b not in sides:
            keep.append(False)
            continue
        (model_a, method_a), (model_b, method_b) = sides[a], sides[b]
        same_task = tasks[model_a] == tasks[model_b]
        keep.append(same_task and ((method_a == method_b) != (model_a == model_b)))
    return comparisons[keep]


def findings(results: Results) -> list[Finding]:
    """One finding per pair of models compared on the same task under the same method, by task."""
    comparisons = meaningful_comparisons(results)
    if comparisons.empty:
        return []
    sides, tasks = _sides(results), model_tasks(results)
    found = []
    for (a, b), rows in comparisons.groupby(["a", "b"], sort=False):
        (model_a, method), (model_b, method_b) = sides[str(a)], sides[str(b)]
        if method != method_b:
            continue
        differs = rows[rows["differs"]]
        diffs = dict(zip(differs["class"], differs["mean_b"] - differs["mean_a"], strict=True))
        first = rows.iloc[0]
        found.append(
            Finding(
                task=tasks[model_a],
                method=method,
                model_a=model_a,
                model_b=model_b,
                rho=float(first["spearman_rho"]),
                ci_low=float(first["spearman_ci_low"]),
                ci_high=float(first["spearman_ci_high"]),
                n_classes=len(rows),
                differing=tuple(
                    sorted(((c, float(diffs[c])) for c in class_order(differs)), key=lambda d: -abs(d[1]))
                ),
            )
        )
    return sorted(found, key=lambda f: f.task)


def recommendations(results: Results) -> pd.DataFrame:
    """One row per model (`RECOMMENDATIONS`' columns; `method` "" where none is recommended): recommendations.csv,
    else recomputed from the trust table (a folder written before that file existed); empty without either."""
    table = results.recommendations
    if table is None and results.trust is not None and not results.trust.empty:
        table = recommend(results.trust)
    if table is None or table.empty:
        return pd.DataFrame(columns=list(RECOMMENDATIONS.names))
    # a CSV round trip reads the "" of a model without a recommendation as NaN
    return table.assign(
        model=table["model"].astype(str), method=table["method"].fillna("").astype(str)
    ).reset_index(drop=True)


def criterion_keys(trust: pd.DataFrame) -> list[str]:
    """The trust table's criterion keys: the stems of its `{key}_verdict` columns that carry a figure."""
    stems = [c.removesuffix("_verdict") for c in trust.columns if c.endswith("_verdict")]
    return [key for key in stems if key in trust.columns]


def _methods_under_test(trust: pd.DataFrame, model: str, methods: Sequence[str]) -> pd.DataFrame:
    """The trust rows of `model` for the profiled `methods` whose role is a method under test."""
    return trust[
        (trust["model"].astype(str) == model)
        & (trust["role"].astype(str) == METHOD)
        & trust["method"].astype(str).isin(methods)
    ]


def _closest(rows: pd.DataFrame, keys: Sequence[str]) -> str | None:
    """The method with the best margin floor (then GradCAM, then by name); None without rows."""
    records = rows.to_dict("records")
    ranked = sorted(
        records,
        key=lambda r: (-margin_floor(r, keys), str(r["method"]) != REFERENCE_METHOD, str(r["method"])),
    )
    return str(ranked[0]["method"]) if ranked else None


def best_methods(results: Results) -> dict[str, str]:
    """Each model's method for the headline: the one the trust verdicts recommend (recommendations.csv);
    where none is recommended, the profiled method under test with the largest summed margin lower bounds;
    without trust rows for the model, GradCAM, else its first profiled method. Never a control or a null."""
    profiled = results.profiles[["model", "method"]].drop_duplicates()
    table = recommendations(results)
    recommended = dict(zip(table["model"], table["method"], strict=True))
    trust = results.trust
    if trust is None or trust.empty:
        trust = pd.DataFrame(columns=["model", "method", "role"])
    # a control or a null may be profiled too: it stands for a model only where nothing else was profiled
    others = set(trust.loc[trust["role"].astype(str) != METHOD, "method"].astype(str))
    best = {}
    for model, rows in profiled.groupby("model", sort=False):
        name, profiled_methods = str(model), list(map(str, rows["method"]))
        methods = [m for m in profiled_methods if m not in others] or profiled_methods
        fallback = REFERENCE_METHOD if REFERENCE_METHOD in methods else methods[0]
        candidates = _methods_under_test(trust, name, methods)
        if recommended.get(name) in set(candidates["method"].astype(str)):
            best[name] = recommended[name]
            continue
        best[name] = _closest(candidates, criterion_keys(trust)) or fallback
    return best


def headline_profiles(results: Results, models: list[str]) -> pd.DataFrame:
    """The headline rows of `models`: each one's recommended profile (`best_methods`), then its GradCAM profile
    when GradCAM is not that one, with a `series` column ("model · method") naming each."""
    profiles, best = results.profiles, best_methods(results)
    parts = []
    for model in models:
        methods = set(profiles.loc[profiles["model"] == model, "method"])
        shown = [best[model]] + ([REFERENCE_METHOD] if REFERENCE_METHOD in methods - {best[model]} else [])
        for method in shown:
            rows = profiles[(profiles["model"] == model) & (profiles["method"] == method)]
            parts.append(rows.assign(**{SERIES: label(model, method)}))
    return pd.concat(parts, ignore_index=True)


def models_by_task(results: Results) -> dict[str, list[str]]:
    """Profiled models grouped by task, tasks sorted, models in profile order."""
    grouped: dict[str, list[str]] = {}
    for model, task in model_tasks(results).items():
        grouped.setdefault(task, []).append(model)
    return dict(sorted(grouped.items()))
