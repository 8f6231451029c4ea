"""`gradsum evaluate RESULTS [--checks ...]`: trust checks on an existing results folder and its models."""

from __future__ import annotations

import argparse

from gradsum.cli import Command
from gradsum.contract import REPORT, TRUST


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="a results folder written by `gradsum run`")
    parser.add_argument(
        "--checks",
        help="comma-separated check names (default: every one the truth set supports); an unknown name "
        "is refused with the list of registered checks",
    )
    parser.add_argument("--images", type=int, help="evaluate the first N images of the split (default 200)")
    parser.add_argument("--device", help="cpu or cuda")


def _run(args: argparse.Namespace) -> int:
    from gradsum.pipeline.evaluate import evaluate

    checks = None if args.checks is None else [c.strip() for c in args.checks.split(",") if c.strip()]
    folder = evaluate(args.results, checks, images=args.images, device=args.device)
    print(f"trust table: {folder / TRUST.file}")
    print(f"report: {folder / REPORT}")
    return 0


COMMAND = Command(
    "evaluate", "run trust checks (causal erasure, sanity, ROAD, localisation) on a run", _add, _run
)
