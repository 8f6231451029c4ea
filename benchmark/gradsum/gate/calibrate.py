"""Proposing a policy from seed twins: the noise floor of a gate.

Two models trained alike but for the seed differ a little; a policy tighter than that fails a retrained
copy of the baseline. Each twin is gated against the baseline with every bar at zero (the figures are the
same as a real gate's, on the same resamples), and the policy takes the loosest figure any twin shows:

- class_shift (score and mass share): the largest |CI bound| of any class's shift in any twin, rounded up;
- spearman: the lowest CI low bound of any twin, rounded down;
- top_k (score and mass share): keep_in the classes in the top k of the baseline and of every twin,
  keep_out the classes in the top k of none of them (point profiles);
- task_metric: the largest drop of any twin (at least 0), rounded up;
- verdict: included as it is (a retrained twin does not move the bar), where the baseline has trust tables.

The profile checks are proposed per method: a retrained model moves one method's maps more than another's.

So every twin passes the class-shift, Spearman and task-metric checks, and each number says which twin set
it (the policy's `calibration`, written as comments by `write_policy`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gradsum.evaluation.verdicts import PASS
from gradsum.fileio import atomic_write_text
from gradsum.gate.inputs import GateInputError, GateInputs, as_inputs
from gradsum.gate.outcome import CheckOutcome
from gradsum.gate.policy import policy_from_dict
from gradsum.gate.runner import gate
from gradsum.gate.statistics import class_means

#: Decimal places of a proposed number: rounded outwards, so a twin at the edge still passes.
PLACES = 4
#: The statistics whose class shifts and top k a proposal bounds: the score (relevance per pixel) and the
#: mass share (the share of the map), which rank classes differently where class areas differ.
SHIFT_STATISTICS = ("score", "mass_share")
#: The first comment line of a written policy: what it guards.
HEADER = "a gate policy proposed by `gradsum gate --calibrate` from the spread of seed twins of the baseline"


def propose_policy(
    baseline: str | os.PathLike[str] | GateInputs,
    twins: Sequence[str | os.PathLike[str] | GateInputs],
    *,
    model: str,
    method: str | None = None,
    k: int = 3,
) -> dict[str, Any]:
    """Policy data (ready for `policy_from_dict` and `write_policy`) whose bars every twin of `model`
    meets; `method` None proposes the profile checks for every method the baseline holds for the model,
    each with bars of its own (methods differ in how much a retrained model moves their maps). The data's
    `calibration` says, per number, which twin set it."""
    if not twins:
        raise GateInputError("twins: a proposal needs at least one twin results folder, got none")
    base = as_inputs(baseline)
    runs = [as_inputs(t) for t in twins]
    held = sorted(set(base.per_image.loc[base.per_image["model"] == model, "method"].astype(str)))
    checks: list[dict[str, Any]] = []
    notes: dict[str, str] = {"twins": ", ".join(str(t.folder) for t in runs)}

    def add(entry: dict[str, Any], note: str, selectors: dict[str, Any]) -> None:
        notes[f"checks[{len(checks)}]"] = note
        checks.append({**entry, **selectors})

    probes: list[list[CheckOutcome]] = []
    for chosen in [method] if method else held:
        selectors: dict[str, Any] = {"models": [model], "methods": [chosen]}
        probes = [_probe(base, twin, model, selectors) for twin in runs]
        for statistic in SHIFT_STATISTICS:
            reach, why = _loosest_shift(probes, runs, f"class_shift_{statistic}")
            add({"check": "class_shift", "statistic": statistic, "tolerance": _up(reach)}, why, selectors)
        low, why = _lowest_spearman(probes, runs)
        add({"check": "spearman", "floor": _down(low)}, why, selectors)
        for statistic in SHIFT_STATISTICS:
            keep_in, keep_out = _top_k(base, runs, model, chosen, k, statistic)
            if keep_in or keep_out:
                entry = {
                    "check": "top_k",
                    "k": k,
                    "keep_in": keep_in,
                    "keep_out": keep_out,
                    "statistic": statistic,
                }
                why = f"keep_in: in the top {k} by {statistic} of the baseline and every twin; keep_out: of none"
                add(entry, why, selectors)
    # the model's own checks: its verdict (where the baseline has one to keep), and its task metric (the same
    # in every method's probe)
    if base.trust is not None:
        add({"check": "verdict"}, "the baseline's trust verdict may not get worse", {"models": [model]})
    else:
        notes["verdict"] = "no verdict check: the baseline ran no trust checks (no trust table)"
    drop, why = _largest_drop(probes, runs)
    add({"check": "task_metric", "tolerance": _up(max(drop, 0.0))}, why, {"models": [model]})
    return {
        "alpha": 0.05,
        "resamples": 1000,
        "seed": 0,
        "inconclusive": PASS,
        "checks": checks,
        "calibration": notes,
    }


def _probe(base: GateInputs, twin: GateInputs, model: str, selectors: dict[str, Any]) -> list[CheckOutcome]:
    """Every figure the proposal reads, from a gate of `twin` with every bar at zero."""
    zero = [
        *(
            {"name": f"class_shift_{s}", "check": "class_shift", "statistic": s, "tolerance": 0.0}
            for s in SHIFT_STATISTICS
        ),
        {"check": "spearman", "floor": 0.0},
        {"check": "task_metric", "tolerance": 0.0},
    ]
    policy = policy_from_dict({"checks": [{**c, **selectors} for c in zero]}, "calibration probe")
    other = model if model in twin.models else twin.models[0]
    return gate(base, twin, policy, models={model: other}).outcomes


def _loosest_shift(probes: list[list[CheckOutcome]], runs: list[GateInputs], name: str) -> tuple[float, str]:
    best, why = 0.0, "no class shift"
    for outcomes, run in zip(probes, runs, strict=True):
        for outcome in (o for o in outcomes if o.name == name):
            for row in outcome.details:
                reach = max(abs(row["low"]), abs(row["high"]))
                if reach > best:
                    best = reach
                    why = (
                        f"largest |CI bound| over the twins: {run.folder.name} ({outcome.subject}), class "
                        f"{row['class']}: [{row['low']:+.4f}, {row['high']:+.4f}]"
                    )
    return best, why


def _lowest_spearman(probes: list[list[CheckOutcome]], runs: list[GateInputs]) -> tuple[float, str]:
    lowest, why = 1.0, "no ranked profile"
    for outcomes, run in zip(probes, runs, strict=True):
        for outcome in (o for o in outcomes if o.check == "spearman"):
            low = outcome.figures["low"]
            if math.isfinite(low) and low < lowest:
                lowest = low
                why = f"lowest CI low bound over the twins: {run.folder.name} ({outcome.subject}): {outcome.message}"
    return lowest, why


def _largest_drop(probes: list[list[CheckOutcome]], runs: list[GateInputs]) -> tuple[float, str]:
    largest, why = 0.0, "no twin's task metric dropped"
    for outcomes, run in zip(probes, runs, strict=True):
        for outcome in (o for o in outcomes if o.check == "task_metric"):
            drop = outcome.figures.get("drop")
            if drop is not None and drop > largest:
                largest = drop
                why = f"largest drop over the twins: {run.folder.name}: {outcome.message}"
    return largest, why


def _top_k(
    base: GateInputs, runs: list[GateInputs], model: str, method: str, k: int, statistic: str
) -> tuple[list[str], list[str]]:
    tops = [
        _top(run, model if model in run.models else run.models[0], method, k, statistic)
        for run in [base, *runs]
    ]
    classes = sorted(set(base.per_image["class"].astype(str)))
    keep_in = [c for c in classes if all(c in top for top in tops)]
    keep_out = [c for c in classes if not any(c in top for top in tops)]
    return keep_in, keep_out


def _top(run: GateInputs, model: str, method: str, k: int, statistic: str) -> set[str]:
    """The classes in the top k of the model's point profile of `statistic` under `method`."""
    table = run.per_image
    rows = table[(table["model"] == model) & (table["method"] == method)]
    wide = rows.pivot_table(index="image", columns="class", values=statistic, aggfunc="first")
    means = class_means(wide.to_numpy(float))
    order = sorted(range(len(means)), key=lambda i: -means[i])
    return {str(wide.columns[i]) for i in order[:k] if math.isfinite(means[i])}


