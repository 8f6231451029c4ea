"""`gradsum train-segmenter`: train a segmenter on a labelled truth set and write its folder (card + weights)."""

from __future__ import annotations

import argparse

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    # the defaults are train_segmenter's (a test holds them equal); here so that --help shows them
    parser.add_argument("truthset", metavar="TRUTHSET", help="a labelled truth set (any kind GradSUM reads)")
    parser.add_argument("--out", required=True, help="the segmenter folder to write (must not exist)")
    parser.add_argument(
        "--architecture",
        default="lraspp_mobilenet_v3_large",
        help="segmentation network, a torchvision builder without downloaded weights (default %(default)s)",
    )
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per step (default %(default)s)")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="the network's input size (default: the size of the split's first frame)",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the initial weights and batches (default %(default)s)"
    )
    parser.add_argument("--split", default="train", help="the split trained on (default %(default)s)")
    parser.add_argument(
        "--held-out", default="val", help="the split the card's mIoU is measured on (default %(default)s)"
    )
    parser.add_argument("--device", help="cpu or cuda (default cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _run(args: argparse.Namespace) -> int:
    from gradsum.labelling.metrics import MIOU
    from gradsum.labelling.segmenter import HELD_OUT
    from gradsum.labelling.training import train_segmenter

    card = train_segmenter(
        args.truthset,
        args.out,
        architecture=args.architecture,
        steps=args.steps,
        batch_size=args.batch_size,
        input_size=args.input_size,
        lr=args.lr,
        seed=args.seed,
        split=args.split,
        held_out=args.held_out,
        device=args.device,
        progress=not args.quiet,
    )
    metrics, training = card[HELD_OUT], card["training"]
    print(
        f"wrote {args.out}: {training['architecture']} trained {training['steps']} steps on {training['split']}; "
        f"held-out mIoU {metrics[MIOU]:.3f} on {metrics['split']} ({metrics['frames']} frames)"
    )
    return 0


COMMAND = Command(
    "train-segmenter",
    "train a segmenter on a labelled truth set (for gradsum label) and write its folder",
    _add,
    _run,
)
