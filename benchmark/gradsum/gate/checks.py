"""The checks a gate policy can name, each with its own options, in the registry `GATE_CHECKS`.

A check judges one subject (a model × method of the baseline and its candidate; a model alone for a check
with `per_method = False`) and returns a `Finding`. Its options are a frozen dataclass that the policy
builds with `dataspec.build`, so an unknown or mistyped option names the policy file and field; which
option fields name classes, which take one of a closed set of values and which are bounded are declared
on the check, and the policy enforces them.

The checks with intervals (class_shift, spearman, top_k) decide on the paired image bootstrap, never on the
point estimate: pass when the interval shows the candidate inside the policy, fail when it shows it
outside, inconclusive between. The verdict and task-metric checks compare two recorded figures.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from gradsum.aggregation.profiles import PROFILE_STATISTICS
from gradsum.contract import RECOMMENDATIONS, TRUST
from gradsum.evaluation.verdicts import FAIL, INCONCLUSIVE, PASS, UNINFORMATIVE
from gradsum.gate.inputs import GateInputError, GateInputs, card, card_task, required_table
from gradsum.gate.statistics import BASELINE, CANDIDATE, Paired, class_means, class_shift, ranks, spearman
from gradsum.models.tasks import LOWER_IS_BETTER, TRAINING_TASKS
from gradsum.registry import Registry

#: How trust verdicts order: a candidate whose verdict ranks lower than the baseline's got worse.
TRUST_ORDER = {PASS: 2, INCONCLUSIVE: 1, UNINFORMATIVE: 1, FAIL: 0}
#: A figure this close to its bar is on it: 0.95 − 0.94 is 0.010000000000000009 in floats, and a drop of
#: 0.01 is within a tolerance of 0.01 (the figures are O(1): an absolute slack far below any reported digit)
SLACK = 1e-9
#: Severity of a gate verdict, worst first: the outcome of several items is the worst of theirs.
SEVERITY = {FAIL: 0, INCONCLUSIVE: 1, PASS: 2}


@dataclass(frozen=True)
class Subject:
    """What one outcome compares: a baseline model and its candidate, the method (empty for a check of the
    model itself), the policy's alpha, and the paired arrays of that model × method (built on first use)."""

    baseline: GateInputs
    candidate: GateInputs
    model: str
    candidate_model: str
    method: str
    alpha: float
    load: Callable[[], Paired]

    @property
    def pair(self) -> Paired:
        """The paired per-image arrays of the model × method, with their image resamples."""
        return self.load()


@dataclass(frozen=True)
class Finding:
    """A check's answer for one subject: the verdict, a sentence with the deciding figures, the figures by
    name and one row per judged item (class)."""

    verdict: str
    message: str
    figures: dict[str, Any] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)


