"""`gradsum profile`: per-class profiles of one existing model on one truth set."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradsum.cli import Command
from gradsum.contract import REPORT


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, action="append", help="checkpoint folder (repeatable)")
    parser.add_argument("--truthset", required=True, help="truth-set folder")
    parser.add_argument("--method", action="append", help="attribution method (repeatable; default gradcam)")
    parser.add_argument("--layer", help="layer for layer-based methods (default: the method's default)")
    parser.add_argument(
        "--split",
        help="split to attribute (default: the truth set's labelled one: test, or val for Cityscapes)",
    )
    parser.add_argument(
        "--spec", help="plug-in spec for the folder: a built-in name (gradsum truthsets) or a file"
    )
    parser.add_argument(
        "--kind",
        help="truth-set reader (gradsum truthsets), e.g. cityscapes-coarse for gtCoarse beside gtFine "
        "(default: detected from the folder)",
    )
    parser.add_argument("--limit", type=int, help="attribute at most this many images")
    parser.add_argument("--normalise", default="minmax", help="minmax, raw or sum (default minmax)")
    parser.add_argument("--resolution", default="label", help="label (upsample maps) or grid (default label)")
    parser.add_argument(
        "--precision",
        help="attribution precision: fp32 (default), bf16 (CPU, CUDA) or fp16 (CUDA); a method that "
        "cannot run in half precision (LRP) refuses it and says why",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="frames attributed together (default 32); 1 keeps a full-resolution ViT to one frame's memory",
    )
    parser.add_argument(
        "--checks",
        help="comma-separated trust checks run after profiling (default: gradsum run's); '' runs none, "
        "and gradsum evaluate runs them later on the results folder",
    )
    parser.add_argument(
        "--no-attention-diagnostics",
        dest="attention_diagnostics",
        action="store_false",
        help="skip the ViTs' per-layer attention entropy and raw-attention profiles (each block's whole "
        "attention matrix: at 8,192 tokens most of a frame's time and memory)",
    )
    parser.add_argument("--out", help="results folder (default results/profile-<first model>)")
    parser.add_argument("--device", help="cpu or cuda")
    parser.add_argument(
        "--workers", type=int, default=1, help="DataLoader processes decoding frames (default 1)"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="discard an interrupted run's finished shards instead of resuming",
    )


def _run(args: argparse.Namespace) -> int:
    from gradsum.attribution.precision import PRECISIONS
    from gradsum.evaluation import CHECKS
    from gradsum.pipeline import ModelConfig, PlannedMethod, RunConfig, TruthSetConfig, run, with_overrides
    from gradsum.pipeline.config import EvaluationConfig

    if args.precision is not None:
        PRECISIONS.get(args.precision, "--precision")
    evaluation = EvaluationConfig()
    if args.checks is not None:
        checks = tuple(name.strip() for name in args.checks.split(",") if name.strip())
        for name in checks:
            CHECKS.get(name, "--checks")
        evaluation = EvaluationConfig(checks=checks)
    models = tuple(ModelConfig(name=Path(m).name, checkpoint=m) for m in args.model)
    config = RunConfig(
        name=f"profile-{models[0].name}",
        truthset=TruthSetConfig(
            path=args.truthset, split=args.split, limit=args.limit, kind=args.kind, spec=args.spec
        ),
        models=models,
        methods=tuple(PlannedMethod(method=m, layer=args.layer) for m in args.method or ["gradcam"]),
        normalise=args.normalise,
        resolution=args.resolution,
        device=args.device,
        evaluation=evaluation,
        attention_diagnostics=args.attention_diagnostics,
    )
    config = with_overrides(
        config, workers=args.workers, precision=args.precision, batch_size=args.batch_size
    )
    folder = run(config, out=args.out, progress=True, fresh=args.fresh)
    print(f"report: {folder / REPORT}")
    return 0


COMMAND = Command("profile", "aggregate attribution maps of existing models on a truth set", _add, _run)
