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
from typing import Protocol

import pandas as pd

from gradsum.contract import CRITERIA, CRITERIA_PER_IMAGE, RECOMMENDATIONS, TRUST
from gradsum.evaluation.base import CHECKS, CheckResult, EvaluationContext, FinishedParts
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


class FinishedChecks(FinishedParts, Protocol):
    """Where a run keeps each check's result as it finishes, and the parts of a long check
    (`EvaluationContext.part`), so that a killed run resumes after the last of them."""

    def load(self, name: str) -> tuple[CheckResult, float] | None:
        """Check `name`'s result and seconds, when it finished with the same settings; else None."""

    def save(self, name: str, result: CheckResult, seconds: float) -> None:
        """Keep check `name`'s result and the seconds it took."""


def run_checks(
    context: EvaluationContext, checks: Sequence[str], finished: FinishedChecks | None = None
) -> TrustReport:
    """Run the named checks (unknown names are refused before any runs) and judge every method.

    With `finished`, a check that finished before (an interrupted run) is read back instead of run, and
    each check is kept there as it finishes: a check's figures depend on the context alone, never on the
    checks before it (what they leave in `context.cache` is recomputed when missing). The parts of a long
    check are kept there too while these checks run (`context.finished_parts`); a check's seconds include
    those its parts took in the interrupted run.
    """
    factories = {name: CHECKS.get(name, "checks") for name in checks}
    results, seconds = {}, {}
    before = context.finished_parts
    if finished is not None:
        context.finished_parts = finished
    try:
        for name, factory in factories.items():
            kept = finished.load(name) if finished is not None else None
            if kept is not None:
                results[name], seconds[name] = kept
                log.info("trust check %s: kept from an interrupted run (%.1f s then)", name, seconds[name])
                continue
            log.info("trust check %s on %d images ...", name, len(context.indices))
            start = time.perf_counter()
            results[name] = factory().run(context)
            elapsed = time.perf_counter() - start + context.kept_seconds.pop(name, 0.0)
            seconds[name] = round(elapsed, 2)
            log.info("trust check %s done in %.1f s", name, seconds[name])
            if finished is not None:
                finished.save(name, results[name], seconds[name])
    finally:
        context.finished_parts = before
    roles = {m.name: m.role for methods in context.plan.values() for m in methods}
    return TrustReport(results, trust_table(results, roles, context.n_resamples, context.seed), seconds)
