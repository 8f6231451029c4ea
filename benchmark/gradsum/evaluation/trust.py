"""Run the trust checks on one evaluation context and assemble the trust table.

`run_checks(context, ["causal", "sanity"])` is the Python API behind `gradsum evaluate` and the
evaluation stage of `gradsum run`: each named check runs once on the same images, and the trust table
takes every check's figures against chance and the confounds, paired on the same images (`verdicts`);
the recommendations name, per model, the method to use or say that none is shown better than chance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from gradsum.contract import CRITERIA, CRITERIA_PER_IMAGE, RECOMMENDATIONS, TRUST
from gradsum.evaluation.base import CHECKS, CheckResult, EvaluationContext
from gradsum.evaluation.verdicts import criteria_frame, criteria_per_image, recommend, trust_table

log = logging.getLogger(__name__)


@dataclass
class TrustReport:
    """Each check's result, the trust table, and the seconds each check took."""

    results: dict[str, CheckResult]
    trust: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table to write, by name (`contract.table_schema`): the trust table first, what its verdicts
        are computed from (`contract.VERDICT_TABLES`), then each check's own."""
        criteria = [c for r in self.results.values() for c in r.criteria]
        evidence = [c.key for c in criteria if c.evidence]
        # the roles the verdicts were taken with: the trust table records each row's
        roles = dict(zip(self.trust["method"].astype(str), self.trust["role"].astype(str), strict=True))
        tables = {
            TRUST.name: self.trust,
            RECOMMENDATIONS.name: recommend(self.trust, evidence),
            CRITERIA.name: criteria_frame(criteria),
            CRITERIA_PER_IMAGE.name: criteria_per_image(self.results, roles),
        }
        for result in self.results.values():
            tables.update(result.tables)
        return tables


def run_checks(context: EvaluationContext, checks: Sequence[str]) -> TrustReport:
    """Run the named checks (unknown names are refused before any runs) and judge every method."""
    factories = {name: CHECKS.get(name, "checks") for name in checks}
    results, seconds = {}, {}
    for name, factory in factories.items():
        log.info("trust check %s on %d images ...", name, len(context.indices))
        start = time.perf_counter()
        results[name] = factory().run(context)
        seconds[name] = round(time.perf_counter() - start, 2)
        log.info("trust check %s done in %.1f s", name, seconds[name])
    roles = {m.name: m.role for methods in context.plan.values() for m in methods}
    return TrustReport(results, trust_table(results, roles, context.n_resamples, context.seed), seconds)
