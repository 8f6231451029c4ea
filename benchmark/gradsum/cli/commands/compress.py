"""`gradsum compress`: compressed variants of a model folder (int8 quantisation, magnitude or channel pruning)."""

from __future__ import annotations

import argparse

from gradsum.cli import Command

#: where the variants go when --out is not given (beside the default models)
DEFAULT_OUT = "models"


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder to compress (card.json + weights)")
    parser.add_argument(
        "--method",
        required=True,
        help="int8_dynamic (linear layers to int8, CPU only), magnitude (global L1 pruning) or channels "
        "(L2 pruning of conv output channels); see docs/compression.md",
    )
    parser.add_argument(
        "--levels",
        type=float,
        nargs="+",
        metavar="LEVEL",
        help="fractions in (0, 1) to prune, one variant each (default: magnitude 0.5 0.7 0.9, channels 0.25 0.5; "
        "int8_dynamic takes none)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"folder the variants are written into, as <model>_<method>_<level> (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--truthset",
        help="truth set whose test split the variants are scored on (default: the one the model's card names)",
    )
    parser.add_argument("--device", default="cpu", help="device the metrics are measured on (default: cpu)")


def _run(args: argparse.Namespace) -> int:
    from gradsum.models import compress_variants, read_card

    for folder in compress_variants(
        args.model, args.method, args.levels, args.out, truthset=args.truthset, device=args.device
    ):
        card = read_card(folder)
        record = card.compression
        level = "" if record["level"] is None else f" {record['level']:g}"
        figures = ", ".join(
            f"{name} {value:.3f} (was {record['parent_metrics'].get(name):.3f})"
            for name, value in card.metrics.items()
            if value is not None and record["parent_metrics"].get(name) is not None
        )
        print(
            f"wrote {folder}: {record['method']}{level}, sparsity {record['sparsity']:.3f}, "
            f"{record['bytes']:,} bytes (was {record['parent_bytes']:,}); {record['metrics_split']}: {figures}"
        )
    return 0


COMMAND = Command(
    "compress", "write compressed variants of a model folder (int8, magnitude or channel pruning)", _add, _run
)
