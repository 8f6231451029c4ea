"""`gradsum finetune`: relevance-guided fine-tuning of a saved model onto named foreground classes.

The options after `--model`, `--truthset` and `--out` are generated from `FinetuneSettings`: one per
field, its help from the field's metadata and its default from the field, so a new setting is an option
without a line here.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from gradsum.cli import Command
from gradsum.finetune.settings import HELP, FinetuneSettings, field_default, text_of


def option(name: str) -> str:
    """The command-line option of settings field `name` (`batch_size` → `--batch-size`)."""
    return "--" + name.replace("_", "-")


def add_settings(
    parser: argparse.ArgumentParser, settings: type[FinetuneSettings] = FinetuneSettings
) -> None:
    """One option per field of `settings`, read as text (parsed by `FinetuneSettings.from_text`); an
    option not given is left out of the namespace, so the field's own default applies."""
    for f in fields(settings):
        default = field_default(f)
        shown = "" if default is MISSING else f" (default: {text_of(default)})"
        parser.add_argument(
            option(f.name),
            dest=f.name,
            required=default is MISSING,
            default=argparse.SUPPRESS,
            metavar=f.name.upper(),
            help=f"{f.metadata[HELP]}{shown}",
        )


def settings_from(
    args: argparse.Namespace, settings: type[FinetuneSettings] = FinetuneSettings
) -> FinetuneSettings:
    """The checked settings the options in `args` give; errors name the option."""
    given = {f.name: getattr(args, f.name) for f in fields(settings) if hasattr(args, f.name)}
    parsed = settings.from_text(given, option)
    parsed.check(option)
    return parsed


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="base model folder (only read, never changed)")
    parser.add_argument("--truthset", required=True, help="truth-set folder whose scenes are fine-tuned on")
    parser.add_argument("--out", required=True, help="new model folder (must differ from --model)")
    add_settings(parser)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")


def _run(args: argparse.Namespace) -> int:
    from gradsum.finetune import finetune_model

    settings = settings_from(args)
    card = finetune_model(args.model, args.truthset, args.out, settings, device=args.device)
    first, last = card.finetune["loss_first"], card.finetune["loss_last"]
    print(
        f"fine-tuned {args.model} for {settings.steps} steps on {settings.samples} scenes: loss "
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