class GateCheck(ABC):
    """One kind of policy check: its options, what they may hold, and how it judges one subject."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type]
    #: option fields that hold class names (checked against Cityscapes, then against the baseline's classes)
    class_fields: ClassVar[tuple[str, ...]] = ()
    #: option fields that take one of a closed set of values
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({})
    #: option fields with bounds (lowest, highest), inclusive; None: unbounded on that side
    bounds: ClassVar[Mapping[str, tuple[float | None, float | None]]] = MappingProxyType({})
    #: False: one outcome per model, with an empty method
    per_method: ClassVar[bool] = True

    def default_methods(self, baseline: GateInputs, model: str, options: Any) -> list[str] | None:
        """The methods checked when the policy names none (None: every method both runs hold)."""
        return None

    @abstractmethod
    def evaluate(self, subject: Subject, options: Any) -> Finding:
        """Judge one subject."""


GATE_CHECKS: Registry[GateCheck] = Registry("gate check")


def register_check(name: str) -> Callable[[type[GateCheck]], type[GateCheck]]:
    """Class decorator: register one instance of the check under `name`."""

    def add(cls: type[GateCheck]) -> type[GateCheck]:
        cls.name = name
        GATE_CHECKS.add(name, cls())
        return cls

    return add


def worst(verdicts: list[str]) -> str:
    """The worst of several verdicts (pass when there are none)."""
    return min(verdicts, key=SEVERITY.__getitem__, default=PASS)


def interval_verdict(inside: bool, outside: bool) -> str:
    """Pass when the interval shows the candidate inside the policy, fail when outside, else inconclusive."""
    return PASS if inside else FAIL if outside else INCONCLUSIVE


def _signed(value: float) -> str:
    return f"{value:+.3f}"


# --- class_shift ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassShiftOptions:
    tolerance: float
    statistic: str = "score"
    #: the classes judged (None: every class both runs hold)
    classes: tuple[str, ...] | None = None


@register_check("class_shift")
class ClassShift(GateCheck):
    description = "a class's score or mass share may not move by more than a tolerance (paired image CI)"
    Options = ClassShiftOptions
    class_fields = ("classes",)
    choices = MappingProxyType({"statistic": PROFILE_STATISTICS})
    bounds = MappingProxyType({"tolerance": (0.0, None)})

    def evaluate(self, subject: Subject, options: ClassShiftOptions) -> Finding:
        rows = class_shift(subject.pair, options.statistic, subject.alpha)
        if options.classes is not None:
            rows = [row for row in rows if row["class"] in options.classes]
        tolerance = options.tolerance
        if not rows:
            return Finding(
                INCONCLUSIVE, f"no class to compare ({options.statistic})", {"tolerance": tolerance}
            )
        edge = tolerance + SLACK
        details = [
            {
                **row,
                "verdict": interval_verdict(
                    -edge <= row["low"] and row["high"] <= edge, row["low"] > edge or row["high"] < -edge
                ),
            }
            for row in rows
        ]
        # the worst verdict first, then the interval reaching furthest from zero
        top = min(
            details, key=lambda row: (SEVERITY[row["verdict"]], -max(abs(row["low"]), abs(row["high"])))
        )
        figures = {"statistic": options.statistic, "tolerance": tolerance}
        figures.update({key: top[key] for key in ("class", "shift", "low", "high")})
        alike = sum(row["verdict"] == top["verdict"] for row in details) - 1
        return Finding(top["verdict"], _shift_message(top, options, alike), figures, details)


def _shift_message(top: dict[str, Any], options: ClassShiftOptions, alike: int) -> str:
    moved = (
        f"{top['class']} {options.statistic} moved {_signed(top['shift'])} "
        f"[{_signed(top['low'])}, {_signed(top['high'])}]"
    )
    bound = f"±{options.tolerance:g}"
    if top["verdict"] == PASS:
        return f"every class within {bound}; the largest: {moved}"
    what = "beyond" if top["verdict"] == FAIL else "not shown within"
    more = f"; {alike} more class(es) {what} {bound}" if alike else ""
    return f"{moved}, {what} {bound}{more}"


# --- spearman -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpearmanOptions:
    floor: float
    statistic: str = "score"


@register_check("spearman")
class Spearman(GateCheck):
    description = "the Spearman rho of the class profiles must stay above a floor (paired image CI)"
    Options = SpearmanOptions
    choices = MappingProxyType({"statistic": PROFILE_STATISTICS})
    bounds = MappingProxyType({"floor": (-1.0, 1.0)})

    def evaluate(self, subject: Subject, options: SpearmanOptions) -> Finding:
        rho = spearman(subject.pair, options.statistic, subject.alpha)
        figures = {"statistic": options.statistic, "floor": options.floor, "rho": rho.value}
        figures.update(low=rho.low, high=rho.high)
        shown = f"Spearman rho {rho.value:.3f} [{rho.low:.3f}, {rho.high:.3f}] of the {options.statistic} profiles"
        if math.isnan(rho.low):
            return Finding(INCONCLUSIVE, f"the {options.statistic} profiles cannot be ranked", figures)
        edge = options.floor - SLACK
        verdict = interval_verdict(rho.low >= edge, rho.high < edge)
        where = {PASS: "above", FAIL: "below", INCONCLUSIVE: "not shown above"}[verdict]
        return Finding(verdict, f"{shown}, {where} the floor {options.floor:g}", figures)


# --- top_k ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopKOptions:
    k: int = 3
    #: classes that must stay among the candidate's k highest
    keep_in: tuple[str, ...] = ()
    #: classes that must stay out of them
    keep_out: tuple[str, ...] = ()
    statistic: str = "score"


@dataclass(frozen=True)
class Placement:
    """One class's place in the candidate's and the baseline's top k, with its bootstrap share."""

    name: str
    keep_in: bool
    rank: float
    ranked: int
    baseline_rank: float
    #: the share of image resamples in which the candidate has the class in the top k
    share: float
    k: int

    @property
    def in_top(self) -> bool:
        return self.rank <= self.k

    @property
    def baseline_in_top(self) -> bool:
        return self.baseline_rank <= self.k

    def verdict(self, alpha: float) -> str:
        """Fail when the class breaks the rule in at least 1 − alpha/2 of the resamples, pass when in at
        most alpha/2 of them."""
        violating = 1.0 - self.share if self.keep_in else self.share
        return interval_verdict(violating <= alpha / 2 + SLACK, violating >= 1 - alpha / 2 - SLACK)

    def sentence(self) -> str:
        """Where the class went, in words: "sky entered the top 3 (rank 2 of 12; ...)"."""
        top = f"the top {self.k}"
        if self.in_top != self.baseline_in_top:
            head = f"{self.name} {'entered' if self.in_top else 'left'} {top}"
        elif self.in_top == self.keep_in:
            head = f"{self.name} stays {'in' if self.in_top else 'out of'} {top}"
        else:
            head = f"{self.name} is {'' if self.in_top else 'not '}in {top}, as in the baseline"
        rank = f"rank {int(self.rank)} of {self.ranked}" if math.isfinite(self.rank) else "absent"
        base = (
            f"baseline rank {int(self.baseline_rank)}"
            if math.isfinite(self.baseline_rank)
            else "baseline: absent"
        )
        return f"{head} ({rank}; {base}; in {top} in {self.share:.0%} of resamples)"

    def row(self, alpha: float) -> dict[str, Any]:
        return {
            "class": self.name,
            "rule": "keep_in" if self.keep_in else "keep_out",
            "rank": self.rank,
            "baseline_rank": self.baseline_rank,
            "share_in_top": self.share,
            "verdict": self.verdict(alpha),
        }


