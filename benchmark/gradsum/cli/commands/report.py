"""`gradsum report RESULTS`: validate a results folder and (re)write its plots and report.html; on a
leaderboard folder (`leaderboard.json`, no results manifest), write the leaderboard's page and figures."""

from __future__ import annotations

import argparse

from gradsum.cli import Command
from gradsum.contract import REPORT


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results",
        metavar="RESULTS",
        help="a results folder (results/<run-name>) or a leaderboard folder (results/<protocol>)",
    )


def _run(args: argparse.Namespace) -> int:
    from gradsum.leaderboard.page import is_leaderboard_folder, write_leaderboard_report
    from gradsum.report import write_report

    write = write_leaderboard_report if is_leaderboard_folder(args.results) else write_report
    print(write(args.results))
    return 0


COMMAND = Command("report", f"validate a results folder and rewrite its plots and {REPORT}", _add, _run)
