"""Evaluation: do the maps deserve trust? Causal class erasure, sanity checks, ROAD perturbation,
localisation on cause masks and the granularity sweep, each judged against null explainers.

Importing this package registers every check in `CHECKS` and every model-free map (the null
explainers' priors, the known-answer controls) in `MODEL_FREE_MAPS`.
"""

from __future__ import annotations

from gradsum.evaluation.base import (
    CHECKS,
    CheckResult,
    Criterion,
    EvaluationContext,
    PlannedMethod,
    planned_maps,
)
from gradsum.evaluation.breakdown import BreakdownCheck
from gradsum.evaluation.causal import CausalCheck
from gradsum.evaluation.controls import CONTROL_EXPLAINERS
from gradsum.evaluation.granularity import GranularityCheck
from gradsum.evaluation.ground_truth import ground_truth_table
from gradsum.evaluation.localisation import LocalisationCheck
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.perturbation import PerturbationCheck
from gradsum.evaluation.sanity import SanityCheck
from gradsum.evaluation.shortcut import ShortcutCheck
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
    "PerturbationCheck",
    "PlannedMethod",
    "SanityCheck",
    "ShortcutCheck",
    "TrustReport",
    "ground_truth_table",
    "planned_maps",
    "run_checks",
    "trust_table",
]
