"""`gradsum attribute`: attribution maps and overlays for a few images of a truth set."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradsum.cli import Command
from gradsum.contract import ATTRIBUTION_MAPS, ATTRIBUTION_RECORD, CARD, WEIGHTS
from gradsum.errors import ResultsError, SpecError
from gradsum.fileio import atomic_directory, atomic_write_json


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=f"model folder ({CARD} + {WEIGHTS}), or a file in it")
    parser.add_argument("--truthset", required=True, help="truth-set folder")
    parser.add_argument("--method", default="gradcam", help="method name (see `gradsum methods`)")
    parser.add_argument(
        "--layer", default=None, help="module path, or tokenizer/transformer/both for hybrids"
    )
    parser.add_argument("--target", default=None, help="target name (default: direction / predicted)")
    parser.add_argument("--normalise", default="minmax", help="minmax, raw or sum")
    parser.add_argument(
        "--postprocess",
        default=None,
        help="comma-separated steps on the method's grid: relu, abs, minmax, sum ('' for none; "
        "default: the method's own, relu for CAMs)",
    )
    parser.add_argument(
        "--precision",
        help="attribution precision: fp32 (default), bf16 (CPU, CUDA) or fp16 (CUDA); a method that "
        "cannot run in half precision (LRP) refuses it and says why",
    )
    parser.add_argument("--split", default="test", help="truth-set split")
    parser.add_argument("--count", type=int, default=8, help="number of images (the first of the split)")
    parser.add_argument("--out", default=None, help="output folder (default: results/attribute-<method>)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from gradsum.attribution import attribute
    from gradsum.attribution.base import upsample
    from gradsum.attribution.precision import DEFAULT_PRECISION, resolve_precision
    from gradsum.models import checkpoint_folder, load_model
    from gradsum.models.inputs import INPUT_TRANSFORM, model_input
    from gradsum.report.overlays import save_overlays
    from gradsum.truthsets import open_truthset
    from gradsum.utils import resolve_device

    if args.count < 1:
        raise SpecError(f"--count: must be 1 or more, got {args.count}")
    out = Path(args.out or f"results/attribute-{args.method.replace(':', '-')}")
    if out.exists() and not args.overwrite:
        raise ResultsError(f"--out {out} already exists; pass --overwrite to replace it")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision or DEFAULT_PRECISION, device, "--precision").name
    model, card = load_model(checkpoint_folder(args.model), device=device)
    truthset = open_truthset(args.truthset, args.split)
    count = min(args.count, len(truthset))
    samples = [truthset[i] for i in range(count)]
    size = (int(card.spec["img_size"][0]), int(card.spec["img_size"][1]))
    images = model_input([s.image for s in samples], size, device)
    result = attribute(
        model,
        images,
        args.method,
        target=args.target,
        task=card.task,
        layer=args.layer,
        normalise=args.normalise,
        postprocess=None if args.postprocess is None else [s for s in args.postprocess.split(",") if s],
        precision=precision,
    )
    maps = result.maps.cpu().numpy()
    # overlays are drawn on the frames as stored: maps go back to each frame's own size
    shown = [
        upsample(result.maps[i : i + 1], s.image.shape[:2])[0].cpu().numpy() for i, s in enumerate(samples)
    ]
    titles = [f"{args.method} · {result.target} · image {i}" for i in range(count)]
    with atomic_directory(out, overwrite=args.overwrite) as staging:
        np.save(staging / ATTRIBUTION_MAPS, maps)
        save_overlays(staging, [s.image for s in samples], shown, titles)
        record = {**result.describe(), "model": str(args.model), "truthset": str(args.truthset)}
        record |= {"split": args.split, "count": count, "input_transform": INPUT_TRANSFORM}
        atomic_write_json(staging / ATTRIBUTION_RECORD, record)
    print(f"wrote {count} maps and overlays to {out}")
    return 0


COMMAND = Command("attribute", "attribution maps and overlays for a few images of a truth set", _add, _run)