@register_check("top_k")
class TopK(GateCheck):
    description = "classes must stay in (keep_in) or out of (keep_out) the candidate's k highest classes"
    Options = TopKOptions
    class_fields = ("keep_in", "keep_out")
    choices = MappingProxyType({"statistic": PROFILE_STATISTICS})
    bounds = MappingProxyType({"k": (1, None)})

    def evaluate(self, subject: Subject, options: TopKOptions) -> Finding:
        placements = placements_of(subject.pair, options)
        verdicts = [p.verdict(subject.alpha) for p in placements]
        verdict = worst(verdicts)
        deciding = [p.sentence() for p, v in zip(placements, verdicts, strict=True) if v == verdict]
        figures = {"statistic": options.statistic, "k": options.k}
        details = [p.row(subject.alpha) for p in placements]
        return Finding(verdict, "; ".join(deciding), figures, details)


def placements_of(pair: Paired, options: TopKOptions) -> list[Placement]:
    """The place of every keep_in and keep_out class in the candidate's and the baseline's top k."""
    point = ranks(
        np.stack([class_means(pair.values(side, options.statistic)) for side in (CANDIDATE, BASELINE)])
    )
    resampled = ranks(pair.resampled_profiles(CANDIDATE, options.statistic))
    share = (resampled <= options.k).mean(axis=0)
    ranked = int(np.isfinite(point[0]).sum())
    rules = [(name, True) for name in options.keep_in] + [(name, False) for name in options.keep_out]
    placements = []
    for name, keep_in in rules:
        column = pair.class_names.index(name) if name in pair.class_names else None
        if column is None:
            rank, base, fraction = math.nan, math.nan, 0.0
        else:
            rank, base, fraction = float(point[0, column]), float(point[1, column]), float(share[column])
        placements.append(Placement(name, keep_in, rank, ranked, base, fraction, options.k))
    return placements


# --- verdict --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerdictOptions:
    pass


