"""`gradsum generate`: render the synthetic driving-scene truth set in the Cityscapes layout."""

from __future__ import annotations

import argparse

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="datasets/synthetic", help="folder to create (default datasets/synthetic)"
    )
    parser.add_argument(
        "--count", type=int, help="scenes in all, split 80/10/10 (default: the generator's default count)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed; the same seed gives byte-identical files")
    parser.add_argument("--size", help="image size HxW (default: the generator's default size)")
    parser.add_argument(
        "--shortcut",
        type=float,
        default=0.0,
        metavar="RHO",
        help="probability that the sky tint agrees with the steering sign in train (0 = no shortcut)",
    )
    parser.add_argument(
        "--decorrelated",
        action="store_true",
        help="also render the test scenes with the sky tint against (test_decorrelated) and with "
        "(test_agreeing) the steering sign in every scene",
    )
    parser.add_argument(
        "--difficulty",
        action="append",
        default=[],
        metavar="KNOB=LEVEL",
        help="render harder: a knob (occlusion, clutter: the scene; shadows, weather, camera: the image) at "
        "level 0..3, targets unchanged (repeatable)",
    )
    parser.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="KNOB",
        help="train and val scenes each draw their own level 0..3 of this rendering knob; test stays "
        "clean (repeatable)",
    )
    parser.add_argument(
        "--only", action="append", default=[], metavar="SPLIT", help="render this split only (repeatable)"
    )
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing set at --out")


def _run(args: argparse.Namespace) -> int:
    from gradsum.truthsets.synthetic import generate, parse_difficulty, parse_size
    from gradsum.truthsets.synthetic.writer import DEFAULT_COUNT, DEFAULT_SIZE

    root = generate(
        args.out,
        count=DEFAULT_COUNT if args.count is None else args.count,
        seed=args.seed,
        size=DEFAULT_SIZE if args.size is None else parse_size(args.size),
        shortcut=args.shortcut,
        overwrite=args.overwrite,
        workers=args.workers,
        decorrelated=args.decorrelated,
        difficulty=parse_difficulty(args.difficulty),
        mix=args.mix,
        only=args.only,
    )
    print(f"synthetic truth set written to {root}")
    return 0


COMMAND = Command("generate", "render the synthetic driving-scene truth set (Cityscapes layout)", _add, _run)
