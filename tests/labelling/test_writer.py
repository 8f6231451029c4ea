"""`label_frames`: hand-checkable labels and confidences from a colour segmenter, void below the threshold,
the written set read back, the two source layouts, targets carried or read from a CSV, unreadable frames."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from gradsum.errors import GradSUMError, TruthSetError
from gradsum.labelling.segmenter import Segmenter
from gradsum.labelling.segmenters import build_segmenter, load_segmenter
from gradsum.labelling.writer import label_frames
from gradsum.truthsets import open_truthset
from gradsum.truthsets.layout import MANIFEST, FrameId
from gradsum.truthsets.readers.pseudo import PseudoTruthSet
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate

ROAD, SKY = 7, 23
#: red values along a row, with what the colour segmenter makes of them at threshold 0.7 (worked out below)
REDS = np.array([0, 64, 128, 140, 200, 255], dtype=np.uint8)
#: logit(sky) − logit(road) = 8·R/255 − 4: −4, −1.99, 0.016, 0.39, 2.27, 4; confidence σ(|d|): 0.982,
#: 0.880, 0.504, 0.597, 0.907, 0.982; so 128 and 140 fall below 0.7 and become void
EXPECTED = np.array([ROAD, ROAD, 0, 0, SKY, SKY], dtype=np.uint8)


def colour_segmenter(size: tuple[int, int]) -> Segmenter:
    """Two channels (road, sky) whose logits differ by 8·R − 4 at each pixel (R in [0, 1])."""
    conv = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 0] = 8.0
        conv.bias.copy_(torch.tensor([0.0, -4.0]))
    card = {"metrics": {"miou": 0.625}}
    return Segmenter(conv, (ROAD, SKY), size, "colour", card)


def expected_confidence(red: np.ndarray) -> np.ndarray:
    """σ(|8·R/255 − 4|): the softmax probability of the chosen of two channels."""
    return 1.0 / (1.0 + np.exp(-np.abs(8.0 * red / 255.0 - 4.0)))


def frame_of(reds: np.ndarray, rows: int = 2, seed: int = 0) -> np.ndarray:
    """An RGB frame whose columns have the given red values (green and blue random: they do not count)."""
    image = np.random.default_rng(seed).integers(0, 256, (rows, len(reds), 3), dtype=np.uint8)
    image[..., 0] = reds
    return image


def save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    """A plain folder: two frames at the top and one in a subfolder."""
    source = tmp_path / "frames"
    save(source / "b.png", frame_of(REDS, seed=1))
    save(source / "a.png", frame_of(REDS[::-1], seed=2))
    save(source / "day one" / "c.png", frame_of(REDS, seed=3))
    return source


def test_labels_and_confidences_are_the_hand_computed_ones(frames: Path, tmp_path: Path) -> None:
    manifest = label_frames(frames, colour_segmenter((2, 6)), tmp_path / "out", threshold=0.7, progress=False)
    truthset = open_truthset(tmp_path / "out")
    assert isinstance(truthset, PseudoTruthSet)
    # frames sort by city (day-one before frames), then by the running index
    assert [truthset[i].meta["source"] for i in range(3)] == ["day one/c.png", "a.png", "b.png"]
    np.testing.assert_array_equal(truthset[1].labels, np.tile(EXPECTED[::-1], (2, 1)))
    np.testing.assert_array_equal(truthset[2].labels, np.tile(EXPECTED, (2, 1)))
    np.testing.assert_array_equal(truthset[2].image, frame_of(REDS, seed=1))
    stored = np.rint(expected_confidence(REDS.astype(np.float64)) * 255) / 255
    np.testing.assert_allclose(truthset.confidence(2), np.tile(stored, (2, 1)), atol=1e-7)
    # two of the six columns are below the threshold in every frame
    assert manifest.splits["test"].void_share == pytest.approx(2 / 6)
    assert manifest.segmenter.held_out == {"miou": 0.625}
    assert truthset.parameters["label_source"]["held_out_miou"] == 0.625
    assert (manifest.threshold, manifest.mode, manifest.skipped) == (0.7, "resize", {})


def test_threshold_zero_keeps_every_prediction(frames: Path, tmp_path: Path) -> None:
    label_frames(frames, colour_segmenter((2, 6)), tmp_path / "out", threshold=0.0, progress=False)
    labels = open_truthset(tmp_path / "out")[2].labels[0]
    # 128 and 140 lie just on the sky side (d = 0.016, 0.39)
    np.testing.assert_array_equal(labels, [ROAD, ROAD, SKY, SKY, SKY, SKY])


def test_slide_mode_on_a_larger_frame_is_pointwise_too(tmp_path: Path) -> None:
    # a 1×1 convolution sees each pixel alone, so windows averaged over overlaps give the same probabilities
    source = tmp_path / "big"
    save(source / "x.png", frame_of(np.tile(REDS, 3), rows=5))
    manifest = label_frames(
        source, colour_segmenter((2, 6)), tmp_path / "out", threshold=0.7, mode="slide", progress=False
    )
    np.testing.assert_array_equal(open_truthset(tmp_path / "out")[0].labels, np.tile(EXPECTED, (5, 3)))
    assert manifest.mode == "slide"


def test_plain_folders_name_frames_by_running_index_and_safe_subfolder(frames: Path, tmp_path: Path) -> None:
    save(frames / ".hidden" / "d.png", frame_of(REDS))
    (frames / "notes.txt").write_text("not a frame")
    manifest = label_frames(frames, colour_segmenter((2, 6)), tmp_path / "out", split="val", progress=False)
    assert list(manifest.splits) == ["val"]
    records = manifest.splits["val"].frames
    assert {stem: r.source for stem, r in records.items()} == {
        "frames_000000_000000": "a.png",
        "frames_000001_000000": "b.png",
        "day-one_000002_000000": "day one/c.png",
    }
    assert FrameId("val", "day-one", 2, 0).image(tmp_path / "out").is_file()
    written = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert written["kind"] == "pseudo" and written["source"] == str(frames.resolve())


def test_a_synthetic_source_without_labels_hands_over_its_targets(tmp_path: Path) -> None:
    source = generate(tmp_path / "synthetic", count=10, seed=0, size=(32, 64))
    exact = {split: SyntheticTruthSet(source, split) for split in ("train", "test")}
    shutil.rmtree(source / "gtFine")
    label_frames(source, colour_segmenter((32, 64)), tmp_path / "out", threshold=0.7, progress=False)
    for split, original in exact.items():
        pseudo = open_truthset(tmp_path / "out", split)
        assert len(pseudo) == len(original) and pseudo.tasks == original.tasks
        for task in original.tasks:
            np.testing.assert_array_equal(pseudo.targets(task), original.targets(task))
        np.testing.assert_array_equal(pseudo.image(0), original.image(0))
        assert (
            original.frame(0).vehicle(tmp_path / "out").read_bytes()
            == original.frame(0).vehicle(source).read_bytes()
        )
        red = original.image(0)[..., 0].astype(np.float64)
        predicted = np.where(red * 8 / 255 - 4 > 0, SKY, ROAD)
        expected = np.where(expected_confidence(red) < 0.7, 0, predicted)
        np.testing.assert_array_equal(pseudo.label_map(0), expected)


def test_unreadable_frames_are_named_in_one_error_and_nothing_is_written(
    frames: Path, tmp_path: Path
) -> None:
    for name in ("b.png", "day one/c.png"):
        data = (frames / name).read_bytes()
        (frames / name).write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(TruthSetError, match="2 frame\\(s\\) cannot be read") as error:
        label_frames(frames, colour_segmenter((2, 6)), out, progress=False)
    assert str(frames / "b.png") in str(error.value) and str(frames / "day one" / "c.png") in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_skipping_unreadable_frames_lists_them(
    frames: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (frames / "b.png").write_bytes((frames / "b.png").read_bytes()[:40])
    with caplog.at_level(logging.WARNING):
        manifest = label_frames(
            frames, colour_segmenter((2, 6)), tmp_path / "out", skip_unreadable=True, progress=False
        )
    assert list(manifest.skipped) == ["b.png"] and str(frames / "b.png") in manifest.skipped["b.png"]
    assert manifest.splits["test"].count == 2
    assert "b.png" in caplog.text
    assert [open_truthset(tmp_path / "out")[i].meta["source"] for i in range(2)] == ["day one/c.png", "a.png"]


def test_targets_from_a_csv_by_path_or_stem(frames: Path, tmp_path: Path) -> None:
    table = tmp_path / "targets.csv"
    table.write_text("image,steering,obstacle\na.png,0.5,1\nb,-0.25,0\nday one/c.png,0,1\n")
    label_frames(frames, colour_segmenter((2, 6)), tmp_path / "out", targets=table, progress=False)
    truthset = open_truthset(tmp_path / "out")
    assert truthset.tasks == ("steering", "obstacle")
    # in the set's order: day one/c.png, a.png, b.png
    np.testing.assert_array_equal(truthset.targets("steering"), [0.0, 0.5, -0.25])
    np.testing.assert_array_equal(truthset.targets("obstacle"), [1.0, 1.0, 0.0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image,speed\na.png,1\n", "column 'speed' is not a task; valid: steering, obstacle"),
        ("frame,steering\na.png,1\n", "no column 'image'"),
        ("image,steering\na.png,1\nz.png,2\n", "row 3: image 'z.png' is not a frame"),
        ("image,steering\na.png,1\na,2\n", "row 3: image 'a' is named twice"),
        ("image,steering\na.png,x\n", "row 2, column 'steering': 'x' is not a finite number"),
        ("image,steering\na.png,1\nb.png,2\n", "no row for 1 frame\\(s\\), e.g. day one/c.png"),
    ],
)
def test_a_bad_targets_csv_is_refused_naming_it(
    frames: Path, tmp_path: Path, text: str, message: str
) -> None:
    table = tmp_path / "targets.csv"
    table.write_text(text)
    with pytest.raises(TruthSetError, match=message) as error:
        label_frames(frames, colour_segmenter((2, 6)), tmp_path / "out", targets=table, progress=False)
    assert str(error.value).startswith(str(table))
    assert not (tmp_path / "out").exists()


def test_an_existing_set_is_replaced_only_when_asked(frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    label_frames(frames, colour_segmenter((2, 6)), out, threshold=0.7, progress=False)
    with pytest.raises(TruthSetError, match="already exists"):
        label_frames(frames, colour_segmenter((2, 6)), out, progress=False)
    label_frames(frames, colour_segmenter((2, 6)), out, threshold=0.0, overwrite=True, progress=False)
    assert open_truthset(out).parameters["label_source"]["threshold"] == 0.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 1.5}, "--threshold"),
        ({"mode": "tile"}, "--mode.*valid: resize, slide"),
        ({"batch_size": 0}, "--batch-size"),
        ({"split": "val", "source": "cityscapes"}, "no split 'val' \\(--split\\); valid: test"),
    ],
)
def test_bad_options_are_refused_naming_them(
    frames: Path, tmp_path: Path, options: dict, message: str
) -> None:
    source = frames
    if options.pop("source", None):
        source = tmp_path / "cityscapes"
        save(FrameId("test", "x", 0, 0).image(source), frame_of(REDS))
    with pytest.raises(GradSUMError, match=message):
        label_frames(source, colour_segmenter((2, 6)), tmp_path / "out", progress=False, **options)


def test_a_user_checkpoint_is_recorded_by_the_sha256_of_its_weights(frames: Path, tmp_path: Path) -> None:
    net = build_segmenter("lraspp_mobilenet_v3_large", (ROAD, SKY), (32, 64)).module.net
    weights = tmp_path / "user" / "weights.safetensors"
    weights.parent.mkdir()
    safetensors.torch.save_file(net.state_dict(), weights)
    spec = tmp_path / "user" / "segmenter.yaml"
    spec.write_text(
        "architecture: lraspp_mobilenet_v3_large\nweights: weights.safetensors\n"
        "classes: [road, sky]\ninput_size: [32, 64]\n"
    )
    manifest = label_frames(
        frames, load_segmenter(spec), tmp_path / "out", segmenter_path=spec, progress=False
    )
    assert manifest.segmenter.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (manifest.segmenter.path, manifest.segmenter.classes) == (str(spec.resolve()), [ROAD, SKY])
    assert manifest.segmenter.held_out == {}
