"""What the report leads with: the questions a run's configuration asks, answered from its tables.

A question is a pair of models on the same task under the same method ("does the ViT look at the scene
like PilotNet?"); its answer is the profile Spearman ρ with its CI and the classes whose paired test
differs, read from comparisons.csv. The headline profile of each model comes from the method with the
best trust verdict for that model (`best_methods`), GradCAM kept beside it when another method wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from gradsum.aggregation.compare import combo_label
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
        if self.ci_low > 0:
            return "they rank the classes alike"
        if self.ci_high < 0:
            return "they rank the classes in opposite order"
        return "the interval includes 0, so their class rankings may be unrelated"


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
    return {combo_label(model, method): (model, method) for model, method in pairs}


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
        differs = rows[rows["differs"].astype(str).str.lower() == "true"]
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


def _passes(trust: pd.DataFrame) -> pd.Series:
    verdicts = [c for c in trust.columns if c.endswith("_verdict")]
    return (trust[verdicts].astype(str) == "pass").sum(axis=1)


def best_methods(results: Results) -> dict[str, str]:
    """Each model's method with the best trust verdict: most checks passed, ties broken by causal agreement
    (then GradCAM, then name). Without trust rows for a model: GradCAM, else its first profiled method."""
    profiled = results.profiles[["model", "method"]].drop_duplicates()
    trust = results.trust
    best = {}
    for model, rows in profiled.groupby("model", sort=False):
        methods = list(rows["method"])
        fallback = REFERENCE_METHOD if REFERENCE_METHOD in methods else methods[0]
        if trust is None or trust.empty:
            best[str(model)] = fallback
            continue
        real = ~trust["null"].astype(str).str.lower().isin(("true", "1"))
        scored = trust[real & (trust["model"] == model) & trust["method"].isin(methods)]
        if scored.empty:
            best[str(model)] = fallback
            continue
        agreement = (
            scored["agreement"] if "agreement" in scored.columns else pd.Series(float("nan"), scored.index)
        )
        ranked = scored.assign(
            passes=_passes(scored),
            agreement_rank=agreement.astype(float).fillna(-math.inf),
            not_reference=scored["method"] != REFERENCE_METHOD,
        ).sort_values(
            ["passes", "agreement_rank", "not_reference", "method"], ascending=[False, False, True, True]
        )
        best[str(model)] = str(ranked.iloc[0]["method"])
    return best


def headline_profiles(results: Results, models: list[str]) -> pd.DataFrame:
    """The headline rows of `models`: each one's best-verdict profile, then its GradCAM profile when GradCAM
    is not the best, with a `series` column ("model · method") naming each."""
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
