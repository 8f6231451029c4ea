"""One input transform: what training stores is what the pipeline and evaluation feed the models."""

from __future__ import annotations

from pathlib import Path

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


def test_a_full_resolution_cityscapes_frame_becomes_the_same_input_at_every_entry_point(
    tmp_path: Path,
) -> None:
    """Training's preload, the pipeline's profiler (profile and run), `attribute` and the trust checks."""
    from PIL import Image

    from gradsum.evaluation.base import EvaluationContext
    from gradsum.models.loaded import LoadedModel
    from gradsum.models.training import preload
    from gradsum.pipeline.stream import FrameStream
    from gradsum.truthsets import open_truthset

    rng = np.random.default_rng(3)
    for stem, folder, array in (
        ("leftImg8bit", "leftImg8bit", rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8)),
        ("gtFine_labelIds", "gtFine", np.full((1024, 2048), 7, np.uint8)),
    ):
        path = tmp_path / folder / "val" / "aachen" / f"aachen_000000_000019_{stem}.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(array).save(path)
    (tmp_path / "vehicle" / "val" / "aachen").mkdir(parents=True)
    (tmp_path / "vehicle" / "val" / "aachen" / "aachen_000000_000019_vehicle.json").write_text(
        '{"speed": 10.0, "yawRate": 0.1}'
    )
    truthset = open_truthset(tmp_path, "val")
    size = (96, 192)
    reference = model_input([truthset[0].image], size)

    trained = to_input(preload(truthset, "steering", size).images, "cpu")
    (streamed,) = FrameStream(truthset, [range(1)], batch_size=1)
    model = LoadedModel("m", torch.nn.Identity(), {}, "steering", size)
    context = EvaluationContext(
        truthset=truthset, indices=range(1), models=[model], plan={}, targets={}, device="cpu"
    )
    checked = context.model_input(model, [truthset[0].image])
    for batch in (trained, model_input(streamed.images, size), checked):
        assert torch.equal(batch, reference)