def _up(value: float) -> float:
    return math.ceil(_scaled(value)) / 10**PLACES


def _down(value: float) -> float:
    return math.floor(_scaled(value)) / 10**PLACES


def _scaled(value: float) -> float:
    # a figure one float rounding off a round number (0.010000000000000009) stays that number
    return round(value * 10**PLACES, 6)


def write_policy(data: dict[str, Any], path: str | os.PathLike[str], header: str = HEADER) -> Path:
    """Write policy `data` as YAML: `header` as the first comment, one line per check, and each number's
    calibration note as that check's comment. The data is validated first."""
    target = Path(path)
    policy_from_dict(data, str(target))
    notes = dict(data.get("calibration", {}))
    lines = [f"# {header}"]
    lines += [f"# {key}: {note}" for key, note in notes.items() if not key.startswith("checks[")]
    top = {key: value for key, value in data.items() if key not in ("checks", "calibration")}
    if top:
        lines.append(yaml.safe_dump(top, sort_keys=False).rstrip())
    lines.append("checks:")
    for index, entry in enumerate(data["checks"]):
        flow = yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=10**6).strip()
        note = notes.get(f"checks[{index}]")
        lines.append(f"  - {flow}" + (f"  # {note}" if note else ""))
    return atomic_write_text(target, "\n".join(lines) + "\n")
