"""`gradsum leaderboard`: run a frozen protocol once per training seed and rank the methods over the seeds.

Each seed's run is a `gradsum run` of the protocol's config (resumed, or reused when its folder is
complete); the boards (one per protocol model) go to `<results>/<protocol name>/` as tables and a page. Under `torchrun` every
rank takes part in the runs and rank 0 writes the boards. `--add FILE` scores an outside method: the
file registers it with `gradsum.attribution.register_method` when imported.
"""

from __future__ import annotations

import argparse

from gradsum.cli import Command
from gradsum.contract import REPORT

#: The protocol a plain `gradsum leaderboard` runs.
DEFAULT_PROTOCOL = "synth-v1"


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol",
        default=DEFAULT_PROTOCOL,
        help=f"a built-in protocol name or a protocol YAML file (default: {DEFAULT_PROTOCOL})",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", metavar="SEED", help="only these training seeds (default: all)"
    )
    parser.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="FILE",
        help="a .py file (or module) registering a method to score beside the built-in ones (repeatable)",
    )
    parser.add_argument(
        "--methods", nargs="+", metavar="METHOD", help="score only these methods (default: all that apply)"
    )
    parser.add_argument("--data", help="the protocol's truth-set folder (default: datasets/<protocol>)")
    parser.add_argument("--models", help="where the models are trained or found (default: models/<protocol>)")
    parser.add_argument(
        "--results",
        default="results",
        help="results root: seed folders and <protocol>/ boards (default: results)",
    )
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument(
        "--ladder",
        nargs="+",
        metavar="STEP",
        help="run only these steps of the difficulty ladder: clean or a knob (default: every step)",
    )
    steps.add_argument("--no-ladder", action="store_true", help="run no step of the difficulty ladder")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    parser.add_argument(
        "--assemble-only",
        action="store_true",
        help="run nothing: rank the seeds' existing results folders",
    )


def _run(args: argparse.Namespace) -> int:
    from gradsum.leaderboard import load_protocol
    from gradsum.leaderboard.runner import run_leaderboard

    protocol = load_protocol(args.protocol)
    folder = run_leaderboard(
        protocol,
        data=args.data,
        models_dir=args.models,
        results=args.results,
        seeds=args.seeds,
        methods=args.methods,
        add=args.add,
        device=args.device,
        ladder=[] if args.no_ladder else args.ladder,
        assemble_only=args.assemble_only,
        progress=True,
    )
    if folder is not None:
        print(f"leaderboard: {folder / REPORT}")
    return 0


COMMAND = Command(
    "leaderboard",
    "run a frozen leaderboard protocol over its training seeds and rank the methods",
    _add,
    _run,
)
