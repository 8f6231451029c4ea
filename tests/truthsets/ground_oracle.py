"""The flat-road camera by hand, the oracle the ladder's geometric tests compare with: a pixel centre
(u, v) below the horizon sees the ground at depth z = f · 1.5 / (v − horizon) and lateral offset
x = (u − W/2) / f · z, with f = W/2 and the horizon at 0.42 H (the renderer's camera, 1.5 m high)."""

from __future__ import annotations

import numpy as np


def ground_xz(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(x, z) in metres per pixel of an image of `size` (H, W); z is inf at and above the horizon, x 0."""
    h, w = size
    focal, horizon = 0.5 * w, 0.42 * h
    rows, cols = np.mgrid[0:h, 0:w] + 0.5
    with np.errstate(divide="ignore"):
        z = np.where(rows > horizon, focal * 1.5 / (rows - horizon), np.inf)
    x = (cols - w / 2) / focal * np.where(np.isfinite(z), z, 0.0)
    return x, z
