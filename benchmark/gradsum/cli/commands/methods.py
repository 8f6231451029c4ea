"""`gradsum methods`: list every registered attribution method with what it applies to."""

from __future__ import annotations

import argparse

from gradsum.attribution import list_methods
from gradsum.cli import Command

NOTE = (
    "gradcam, hirescam, gradcam++, xgradcam, layercam: fast torch path; lib:<name>: pytorch-grad-cam "
    "(methods without a fast path also answer to their plain name)"
)


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", choices=("cnn", "vit", "hybrid"), help="only methods for this family")


def _run(args: argparse.Namespace) -> int:
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
