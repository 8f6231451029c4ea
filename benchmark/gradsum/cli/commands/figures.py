"""`gradsum figures RESULTS --out DIR`: the paper set (column-sized PDF/SVG/PNG figures, LaTeX tables)."""

from __future__ import annotations

import argparse

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="a results folder (results/<run-name>)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the paper set into")
    # The widths live in gradsum.report.plots, which loads matplotlib; it checks the name, so --help stays fast.
    parser.add_argument(
        "--size", default="single", help="paper column the figures fit: single (default) or double"
    )


def _run(args: argparse.Namespace) -> int:
    from gradsum.report.figures import write_figures

    paths = write_figures(args.results, args.out, size=args.size)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


COMMAND = Command(
    "figures", "write a results folder's paper figures (PDF, SVG, PNG) and LaTeX tables", _add, _run
)
