"""`gradsum gate`: fail a build when a candidate model no longer uses the scene the way the baseline did.

The candidate is a results folder, or a model folder that is first profiled the way the baseline was
(its truth set, methods and checks, from the baseline's manifest). The outcomes go to a JUnit XML file
and a JSON summary in `--out` (and Markdown with `--markdown`), and a table to the terminal. Exit codes:
0 the policy holds, 1 it is violated, 2 a usage or input error. `--calibrate` proposes a policy from seed
twins of the baseline's model instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gradsum.cli import Command
from gradsum.contract import CARD
from gradsum.errors import GradSUMError

#: Where the candidate's profile goes under `--out` when CANDIDATE is a model folder.
CANDIDATE_RESULTS = "candidate"


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE", help="the baseline's results folder")
    parser.add_argument(
        "candidate",
        nargs="?",
        metavar="CANDIDATE",
        help=f"a results folder, or a model folder (with {CARD}) to profile as the baseline was",
    )
    parser.add_argument(
        "--policy", metavar="POLICY", help="policy YAML file, or a built-in policy name (e.g. default)"
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="BASE[=CAND]",
        help="the baseline model to gate, and the candidate's model it pairs with when named otherwise "
        "(repeatable for a results folder; default: the models both hold, or the only one of each)",
    )
    parser.add_argument(
        "--out",
        default="gate",
        metavar="DIR",
        help="folder for the JUnit XML and the JSON summary (default: gate)",
    )
    parser.add_argument("--markdown", metavar="PATH", help="also write a Markdown summary (for a PR comment)")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="propose a policy from seed twins of the baseline's model (no CANDIDATE), written under --out",
    )
    twins = parser.add_mutually_exclusive_group()
    twins.add_argument(
        "--twins", type=int, default=2, metavar="N", help="seed twins to train or reuse (default 2)"
    )
    twins.add_argument(
        "--twin-model", action="append", metavar="FOLDER", help="a twin model folder to use (repeatable)"
    )
    parser.add_argument(
        "--method", help="with --calibrate: the method the policy guards (default: every method of the model)"
    )
    parser.add_argument(
        "--device", help="device to profile a candidate or twins on (default: the baseline's)"
    )


def _pairs(values: list[str] | None) -> dict[str, str]:
    """--model BASE[=CAND] values as baseline model → candidate model."""
    pairs = {}
    for value in values or []:
        base, _, cand = value.partition("=")
        if not base or (_ and not cand):
            raise GradSUMError(f"--model: {value!r} is not BASE or BASE=CANDIDATE")
        pairs[base] = cand or base
    return pairs


def _only_model(pairs: dict[str, str], why: str) -> str | None:
    if len(pairs) > 1:
        raise GradSUMError(f"--model: {why} replaces one baseline model; got {', '.join(pairs)}")
    return next(iter(pairs), None)


def _run(args: argparse.Namespace) -> int:
    pairs = _pairs(args.model)
    if args.calibrate:
        return _calibrate(args, _only_model(pairs, "a calibration"))
    if args.candidate is None:
        raise GradSUMError("CANDIDATE: required unless --calibrate")
    if args.method is not None:
        raise GradSUMError("--method: only with --calibrate (a policy names its methods itself)")
    if args.policy is None:
        raise GradSUMError("--policy: required to gate a candidate")

    from gradsum.gate import (
        GATE_JUNIT,
        GATE_SUMMARY,
        gate,
        load_policy,
        text_table,
        write_junit,
        write_markdown,
        write_summary,
    )

    # the policy is checked before a candidate model is profiled: a typo costs no run
    policy = load_policy(args.policy)
    out = Path(args.out)
    candidate = Path(args.candidate)
    if (candidate / CARD).is_file():
        from gradsum.pipeline.gate import profile_candidate

        model = _only_model(pairs, "a candidate model folder")
        candidate = profile_candidate(
            args.baseline,
            candidate,
            model=model,
            out=out / CANDIDATE_RESULTS,
            device=args.device,
            progress=True,
        )
        pairs = {}
    report = gate(args.baseline, candidate, policy, models=pairs or None)
    written = [write_junit(report, out / GATE_JUNIT), write_summary(report, out / GATE_SUMMARY)]
    if args.markdown:
        written.append(write_markdown(report, args.markdown))
    print(text_table(report))
    for path in written:
        print(f"wrote {path}")
    return 0 if report.passed else 1


def _calibrate(args: argparse.Namespace, model: str | None) -> int:
    if args.candidate is not None:
        raise GradSUMError("CANDIDATE: --calibrate proposes a policy from seed twins; give no candidate")
    from gradsum.pipeline.gate import calibrate

    path = calibrate(
        args.baseline,
        model=model,
        method=args.method,
        twins=args.twins,
        twin_models=args.twin_model or (),
        out=args.out,
        device=args.device,
        progress=True,
    )
    print(Path(path).read_text(encoding="utf-8"), end="")
    print(f"wrote {path}")
    return 0


COMMAND = Command(
    "gate",
    "gate a candidate against a baseline under a policy (exit 0 pass, 1 violated, 2 input error)",
    _add,
    _run,
)
