"""`predict` against hand-made segmenters whose labels and confidences are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradsum.errors import GradSUMError, ShapeError, UnknownNameError
from gradsum.labelling.segmenter import INFERENCE_MODES, Segmenter, predict, window_starts

#: channel → Cityscapes labelId (road, car)
CLASSES = (7, 26)


class ColourLogits(nn.Module):
    """Per-pixel logits (4r, 4g): channel 0 wins where red exceeds green."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * x[:, :2]


class WindowMeanLogits(nn.Module):
    """Every pixel's logits are the window's mean (4r, 4g): the answer depends on the whole window."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (4 * x[:, :2].mean(dim=(2, 3), keepdim=True)).expand(-1, -1, *x.shape[-2:])


def segmenter(module: nn.Module, size: tuple[int, int]) -> Segmenter:
    return Segmenter(module=module.eval(), classes=CLASSES, input_size=size, architecture="hand", card={})


def softmax2(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of two logits, by hand."""
    ea, eb = np.exp(a), np.exp(b)
    return ea / (ea + eb), eb / (ea + eb)


def test_resize_at_input_size_matches_hand_softmax() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    [prediction] = predict(segmenter(ColourLogits(), (4, 6)), [frame], device="cpu")
    rgb = frame.astype(np.float64) / 255
    p_road, p_car = softmax2(4 * rgb[..., 0], 4 * rgb[..., 1])
    np.testing.assert_array_equal(prediction.labels, np.where(p_road >= p_car, 7, 26).astype(np.uint8))
    np.testing.assert_allclose(prediction.confidence, np.maximum(p_road, p_car), rtol=1e-6)
    assert prediction.labels.dtype == np.uint8 and prediction.confidence.dtype == np.float32


def test_frames_of_two_sizes_in_one_call_come_back_at_their_own_sizes() -> None:
    # uniform frames stay uniform through the resize and the upsampling: the answer is the colour's
    red = np.zeros((10, 14, 3), np.uint8)
    red[..., 0] = 255
    green = np.zeros((5, 3, 3), np.uint8)
    green[..., 1] = 51
    predictions = predict(segmenter(ColourLogits(), (4, 6)), [red, green, red], batch_size=2, device="cpu")
    assert [p.labels.shape for p in predictions] == [(10, 14), (5, 3), (10, 14)]
    assert (predictions[0].labels == 7).all() and (predictions[1].labels == 26).all()
    np.testing.assert_allclose(predictions[0].confidence, 1 / (1 + np.exp(-4.0)), rtol=1e-6)
    np.testing.assert_allclose(predictions[1].confidence, 1 / (1 + np.exp(-0.8)), rtol=1e-6)
    np.testing.assert_array_equal(predictions[2].labels, predictions[0].labels)


def test_window_starts_step_two_thirds_and_end_flush() -> None:
    assert window_starts(6, 3) == [0, 2, 3]
    assert window_starts(9, 3) == [0, 2, 4, 6]
    assert window_starts(3, 3) == [0]
    assert window_starts(100, 30) == [0, 20, 40, 60, 70]


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_slide_averages_window_probabilities(batch_size: int) -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
    [prediction] = predict(
        segmenter(WindowMeanLogits(), (3, 3)), [frame], mode="slide", batch_size=batch_size, device="cpu"
    )
    # oracle: every window's softmax of its mean colour, summed onto its pixels and divided by the count
    rgb = frame.astype(np.float64) / 255
    total = np.zeros((2, 6, 9))
    count = np.zeros((6, 9))
    for y in (0, 2, 3):
        for x in (0, 2, 4, 6):
            mean = rgb[y : y + 3, x : x + 3].mean(axis=(0, 1))
            total[:, y : y + 3, x : x + 3] += np.array(softmax2(4 * mean[0], 4 * mean[1]))[:, None, None]
            count[y : y + 3, x : x + 3] += 1
    probability = total / count
    np.testing.assert_array_equal(prediction.labels, np.where(probability[0] >= probability[1], 7, 26))
    np.testing.assert_allclose(prediction.confidence, probability.max(axis=0), rtol=1e-5)


def test_slide_on_a_frame_smaller_than_a_window_resizes_it() -> None:
    rng = np.random.default_rng(2)
    small = rng.integers(0, 256, size=(2, 8, 3), dtype=np.uint8)
    model = segmenter(WindowMeanLogits(), (3, 3))
    [slid] = predict(model, [small], mode="slide", device="cpu")
    [resized] = predict(model, [small], mode="resize", device="cpu")
    np.testing.assert_array_equal(slid.labels, resized.labels)
    np.testing.assert_array_equal(slid.confidence, resized.confidence)


def test_unknown_mode_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="valid: resize, slide"):
        predict(segmenter(ColourLogits(), (4, 6)), [np.zeros((4, 6, 3), np.uint8)], mode="tile")
    assert INFERENCE_MODES == ("resize", "slide")
    with pytest.raises(GradSUMError, match="batch_size=0"):
        predict(segmenter(ColourLogits(), (4, 6)), [np.zeros((4, 6, 3), np.uint8)], batch_size=0)


def test_a_frame_that_is_not_uint8_rgb_is_named() -> None:
    with pytest.raises(ShapeError, match=r"frames\[1\]"):
        predict(
            segmenter(ColourLogits(), (4, 6)), [np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6), np.uint8)]
        )
