"""`gradsum train`: train a model spec on a truth set and write its checkpoint and model card."""

from __future__ import annotations

import argparse
import json

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="built-in spec name (pilotnet, vit, ...) or a spec file"
    )
    parser.add_argument("--truthset", required=True, help="truth-set folder (e.g. datasets/synthetic)")
    parser.add_argument(
        "--task", help="training task to learn (default: the spec's; a wrong name lists the valid ones)"
    )
    parser.add_argument("--out", help="checkpoint folder (default models/<spec name>)")
    parser.add_argument("--epochs", type=int, help="override the spec's epoch count")
    parser.add_argument("--shuffle-labels", action="store_true", help="train on permuted targets")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if a run was interrupted")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    from gradsum.models import TRAINING_TASKS, load_spec, train_model

    if args.task is not None:
        TRAINING_TASKS.get(args.task, "--task")  # refuse a bad name before the spec and truth set are read
    spec = load_spec(args.model)
    out = args.out or f"models/{spec.name}"
    card = train_model(
        spec,
        args.truthset,
        args.task,
        out,
        device=args.device,
        epochs=args.epochs,
        shuffle_labels=args.shuffle_labels,
        resume=not args.no_resume,
        progress=not args.quiet,
    )
    print(json.dumps(card.metrics, indent=2))
    print(
        f"trained {spec.name} ({card.task}) in {card.training_seconds:.0f} s, "
        f"{card.epochs_run} epochs (best {card.best_epoch}); wrote {out}"
    )
    return 0


COMMAND = Command("train", "train a model spec on a truth set and write weights and a model card", _add, _run)
