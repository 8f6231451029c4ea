"""`gradsum run`: the main job, from truth set to report."""

from __future__ import annotations

import argparse

from gradsum.cli import Command
from gradsum.contract import REPORT


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="YAML config file or built-in config name (default: the embedded default)"
    )
    parser.add_argument("--out", help="results folder (default: results/<config name>)")
    parser.add_argument(
        "--list-configs", action="store_true", help="list the built-in example configs and exit"
    )
    parser.add_argument("--device", help="cpu or cuda (default: the config's, else cuda when present)")
    parser.add_argument("--truthset", help="truth-set folder (overrides the config's truthset.path)")
    parser.add_argument("--spec", help="plug-in spec for the truth set: a built-in name or a spec file")
    parser.add_argument(
        "--workers", type=int, help="DataLoader processes decoding frames (default: config's)"
    )
    parser.add_argument(
        "--precision",
        help="attribution precision: fp32, bf16 (CPU, CUDA) or fp16 (CUDA) (default: the config's); "
        "a method that cannot run in half precision (LRP) refuses it and says why",
    )
    parser.add_argument(
        "--batch-size", type=int, help="frames attributed together (default: the config's batch_size)"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard an interrupted run's finished shards instead of resuming",
    )


def _run(args: argparse.Namespace) -> int:
    from gradsum.attribution.precision import PRECISIONS
    from gradsum.pipeline import default_config, list_configs, load_config, run, with_overrides

    if args.list_configs:
        for name, description in list_configs().items():
            print(f"{name:16s} {description}")
        return 0
    if args.precision is not None:
        PRECISIONS.get(args.precision, "--precision")
    config = load_config(args.config) if args.config else default_config()
    config = with_overrides(
        config,
        device=args.device,
        truthset=args.truthset,
        spec=args.spec,
        workers=args.workers,
        precision=args.precision,
        batch_size=args.batch_size,
    )
    folder = run(config, out=args.out, progress=True, fresh=args.fresh)
    print(f"report: {folder / REPORT}")
    return 0


COMMAND = Command(
    "run", "run the whole pipeline (default: synthetic set, default models and methods)", _add, _run
)
