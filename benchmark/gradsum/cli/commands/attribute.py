"""`gradsum attribute`: attribution maps and overlays for a few images of a truth set."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING

from gradsum.cli import Command
from gradsum.errors import ResultsError
from gradsum.fileio import atomic_directory, atomic_write_json

if TYPE_CHECKING:
    import numpy as np


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="model folder (card.json + model.safetensors), or a file in it"
    )
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
    parser.add_argument("--split", default="test", help="truth-set split")
    parser.add_argument("--count", type=int, default=8, help="number of images (the first of the split)")
    parser.add_argument("--out", default=None, help="output folder (default: results/attribute-<method>)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _overlay_png(image: np.ndarray, heat: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    height, width = heat.shape
    figure, axis = plt.subplots(figsize=(width / 48, height / 48 + 0.3), dpi=96)
    axis.imshow(image)
    axis.imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=max(float(heat.max()), 1e-12))
    axis.set_title(title, fontsize=7)
    axis.axis("off")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch.nn.functional as F

    from gradsum.attribution import attribute
    from gradsum.models import checkpoint_folder, load_model
    from gradsum.models.inputs import INPUT_TRANSFORM, model_input
    from gradsum.truthsets import open_truthset
    from gradsum.utils import default_device

    out = Path(args.out or f"results/attribute-{args.method.replace(':', '-')}")
    if out.exists() and not args.overwrite:
        raise ResultsError(f"--out {out} already exists; pass --overwrite to replace it")
    device = args.device or default_device()
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
    )
    maps = result.maps.cpu().numpy()
    # overlays are drawn on the frames as stored: maps go back to each frame's own size
    shown = [
        F.interpolate(result.maps[i : i + 1, None], size=s.image.shape[:2], mode="bilinear")[0, 0]
        .cpu()
        .numpy()
        for i, s in enumerate(samples)
    ]
    with atomic_directory(out, overwrite=args.overwrite) as staging:
        np.save(staging / "maps.npy", maps)
        for index, (sample, heat) in enumerate(zip(samples, shown, strict=True)):
            title = f"{args.method} · {result.target} · image {index}"
            (staging / f"overlay_{index:03d}.png").write_bytes(_overlay_png(sample.image, heat, title))
        record = {**result.describe(), "model": str(args.model), "truthset": str(args.truthset)}
        record |= {"split": args.split, "count": count, "input_transform": INPUT_TRANSFORM}
        atomic_write_json(staging / "attribution.json", record)
    print(f"wrote {count} maps and overlays to {out}")
    return 0


COMMAND = Command("attribute", "attribution maps and overlays for a few images of a truth set", _add, _run)
