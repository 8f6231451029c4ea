"""`gradsum` command line: a thin layer over the Python API.

Each subcommand lives in `gradsum.cli.commands.<name>` and exposes `COMMAND`; they are found
by module discovery, so adding a command touches no other file. Building the parser imports every
command module, so a command module imports only the standard library and light gradsum modules at
the top, and the API it calls (torch, timm, pandas, ...) inside its `run` function: `gradsum --help`
then answers without loading any of them (tests/test_cli_help.py checks this).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gradsum import __version__
from gradsum.errors import GradSUMError


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, argument setup and the function it runs."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _commands() -> list[Command]:
    from gradsum.cli import commands

    found = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        found.append(module.COMMAND)
    return sorted(found, key=lambda c: c.name)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="gradsum", description="Per-class attribution profiles for driving models."
    )
    parser.add_argument("--version", action="version", version=f"gradsum {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module or .py file that registers methods, checks or readers (repeatable)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in _commands():
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(child)
        child.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gradsum` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        from gradsum.plugins import load_plugins

        load_plugins(args.plugin)
        return int(args._run(args))
    except GradSUMError as error:
        print(f"gradsum {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # a full disk, a permission or a vanished file: its message names the path
        print(f"gradsum {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gradsum {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
