"""`gradsum methods`: list every registered attribution method with what it applies to."""

from __future__ import annotations

import argparse

from gradsum.cli import Command
from gradsum.errors import UnknownNameError

NOTE = (
    "gradcam, hirescam, gradcam++, xgradcam, layercam: fast torch path; lib:<name>: pytorch-grad-cam "
    "(methods without a fast path also answer to their plain name)"
)


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--family", help="only methods for this model family (a wrong name lists the valid ones)"
    )


def _run(args: argparse.Namespace) -> int:
    from gradsum.attribution import list_methods
    from gradsum.taxonomy import FAMILIES

    if args.family is not None and args.family not in FAMILIES:
        valid = ", ".join(sorted(FAMILIES))
        raise UnknownNameError(f"unknown family {args.family!r} for --family; valid: {valid}")
    for info in list_methods():
        if args.family and args.family not in info.applies_to:
            continue
        layer = "layer" if info.uses_layer else "-"
        print(f"{info.name:22s} {'/'.join(info.applies_to):16s} {layer:6s} {info.description}")
    print(f"\n{NOTE}")
    return 0


COMMAND = Command(
    "methods", "list attribution methods, the model families they apply to, and what they do", _add, _run
)
