"""One path from a truth-set image to model input, used by training, the pipeline and evaluation.

Images are resized to the model's input size with antialiased bilinear interpolation and rounded back to
uint8 (what training stores), then scaled to float32 in [0, 1]. Frames are transformed one by one, so a
truth set whose frames differ in size still batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: What `model_input` does, recorded in manifests beside the results it produced.
INPUT_TRANSFORM = {
    "resize": "bilinear, antialias, rounded to uint8 (only when the frame size differs from the model's)",
    "scale": "uint8 / 255 → float32 in [0, 1]",
    "crop": "none",
}


def resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (B, 3, H, W) resized to `size` as training stores it (identity when the size matches)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    resized = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def model_input(
    images: np.ndarray | Sequence[np.ndarray], size: tuple[int, int], device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(B, 3, *size) float32 in [0, 1] on `device` from uint8 (H, W, 3) frames of any sizes."""
    frames = [np.ascontiguousarray(image) for image in images]
    if all(frame.shape[:2] == tuple(size) for frame in frames):
        # one stack and one NCHW copy of uint8: concatenating permuted views is 50x slower
        batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    else:
        batch = torch.cat(
            [
                resize_uint8(torch.from_numpy(frame).permute(2, 0, 1)[None].contiguous(), size)
                for frame in frames
            ]
        )
    # contiguous NCHW: a channels-last batch makes convolutions take other kernels (last-digit differences)
    batch = batch.contiguous()
    if torch.device(device).type == "cuda":
        # uint8 through pinned memory: a quarter of the float bytes, copied without a pageable bounce
        return batch.pin_memory().to(device, non_blocking=True).float().div_(255.0)
    return batch.to(device).float().div_(255.0)
