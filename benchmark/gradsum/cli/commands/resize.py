"""`gradsum resize`: a model folder rebuilt for another input size (a ViT's position embedding resampled)."""

from __future__ import annotations

import argparse

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder to resize (card.json + weights)")
    parser.add_argument(
        "--img-size",
        required=True,
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="the new input size, e.g. 1024 2048 for Cityscapes frames (a multiple of the patch size)",
    )
    parser.add_argument("--out", required=True, help="the new model folder")


def _run(args: argparse.Namespace) -> int:
    from gradsum.models.resize import resize_model

    card = resize_model(args.model, args.img_size, args.out, argument="--img-size")
    before, after = card.resized["img_size"]["from"], card.resized["img_size"]["to"]
    grids = card.resized["token_grid"]
    tokens = "" if grids["to"] is None else f", tokens {grids['from']} → {grids['to']}"
    print(f"wrote {args.out}: {card.name} at {after[0]}×{after[1]} (made at {before[0]}×{before[1]}{tokens})")
    return 0


COMMAND = Command(
    "resize", "rebuild a model folder for another input size (ViT position embedding resampled)", _add, _run
)
