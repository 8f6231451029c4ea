"""`gradsum finetune`: relevance-guided fine-tuning of a saved model onto named foreground classes."""

from __future__ import annotations

import argparse

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="base model folder (only read, never changed)")
    parser.add_argument("--truthset", required=True, help="truth-set folder whose scenes are fine-tuned on")
    parser.add_argument(
        "--foreground", required=True, help="comma-separated Cityscapes classes the relevance should cover"
    )
    parser.add_argument("--out", required=True, help="new model folder (must differ from --model)")
    parser.add_argument("--samples", type=int, default=50, help="K: scenes of the split, drawn by --seed")
    parser.add_argument(
        "--weights",
        help="loss weights as four numbers background,foreground,relevance,keep (default: RobustViT's)",
    )
    parser.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=8, help="scenes per step")
    parser.add_argument("--split", default="train", help="truth-set split the scenes come from")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")


def _run(args: argparse.Namespace) -> int:
    from gradsum.models.finetune import LossWeights, finetune_model

    weights = None if args.weights is None else LossWeights.parse(args.weights, "--weights")
    card = finetune_model(
        args.model,
        args.truthset,
        [name.strip() for name in args.foreground.split(",") if name.strip()],
        args.out,
        samples=args.samples,
        weights=weights,
        lr=args.lr,
        steps=args.steps,
        batch_size=args.batch_size,
        split=args.split,
        seed=args.seed,
        device=args.device,
    )
    first, last = card.finetune["loss_first"], card.finetune["loss_last"]
    print(
        f"fine-tuned {args.model} for {args.steps} steps on {args.samples} scenes: loss "
        f"{first['total']:.4f} -> {last['total']:.4f} (background {first['background']:.4f} -> "
        f"{last['background']:.4f}); wrote {args.out}"
    )
    return 0


COMMAND = Command(
    "finetune",
    "relevance-guided fine-tuning: move a model's relevance onto named classes, write a new model folder",
    _add,
    _run,
)
