"""Attribution maps drawn over their frames, one PNG per frame (the overlays of `gradsum attribute`).

Each overlay is drawn on its own `Figure` with the Agg canvas, not through pyplot: the caller's
matplotlib backend is left alone and no global figure state piles up.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gradsum.errors import ShapeError
from gradsum.fileio import atomic_write_bytes
from gradsum.truthsets.labels import cityscapes_palette

#: Colour map of the attribution (blue = none, red = the frame's most) and its opacity over the frame.
CMAP = "jet"
ALPHA = 0.45
#: Frame pixels per inch of figure and the PNG's resolution: the axes (and so the frame) get about 1.5
#: PNG pixels per frame pixel once the figure's margins are cropped.
PIXELS_PER_INCH = 48
DPI = 96
#: Height in inches kept above the frame for the title, and between two panels side by side.
TITLE_INCHES = 0.3
GAP_INCHES = 0.1


def overlay_figure(image: np.ndarray, heat: np.ndarray, title: str) -> Figure:
    """`heat` (H, W) over the RGB frame `image` (H, W, 3), scaled from 0 to the map's maximum."""
    if heat.ndim != 2 or image.shape[:2] != heat.shape:
        raise ShapeError(f"overlay {title!r}: map of shape {heat.shape} for a frame of shape {image.shape}")
    height, width = heat.shape
    figure = Figure(figsize=(width / PIXELS_PER_INCH, height / PIXELS_PER_INCH + TITLE_INCHES), dpi=DPI)
    axis = figure.add_subplot()
    axis.imshow(image)
    # a map of zeros (nothing attributed) is drawn all blue rather than divided by zero
    axis.imshow(heat, cmap=CMAP, alpha=ALPHA, vmin=0.0, vmax=max(float(heat.max()), 1e-12))
    axis.set_title(title, fontsize=7)
    axis.axis("off")
    return figure


def labelled_overlay_figure(image: np.ndarray, labels: np.ndarray, heat: np.ndarray, title: str) -> Figure:
    """Two panels side by side: the frame under its Cityscapes label colours, and under `heat` (as in
    `overlay_figure`), so that a reader sees at once what the label says and where the map looks."""
    if labels.shape != heat.shape or heat.ndim != 2 or image.shape[:2] != heat.shape:
        raise ShapeError(
            f"overlay {title!r}: map {heat.shape} and labels {labels.shape} for a frame of shape {image.shape}"
        )
    height, width = heat.shape
    inches = height / PIXELS_PER_INCH + TITLE_INCHES
    figure = Figure(figsize=(2 * width / PIXELS_PER_INCH + GAP_INCHES, inches), dpi=DPI)
    # the report embeds the figure as drawn (no tight crop): the panels fill it but for the title and gap
    figure.subplots_adjust(left=0, right=1, bottom=0, top=1 - TITLE_INCHES / inches, wspace=0.05)
    figure.suptitle(title, fontsize=7)
    palette = cityscapes_palette()
    left, right = figure.subplots(1, 2)
    left.imshow(image)
    left.imshow(palette[np.clip(labels, 0, len(palette) - 1)], alpha=ALPHA)
    right.imshow(image)
    right.imshow(heat, cmap=CMAP, alpha=ALPHA, vmin=0.0, vmax=max(float(heat.max()), 1e-12))
    left.axis("off")
    right.axis("off")
    return figure


def overlay_png(image: np.ndarray, heat: np.ndarray, title: str) -> bytes:
    """The overlay of `heat` on `image` as PNG bytes, cropped to what is drawn."""
    figure = overlay_figure(image, heat, title)
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def save_overlays(
    folder: str | Path, images: Sequence[np.ndarray], maps: Sequence[np.ndarray], titles: Sequence[str]
) -> list[Path]:
    """Write `overlay_000.png`, `overlay_001.png`, ... into `folder`: map i over frame i, titled titles[i].

    Each map must have its frame's height and width (frames of a truth set may differ in size).
    """
    if not len(images) == len(maps) == len(titles):
        raise ShapeError(f"overlays: {len(images)} frames, {len(maps)} maps and {len(titles)} titles")
    return [
        atomic_write_bytes(Path(folder) / f"overlay_{index:03d}.png", overlay_png(image, heat, title))
        for index, (image, heat, title) in enumerate(zip(images, maps, titles, strict=True))
    ]
