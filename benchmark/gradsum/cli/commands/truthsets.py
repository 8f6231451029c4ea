"""`gradsum truthsets`: list reader kinds, built-in plug-in specs and the truth sets under a data root."""

from __future__ import annotations

import argparse

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="datasets", help="folder whose sub-folders are truth sets")


def _run(args: argparse.Namespace) -> int:
    from gradsum.truthsets import KINDS
    from gradsum.truthsets.check import find_truthsets
    from gradsum.truthsets.spec import builtin_specs, load_spec

    print("kinds (tried in this order):")
    for name, kind in sorted(KINDS.items(), key=lambda item: item[1].priority):
        print(f"  {name:12s} {kind.description}")
    print("built-in plug-in specs (gradsum check PATH --spec NAME):")
    for name in builtin_specs():
        spec = load_spec(name)
        print(
            f"  {name:16s} {spec.encoding.name:7s} splits {','.join(spec.split_names):16s} {spec.description}"
        )
    found = find_truthsets(args.root)
    print(f"truth sets under {args.root}:" if found else f"no truth sets under {args.root}")
    for item in found:
        sizes = ", ".join(f"{split} {size}" for split, size in item.sizes.items()) or "no readable split"
        print(f"  {item.path}  [{item.kind}]  {sizes}")
    return 0


COMMAND = Command(
    "truthsets", "list truth-set kinds, built-in plug-in specs and truth sets under a data root", _add, _run
)
