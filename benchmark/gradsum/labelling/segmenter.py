"""A segmenter (a segmentation network with its map onto Cityscapes ids) and `predict`, its labels for frames.

`resize` mode sends each frame through GradSUM's one input transform (`gradsum.models.inputs.model_input`)
at the segmenter's input size and upsamples the logits back to the frame. `slide` mode runs windows of the
input size over the frame at full resolution and averages the class probabilities where windows overlap,
so small objects keep their pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gradsum.errors import GradSUMError, ShapeError, UnknownNameError
from gradsum.labelling.metrics import MIOU
from gradsum.models.inputs import model_input
from gradsum.utils import default_device

#: How `predict` fits a frame to the segmenter: the whole frame resized, or windows at full resolution.
INFERENCE_MODES = ("resize", "slide")
#: The card field holding a segmenter's figures on its held-out split (`SegmentationScores.to_dict`).
HELD_OUT = "metrics"
#: A window's stride in `slide` mode, as a fraction of the window: neighbours overlap by a third.
SLIDE_STRIDE = 2 / 3


@dataclass(frozen=True)
class Segmenter:
    """A segmentation network and what its output channels mean."""

    #: eval mode; maps (B, 3, h, w) float in [0, 1] to logits (B, K, h, w) (normalisation happens inside)
    module: torch.nn.Module
    #: the Cityscapes labelId of each of the K output channels
    classes: tuple[int, ...]
    #: (height, width) the network was trained at
    input_size: tuple[int, int]
    architecture: str
    #: what the segmenter folder's card says (held-out IoU per class, training settings, source file)
    card: Mapping[str, Any]

    @property
    def held_out(self) -> Mapping[str, Any]:
        """The card's figures on the held-out split (empty for a checkpoint trained elsewhere)."""
        figures: Mapping[str, Any] = self.card.get(HELD_OUT, {})
        return figures

    @property
    def held_out_miou(self) -> float:
        """The held-out mean IoU; NaN when the card has none."""
        return float(self.held_out.get(MIOU, float("nan")))


@dataclass(frozen=True)
class Prediction:
    """One frame's labels and how sure the segmenter was of each pixel."""

    #: (H, W) uint8 Cityscapes labelIds at the frame's own size
    labels: np.ndarray
    #: (H, W) float32 in [0, 1]: the softmax probability of the chosen class
    confidence: np.ndarray


def predict(
    segmenter: Segmenter,
    frames: Sequence[np.ndarray],
    *,
    mode: str = "resize",
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> list[Prediction]:
    """Labels and confidences for (H, W, 3) uint8 RGB frames of any sizes, in the frames' order."""
    if mode not in INFERENCE_MODES:
        raise UnknownNameError(
            f"unknown inference mode {mode!r} for mode; valid: {', '.join(INFERENCE_MODES)}"
        )
    if batch_size < 1:
        raise GradSUMError(f"batch_size={batch_size}: must be at least 1")
    for index, frame in enumerate(frames):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ShapeError(
                f"frames[{index}]: expected (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}"
            )
    target = torch.device(device if device is not None else default_device())
    module = segmenter.module.to(target).eval()
    probabilities: list[torch.Tensor | None] = [None] * len(frames)
    with torch.no_grad():
        resized = [
            i for i, frame in enumerate(frames) if mode == "resize" or _smaller(frame, segmenter.input_size)
        ]
        for chunk in _chunks(resized, batch_size):
            logits = _logits(module, model_input([frames[i] for i in chunk], segmenter.input_size, target))
            for i, frame_logits in zip(chunk, logits, strict=True):
                upsampled = F.interpolate(frame_logits[None], size=frames[i].shape[:2], mode="bilinear")
                probabilities[i] = upsampled[0].softmax(dim=0)
        for i, frame in enumerate(frames):
            if probabilities[i] is None:
                probabilities[i] = _slide(module, frame, segmenter.input_size, batch_size, target)
    classes = np.asarray(segmenter.classes, dtype=np.uint8)
    predictions = []
    for probability in probabilities:
        assert probability is not None  # every frame went through one of the two modes
        if probability.shape[0] != len(classes):
            raise ShapeError(
                f"segmenter {segmenter.architecture!r}: {probability.shape[0]} output channels but "
                f"{len(classes)} classes"
            )
        confidence, channel = probability.max(dim=0)
        predictions.append(
            Prediction(classes[channel.cpu().numpy()], confidence.cpu().numpy().astype(np.float32))
        )
    return predictions


def window_starts(length: int, window: int) -> list[int]:
    """Window offsets along one axis: a stride of `SLIDE_STRIDE` windows, the last flush with the edge."""
    stride = max(1, int(window * SLIDE_STRIDE))
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _slide(
    module: torch.nn.Module, frame: np.ndarray, size: tuple[int, int], batch_size: int, device: torch.device
) -> torch.Tensor:
    """(K, H, W) class probabilities of one frame, averaged over the overlapping windows that cover it."""
    height, width = size
    corners = [
        (y, x) for y in window_starts(frame.shape[0], height) for x in window_starts(frame.shape[1], width)
    ]
    total: torch.Tensor | None = None
    counts = torch.zeros(frame.shape[:2], device=device)
    for chunk in _chunks(corners, batch_size):
        windows = [frame[y : y + height, x : x + width] for y, x in chunk]
        window_probabilities = _logits(module, model_input(windows, size, device)).softmax(dim=1)
        if total is None:
            total = torch.zeros((window_probabilities.shape[1], *frame.shape[:2]), device=device)
        for (y, x), probability in zip(chunk, window_probabilities, strict=True):
            total[:, y : y + height, x : x + width] += probability
            counts[y : y + height, x : x + width] += 1
    assert total is not None  # a frame at least as large as the window has at least one window
    return total / counts


def _logits(module: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The module's (B, K, h, w) logits, checked to match the input's spatial size."""
    logits = module(batch)
    if logits.ndim != 4 or logits.shape[-2:] != batch.shape[-2:]:
        raise ShapeError(
            f"segmenter output: expected logits (B, K, {batch.shape[-2]}, {batch.shape[-1]}), got {tuple(logits.shape)}"
        )
    return logits.float()


def _smaller(frame: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether a window of `size` does not fit in the frame (such a frame is predicted in resize mode)."""
    return frame.shape[0] < size[0] or frame.shape[1] < size[1]


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
