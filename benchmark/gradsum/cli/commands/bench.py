"""`gradsum bench`: run benchmark suites and write their figures as JSON."""

from __future__ import annotations

import argparse
import json

from gradsum.cli import Command
from gradsum.fileio import atomic_write_json


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", action="append", help="suite to run (repeatable); default all")
    parser.add_argument("--list", action="store_true", help="list suites and exit")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and counts")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument(
        "--out",
        default="results/bench.json",
        help="JSON file to write; a suite's figure goes beside it as <stem>.<suite>.png",
    )


def _run(args: argparse.Namespace) -> int:
    from gradsum.bench import discover_suites, run_suites, write_figures
    from gradsum.utils import resolve_device

    registry = discover_suites()
    if args.list:
        for name, suite in registry.items():
            print(f"{name:16s} {suite.description}")
        return 0
    for name in args.suite or []:
        registry.get(name, "--suite")
    results = run_suites(args.suite, args.quick, resolve_device(args.device))
    atomic_write_json(args.out, results)
    print(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}")
    for path in write_figures(results, args.out):
        print(f"wrote {path}")
    return 0


COMMAND = Command("bench", "measure speed and memory ratios and write them as JSON", _add, _run)
