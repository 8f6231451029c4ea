"""`gate`: a candidate run against a baseline run under a policy, one outcome per check × model × method."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from gradsum.gate.checks import Subject
from gradsum.gate.inputs import GateInputs, as_inputs, check_same_tasks, check_same_truthset, pair_models
from gradsum.gate.outcome import CheckOutcome, GateReport
from gradsum.gate.policy import CheckSpec, Policy, check_against, load_policy
from gradsum.gate.statistics import CANDIDATE, Paired, Resamples, Tables

Results = str | os.PathLike[str] | GateInputs


def gate(
    baseline: Results,
    candidate: Results,
    policy: Policy | str | os.PathLike[str],
    *,
    models: Mapping[str, str] | None = None,
) -> GateReport:
    """Judge `candidate` against `baseline` (results folders or `GateInputs`) under `policy` (a `Policy`, a
    policy file or a built-in name). `models` maps baseline models to candidate models (default: the names
    both hold; with one model on each side, those two).

    Input errors (another truth set or task, a policy naming what the baseline lacks) raise a
    `GradSUMError` naming the file and field.
    """
    rules = policy if isinstance(policy, Policy) else load_policy(policy)
    base, cand = as_inputs(baseline), as_inputs(candidate)
    check_same_truthset(base, cand)
    pairs = pair_models(base, cand, models)
    check_same_tasks(base, cand, pairs)
    tables = Tables(base.per_image, cand.per_image)
    methods = {
        model: [m for m in tables.methods(model) if m in tables.methods(other, CANDIDATE)]
        for model, other in pairs.items()
    }
    classes = set(tables.baseline_classes.values())
    check_against(rules, classes, pairs, {m for found in methods.values() for m in found})
    load = _loader(tables, pairs, rules)
    outcomes = [
        outcome
        for spec in rules.checks
        for model, other in pairs.items()
        if spec.models is None or model in spec.models
        for outcome in _judge(spec, Subjects(base, cand, model, other, rules.alpha, load), methods[model])
    ]
    return GateReport(str(base.folder), str(cand.folder), rules.source, outcomes, rules.inconclusive)


class Subjects:
    """Makes the `Subject` of each method of one baseline model and its candidate."""

    def __init__(
        self,
        baseline: GateInputs,
        candidate: GateInputs,
        model: str,
        candidate_model: str,
        alpha: float,
        load: Callable[[str, str], Paired],
    ) -> None:
        self.baseline, self.candidate = baseline, candidate
        self.model, self.candidate_model = model, candidate_model
        self.alpha, self.load = alpha, load

    def of(self, method: str) -> Subject:
        """The subject of `method` (empty: the model itself)."""
        return Subject(
            self.baseline,
            self.candidate,
            self.model,
            self.candidate_model,
            method,
            self.alpha,
            lambda: self.load(self.model, method),
        )


def _judge(spec: CheckSpec, subjects: Subjects, available: list[str]) -> list[CheckOutcome]:
    check = spec.gate_check
    if not check.per_method:
        chosen = [""]
    elif spec.methods is not None:
        chosen = [m for m in spec.methods if m in available]
    else:
        chosen = check.default_methods(subjects.baseline, subjects.model, spec.options) or available
    outcomes = []
    for method in chosen:
        finding = check.evaluate(subjects.of(method), spec.options)
        outcomes.append(
            CheckOutcome(
                spec.name,
                spec.check,
                subjects.model,
                method,
                finding.verdict,
                finding.message,
                finding.figures,
                finding.details,
            )
        )
    return outcomes


def _loader(tables: Tables, pairs: Mapping[str, str], policy: Policy) -> Callable[[str, str], Paired]:
    """Builds each model × method's paired arrays once, on first use."""
    resamples = Resamples(policy.resamples, policy.seed)
    built: dict[tuple[str, str], Paired] = {}

    def load(model: str, method: str) -> Paired:
        if (model, method) not in built:
            built[model, method] = tables.paired(model, pairs[model], method, resamples)
        return built[model, method]

    return load
