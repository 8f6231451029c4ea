"""Assertions for a test suite: a profile gate as one line of pytest.

from gradsum.testing import assert_profiles_close

def test_the_retrained_model_still_looks_at_the_road():
    assert_profiles_close("results/baseline", "results/candidate", "gate.yaml")
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gradsum.gate import GateInputs, Policy, gate

__all__ = ["assert_profiles_close"]


def assert_profiles_close(
    baseline: str | os.PathLike[str] | GateInputs,
    candidate: str | os.PathLike[str] | GateInputs,
    policy: Policy | str | os.PathLike[str],
    *,
    models: Mapping[str, str] | None = None,
) -> None:
    """Gate `candidate` against `baseline` under `policy` (as `gradsum.gate.gate`) and raise an
    `AssertionError` listing every violated check, one line each with its figures, when the gate fails.

    Input errors (another truth set, a policy naming an unknown class) raise as they do from `gate`: they
    are a broken test, not a failed one.
    """
    report = gate(baseline, candidate, policy, models=models)
    if report.passed:
        return
    lines = [f"{len(report.violations)} gate check(s) violated ({report.policy}):"]
    lines += [f"  {outcome.line()}" for outcome in report.violations]
    raise AssertionError("\n".join(lines))
