"""`gradsum report RESULTS`: validate a results folder and (re)write its plots and report.html."""

from __future__ import annotations

import argparse

from gradsum.cli import Command
from gradsum.contract import REPORT


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="a results folder (results/<run-name>)")


def _run(args: argparse.Namespace) -> int:
    from gradsum.report import write_report

    print(write_report(args.results))
    return 0


COMMAND = Command("report", f"validate a results folder and rewrite its plots and {REPORT}", _add, _run)
