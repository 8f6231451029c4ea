"""`gradsum check`: validate a truth set, report its label statistics, and exit 0 only when it is usable.

Label-statistics warnings (rare classes, classes missing across splits, mostly-void images) never change
the exit code: a set with them stays usable.
"""

from __future__ import annotations

import argparse
import json

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="truth-set folder")
    parser.add_argument("--split", default=None, help="check only this split (default: every split found)")
    parser.add_argument(
        "--kind", default=None, help="reader kind (default: detected; see `gradsum truthsets`)"
    )
    parser.add_argument(
        "--spec", default=None, help="plug-in spec file or built-in spec name (implies --kind plugin)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report (problems, label statistics, warnings) as JSON"
    )


def _run(args: argparse.Namespace) -> int:
    from gradsum.truthsets.check import check_truthset

    report = check_truthset(args.path, split=args.split, kind=args.kind, spec=args.spec)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.usable else 1


COMMAND = Command(
    "check",
    "validate a truth set: counts, label statistics, sizes, unknown ids, missing files",
    _add,
    _run,
)
