"""`gradsum compare`: per-class comparisons of the profiles in one or more results folders.

Profiles over the same images get paired tests; the same model profiled on two truth sets
(transferability) gets unpaired ones. With several folders every label reads `run:model/method`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gradsum.cli import Command
from gradsum.contract import COMPARISONS, PER_IMAGE, write_table
from gradsum.errors import GradSUMError
from gradsum.names import parse_pair

if TYPE_CHECKING:
    import pandas as pd


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results", nargs="+", metavar="RESULTS", help=f"results folder(s) with {PER_IMAGE.file}"
    )
    parser.add_argument("--out", default=None, help=f"CSV to write (default: RESULTS/{COMPARISONS.file})")
    parser.add_argument(
        "--pair",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        help="compare only these model/method labels, split at the first '/' (model names hold none), "
        "e.g. hybrid_vit/split/attention (repeatable); default: every model pair and method pair",
    )


def _run(args: argparse.Namespace) -> int:
    import pandas as pd

    from gradsum.aggregation import compare, compare_all, read_runs

    if args.out is None and len(args.results) > 1:
        raise GradSUMError("--out: required when comparing more than one results folder")
    out = Path(args.out) if args.out else Path(args.results[0]) / COMPARISONS.file
    per_image = read_runs(args.results)
    if args.pair:
        frames = [compare(per_image, parse_pair(a, "--pair"), parse_pair(b, "--pair")) for a, b in args.pair]
        table = pd.concat(frames, ignore_index=True)
    else:
        table = compare_all(per_image)
    write_table(out.parent, COMPARISONS.stored_as(out.name), table)
    _print_differences(table)
    print(f"wrote {out}")
    return 0


def _print_differences(table: pd.DataFrame) -> None:
    if table.empty:
        print("nothing to compare: one model/method combination only")
        return
    for (a, b), pair in table.groupby(["a", "b"], sort=False):
        first = pair.iloc[0]
        print(
            f"{a} vs {b} ({first['test']}): Spearman rho {first['spearman_rho']:.3f} "
            f"[{first['spearman_ci_low']:.3f}, {first['spearman_ci_high']:.3f}], "
            f"{int(pair['differs'].sum())} of {len(pair)} classes differ"
        )
    differs = table[table["differs"].astype(bool)]
    if not differs.empty:
        shown = differs[["a", "b", "class", "test", "n_a", "n_b", "mean_a", "mean_b", "p_holm"]]
        print("classes that differ (Holm-corrected p < 0.05):")
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


COMMAND = Command(
    "compare",
    "compare the class profiles of models, methods and truth sets (a test per class, Spearman)",
    _add,
    _run,
)
