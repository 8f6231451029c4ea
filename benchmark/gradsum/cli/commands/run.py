"""`gradsum run`: the main job, from truth set to report."""

from __future__ import annotations

import argparse

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="YAML config file or built-in config name (default: the embedded default)"
    )
    parser.add_argument("--out", help="results folder (default: results/<config name>)")
    parser.add_argument(
        "--list-configs", action="store_true", help="list the built-in example configs and exit"
    )
    parser.add_argument("--device", help="cpu or cuda (default: the config's, else cuda when present)")


def _run(args: argparse.Namespace) -> int:
    from gradsum.pipeline import default_config, list_configs, load_config, run

    if args.list_configs:
        for name, description in list_configs().items():
            print(f"{name:16s} {description}")
        return 0
    config = load_config(args.config) if args.config else default_config()
    if args.device:
        from dataclasses import replace

        config = replace(config, device=args.device)
    folder = run(config, out=args.out, progress=True)
    print(f"report: {folder / 'report.html'}")
    return 0


COMMAND = Command(
    "run", "run the whole pipeline (default: synthetic set, default models and methods)", _add, _run
)
