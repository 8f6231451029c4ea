"""One input transform: what training stores is what the pipeline and evaluation feed the models."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gradsum.models.inputs import model_input, resize_uint8
from gradsum.models.training import to_input


def test_frames_of_the_model_size_pass_through_unchanged() -> None:
    frame = np.random.default_rng(0).integers(0, 256, size=(8, 16, 3), dtype=np.uint8)
    batch = model_input([frame, frame[::-1].copy()], (8, 16))
    assert batch.shape == (2, 3, 8, 16) and batch.is_contiguous()
    assert torch.equal(batch[0], torch.from_numpy(frame).permute(2, 0, 1).float() / 255)


def test_resizing_is_antialiased_bilinear_rounded_to_uint8_as_training_stores_it() -> None:
    frame = np.random.default_rng(1).integers(0, 256, size=(32, 64, 3), dtype=np.uint8)
    stored = resize_uint8(torch.from_numpy(frame).permute(2, 0, 1)[None], (8, 16))
    expected = F.interpolate(
        torch.from_numpy(frame).permute(2, 0, 1)[None].float(), size=(8, 16), mode="bilinear", antialias=True
    )
    assert torch.equal(stored, expected.round().clamp(0, 255).to(torch.uint8))
    # training scales its stored uint8 images with to_input: the same tensor the pipeline builds
    assert torch.equal(model_input([frame], (8, 16)), to_input(stored, "cpu"))


def test_frames_of_different_sizes_batch_together() -> None:
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, size=size, dtype=np.uint8) for size in [(375, 1242, 3), (370, 1224, 3)]]
    batch = model_input(frames, (96, 192))
    assert batch.shape == (2, 3, 96, 192)
    assert torch.equal(batch[1:], model_input(frames[1:], (96, 192)))
