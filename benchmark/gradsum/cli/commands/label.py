"""`gradsum label`: a pseudo-labelled truth set from a folder of unlabelled frames and a segmenter."""

from __future__ import annotations

import argparse

from gradsum.cli import Command


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images",
        metavar="IMAGES",
        help="a folder of frames: a Cityscapes layout (leftImg8bit/; names, splits and vehicle files kept) "
        "or any folder of .png/.jpg/.jpeg files (searched recursively)",
    )
    parser.add_argument(
        "--segmenter",
        required=True,
        metavar="MODEL",
        help="segmenter folder (gradsum train-segmenter: card.json + weights) or a segmenter.yaml",
    )
    parser.add_argument(
        "--out", required=True, metavar="TRUTHSET", help="the pseudo-labelled truth set to write"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="pixels whose confidence (the chosen class's probability) is below this become void (default 0.5)",
    )
    parser.add_argument(
        "--mode",
        default="resize",
        help="resize (each frame to the segmenter's input size) or slide (windows at full resolution); "
        "default resize",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="frames predicted together (default 8)")
    parser.add_argument(
        "--split",
        help="a plain folder's split name (default test); of a Cityscapes layout, the one split to label "
        "(default all)",
    )
    parser.add_argument(
        "--targets",
        metavar="CSV",
        help="per-frame targets: column 'image' (path relative to IMAGES, or file stem) and one per task",
    )
    parser.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="leave out frames that cannot be read (listed in the manifest) instead of failing",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing TRUTHSET")
    parser.add_argument("--device", help="cpu or cuda (default cuda when available)")


def _run(args: argparse.Namespace) -> int:
    from gradsum.labelling.segmenters import load_segmenter
    from gradsum.labelling.writer import label_frames

    manifest = label_frames(
        args.images,
        load_segmenter(args.segmenter),
        args.out,
        threshold=args.threshold,
        mode=args.mode,
        batch_size=args.batch_size,
        split=args.split,
        targets=args.targets,
        skip_unreadable=args.skip_unreadable,
        segmenter_path=args.segmenter,
        overwrite=args.overwrite,
        device=args.device,
    )
    splits = ", ".join(f"{name} {s.count} ({s.void_share:.1%} void)" for name, s in manifest.splits.items())
    skipped = f"; {len(manifest.skipped)} unreadable skipped" if manifest.skipped else ""
    print(
        f"wrote {args.out}: {splits} labelled by {manifest.segmenter.architecture} "
        f"at threshold {manifest.threshold}{skipped}"
    )
    return 0


COMMAND = Command(
    "label", "label a folder of frames with a segmenter into a pseudo-labelled truth set", _add, _run
)
