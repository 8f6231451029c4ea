"""Evaluation: do the maps deserve trust? Causal class erasure, sanity checks, ROAD perturbation,
localisation on cause masks and the granularity sweep, each judged against null explainers.

Importing this package registers every check of `gradsum.evaluation.checks` in `CHECKS` and every
model-free map (the null explainers' priors, the known-answer controls) in `MODEL_FREE_MAPS`.
"""

from __future__ import annotations

from gradsum.evaluation.base import (
    CHECKS,
    CheckResult,
    Criterion,
    EvaluationContext,
    NoOptions,
    PlannedMethod,
    TrustCheck,
    check_options,
    planned_maps,
    register_check,
)
from gradsum.evaluation.checks.breakdown import BreakdownCheck
from gradsum.evaluation.checks.causal import CausalCheck
from gradsum.evaluation.checks.granularity import GranularityCheck
from gradsum.evaluation.checks.localisation import LocalisationCheck
from gradsum.evaluation.checks.perturbation import PerturbationCheck
from gradsum.evaluation.checks.sanity import SanityCheck
from gradsum.evaluation.checks.shortcut import ShortcutCheck
from gradsum.evaluation.controls import CONTROL_EXPLAINERS
from gradsum.evaluation.ground_truth import ground_truth_table
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.trust import TrustReport, run_checks
from gradsum.evaluation.verdicts import trust_table

__all__ = [
    "CHECKS",
    "CONTROL_EXPLAINERS",
    "NULL_EXPLAINERS",
    "BreakdownCheck",
    "CausalCheck",
    "CheckResult",
    "Criterion",
    "EvaluationContext",
    "GranularityCheck",
    "LocalisationCheck",
    "NoOptions",
    "PerturbationCheck",
    "PlannedMethod",
    "SanityCheck",
    "ShortcutCheck",
    "TrustCheck",
    "TrustReport",
    "check_options",
    "ground_truth_table",
    "planned_maps",
    "register_check",
    "run_checks",
    "trust_table",
]