@register_check("verdict")
class Verdict(GateCheck):
    description = (
        "the trust verdict of a method may not get worse (default: the baseline's recommended method)"
    )
    Options = VerdictOptions

    def default_methods(self, baseline: GateInputs, model: str, options: Any) -> list[str] | None:
        table = required_table(
            baseline,
            baseline.recommendations,
            RECOMMENDATIONS.file,
            "the verdict check guards the baseline's recommended method (or name one with `methods:`)",
        )
        rows = table[table["model"] == model]
        methods = [str(m) for m in rows["method"] if isinstance(m, str) and m]
        # no recommended method: one outcome that says so, rather than none
        return methods or [""]

    def evaluate(self, subject: Subject, options: VerdictOptions) -> Finding:
        if not subject.method:
            return Finding(
                INCONCLUSIVE,
                f"the baseline ({subject.baseline.table_path(RECOMMENDATIONS.file)}) recommends no method for "
                f"{subject.model}: no verdict to guard (name the methods with `methods:`)",
            )
        base = trust_verdict(subject.baseline, subject.model, subject.method)
        cand = trust_verdict(subject.candidate, subject.candidate_model, subject.method)
        figures = {"baseline": base, "candidate": cand}
        if TRUST_ORDER[cand] < TRUST_ORDER[base]:
            return Finding(FAIL, f"trust verdict {base} → {cand} (worse)", figures)
        if TRUST_ORDER[cand] > TRUST_ORDER[base]:
            return Finding(PASS, f"trust verdict {base} → {cand} (better)", figures)
        return Finding(PASS, f"trust verdict {cand}, as in the baseline ({base})", figures)


def trust_verdict(inputs: GateInputs, model: str, method: str) -> str:
    """The trust table's verdict of `model` × `method`; a missing table, row or unknown verdict raises
    naming the file."""
    table = required_table(inputs, inputs.trust, TRUST.file, "the verdict check reads the trust verdicts")
    path = inputs.table_path(TRUST.file)
    rows = table[(table["model"] == model) & (table["method"] == method)]
    if rows.empty:
        raise GateInputError(f"{path}: no row for {model}/{method}")
    verdict = str(rows["verdict"].iloc[0])
    if verdict not in TRUST_ORDER:
        raise GateInputError(
            f"{path}: column 'verdict' holds {verdict!r} for {model}/{method}; valid: {', '.join(TRUST_ORDER)}"
        )
    return verdict


# --- task_metric ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskMetricOptions:
    tolerance: float
    #: a metric of the model cards (None: the task's headline, R² for steering, accuracy for obstacle)
    metric: str | None = None


@register_check("task_metric")
class TaskMetric(GateCheck):
    description = "the model card's task metric may not drop by more than a tolerance"
    Options = TaskMetricOptions
    bounds = MappingProxyType({"tolerance": (0.0, None)})
    per_method = False

    def evaluate(self, subject: Subject, options: TaskMetricOptions) -> Finding:
        metric = options.metric or TRAINING_TASKS.get(card_task(subject.baseline, subject.model)).headline
        base = card_metric(subject.baseline, subject.model, metric)
        cand = card_metric(subject.candidate, subject.candidate_model, metric)
        figures: dict[str, Any] = {"metric": metric, "tolerance": options.tolerance}
        figures.update(baseline=base, candidate=cand)
        if base is None or cand is None:
            return Finding(INCONCLUSIVE, f"{metric} is undefined on one side ({base} → {cand})", figures)
        drop = metric_drop(metric, base, cand)
        figures["drop"] = drop
        verdict = FAIL if drop > options.tolerance + SLACK else PASS
        where = "beyond" if verdict == FAIL else "within"
        message = f"{metric} {base:.4g} → {cand:.4g} (drop {drop:+.4g}), {where} the tolerance {options.tolerance:g}"
        return Finding(verdict, message, figures)


def metric_drop(metric: str, baseline: float, candidate: float) -> float:
    """How much worse the candidate's `metric` is than the baseline's (negative: better)."""
    return candidate - baseline if metric in LOWER_IS_BETTER else baseline - candidate


def card_metric(inputs: GateInputs, model: str, metric: str) -> float | None:
    """`model`'s card metric (None where the card records it as undefined); a missing one raises naming
    the card and field."""
    metrics = card(inputs, model).get("metrics")
    if not isinstance(metrics, dict) or metric not in metrics:
        valid = ", ".join(metrics) if isinstance(metrics, dict) else "none"
        raise GateInputError(
            f"{inputs.card_path(model)}: field 'metrics.{metric}' is missing; valid: {valid}"
        )
    value = metrics[metric]
    return None if value is None else float(value)
