"""The profile gate: does a candidate model still use the scene the way a baseline did?

`gate(baseline, candidate, policy)` compares two results folders (a candidate profiled on the baseline's
truth set and methods) under a policy of checks (`load_policy`), each decided on the paired image
bootstrap, and returns a `GateReport` that writes itself as JUnit XML, JSON, Markdown and a text table.
`propose_policy` sets a policy's bars from seed twins of the baseline: the noise floor of the gate.
"""

from gradsum.gate.calibrate import propose_policy, write_policy
from gradsum.gate.checks import GATE_CHECKS, LOWER_IS_BETTER, Finding, GateCheck, Subject, register_check
from gradsum.gate.inputs import GateInputError, GateInputs, read_results
from gradsum.gate.outcome import (
    GATE_JUNIT,
    GATE_MARKDOWN,
    GATE_SUMMARY,
    CheckOutcome,
    GateReport,
    text_table,
    write_junit,
    write_markdown,
    write_summary,
)
from gradsum.gate.policy import (
    BUILTIN_POLICIES,
    CheckSpec,
    Policy,
    PolicyMismatchError,
    load_policy,
    policy_from_dict,
)
from gradsum.gate.runner import gate

__all__ = [
    "BUILTIN_POLICIES",
    "GATE_CHECKS",
    "GATE_JUNIT",
    "GATE_MARKDOWN",
    "GATE_SUMMARY",
    "LOWER_IS_BETTER",
    "CheckOutcome",
    "CheckSpec",
    "Finding",
    "GateCheck",
    "GateInputError",
    "GateInputs",
    "GateReport",
    "Policy",
    "PolicyMismatchError",
    "Subject",
    "gate",
    "load_policy",
    "policy_from_dict",
    "propose_policy",
    "read_results",
    "register_check",
    "text_table",
    "write_junit",
    "write_markdown",
    "write_policy",
    "write_summary",
]
