"""The difficulty ladder's rendering knobs: labels exact at every level, level 0 the renderer, each knob
doing what it says, and the `--difficulty` plumbing through `generate` and the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from ground_oracle import ground_xz
from PIL import Image
from scipy import ndimage

from gradsum.cli import main
from gradsum.errors import GradSUMError, UnknownNameError
from gradsum.truthsets import open_truthset
from gradsum.truthsets.layout import MANIFEST
from gradsum.truthsets.synthetic import KNOBS, Difficulty, generate, parse_difficulty, render, sample_scene
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.ladder import (
    FOG_COLOUR,
    JPEG_QUALITY,
    MAX_LEVEL,
    SHADOWED,
    Frame,
    Sun,
    blur,
    cast_shadows,
    depth_map,
    draw_sun,
    dusk,
    fog,
    jpeg,
    knob_rng,
    rain,
    shadow_bands,
    vignette,
)
from gradsum.truthsets.synthetic.render import IDS, Rendered, instance_ids

SIZE = (64, 128)
SEEDS = (0, 1, 2, 3)
#: the knobs that change the drawn image alone (the scene knobs, occlusion and clutter, are tested in
#: test_ladder_scene.py)
IMAGE_KNOBS = [name for name in KNOBS.names() if KNOBS.get(name).apply is not None]


def _scene(seed: int) -> Rendered:
    return render(sample_scene(np.random.default_rng(seed), SIZE, 0.0))


def _frame(rendered: Rendered) -> Frame:
    return Frame(rendered.labels, depth_map(rendered), rendered.params)


def _high_frequency(image: np.ndarray) -> float:
    grey = image.astype(np.float64).mean(axis=2)
    return float((ndimage.laplace(grey) ** 2).mean())


@pytest.mark.parametrize("knob", IMAGE_KNOBS)
def test_labels_exact_and_image_changed_at_every_level(knob: str) -> None:
    for seed in SEEDS:
        clean = _scene(seed)
        for level in range(MAX_LEVEL + 1):
            hard = Difficulty.of({knob: level}).apply(_scene(seed))
            np.testing.assert_array_equal(hard.labels, clean.labels)
            np.testing.assert_array_equal(hard.instances, clean.instances)
            assert hard.targets == clean.targets
            assert hard.image.dtype == np.uint8 and hard.image.shape == clean.image.shape
            # level 0 is the renderer bit for bit; every higher level changes the image
            assert np.array_equal(hard.image, clean.image) == (level == 0)


def test_clean_difficulty_is_the_renderer_itself() -> None:
    clean = _scene(5)
    zeros = Difficulty.of(dict.fromkeys(KNOBS.names(), 0))
    assert zeros == Difficulty() and zeros.clean
    assert zeros.apply(clean) is clean
    assert zeros.to_dict() == {"camera": 0, "clutter": 0, "occlusion": 0, "shadows": 0, "weather": 0}


def test_same_scene_same_image_and_each_knob_its_own_stream() -> None:
    difficulty = Difficulty.of({"shadows": 3, "weather": 2, "camera": 1})
    np.testing.assert_array_equal(difficulty.apply(_scene(7)).image, difficulty.apply(_scene(7)).image)
    params = _scene(7).params
    assert knob_rng(params, "weather").random() == knob_rng(params, "weather").random()
    assert knob_rng(params, "weather").random() != knob_rng(params, "shadows").random()


def test_knobs_run_in_stage_order_whatever_the_order_given() -> None:
    rendered = _scene(2)
    frame = _frame(rendered)
    shaded = KNOBS.get("shadows").apply(rendered.image, frame, 2, knob_rng(rendered.params, "shadows"))
    expected = KNOBS.get("camera").apply(shaded, frame, 1, knob_rng(rendered.params, "camera"))
    for levels in ({"camera": 1, "shadows": 2}, {"shadows": 2, "camera": 1}):
        np.testing.assert_array_equal(Difficulty.of(levels).apply(rendered).image, expected)


def test_shadows_darken_only_road_and_sidewalk() -> None:
    street_ids = [IDS[name] for name in SHADOWED]
    darkened = 0
    for seed in SEEDS:
        clean = _scene(seed)
        hard = Difficulty.of({"shadows": 3}).apply(_scene(seed)).image.astype(int)
        changed = (hard != clean.image).any(axis=2)
        assert not (changed & ~np.isin(clean.labels, street_ids)).any()
        assert (hard <= clean.image).all()
        darkened += int(changed.sum())
    # three bands of shade on four scenes cover a good share of the street, not a stray pixel
    assert darkened > 0.05 * sum(np.isin(_scene(s).labels, street_ids).sum() for s in SEEDS)


def test_more_shadow_per_level() -> None:
    clean = _scene(4).image.astype(int)
    loss = [
        clean.sum() - Difficulty.of({"shadows": lv}).apply(_scene(4)).image.astype(int).sum()
        for lv in (1, 2, 3)
    ]
    assert 0 < loss[0] < loss[1] < loss[2]


def test_fog_grows_with_depth_by_its_formula() -> None:
    rendered = _scene(1)
    depth = depth_map(rendered)
    foggy = fog(rendered.image, depth, visibility=40.0, ceiling=0.8)
    # the share of the way to the fog colour each pixel moved, against the hand formula
    gap = rendered.image.astype(np.float64) - FOG_COLOUR
    valid = np.abs(gap) > 20
    moved = 1.0 - (foggy - FOG_COLOUR) / np.where(valid, gap, 1.0)
    expected = np.broadcast_to((0.8 * (1.0 - np.exp(-depth / 40.0)))[..., None], moved.shape)
    np.testing.assert_allclose(moved[valid], expected[valid], atol=1e-9)
    ground = np.isfinite(depth) & (rendered.labels == IDS["road"])
    near, far = ground & (depth < 4.0), ground & (depth > 12.0)
    assert near.any() and far.any()
    assert expected[..., 0][far].min() > expected[..., 0][near].max()
    assert np.allclose(expected[..., 0][rendered.labels == IDS["sky"]], 0.8)  # the sky is infinitely far


def test_depth_map_is_the_ground_plane_and_the_objects_own_distance() -> None:
    rendered = _scene(3)
    depth = depth_map(rendered)
    h, w = SIZE
    row = h - 1  # the bottom row's centre lies (h − 0.5 − horizon) px below the horizon
    assert depth[row, 0] == pytest.approx(0.5 * w * 1.5 / (row + 0.5 - 0.42 * h))
    assert np.isinf(depth[rendered.labels == IDS["sky"]]).all()
    for obj, instance in zip(rendered.params.objects, instance_ids(rendered.params), strict=True):
        assert (depth[rendered.instances == instance] == obj.z).all()
    upright = np.isin(rendered.labels, [IDS["pole"], IDS["traffic sign"]])
    assert upright.any()
    assert set(np.unique(depth[upright])) <= {pole.z for pole in rendered.params.poles}


def test_rain_streaks_lighten_a_few_short_slanted_lines() -> None:
    flat = np.full((64, 128, 3), 100, dtype=np.uint8)
    wet = rain(flat, count=5, rng=np.random.default_rng(0))
    changed = (wet != 100).any(axis=2)
    # a streak pixel keeps 60 % of itself and takes 40 % of a light grey (220): 100 → 148, once or twice
    assert set(np.unique(wet[changed])) <= {148.0, 0.6 * 148.0 + 88.0}
    assert 5 <= changed.sum() <= 5 * (64 // 8)
    rows, cols = np.nonzero(changed)
    assert np.ptp(cols) > 0 and np.ptp(rows) > 0


def test_dusk_darkens_and_adds_noise_of_its_sigma() -> None:
    clean = _scene(6)
    hard = Difficulty.of({"weather": 3}).apply(_scene(6)).image
    assert hard.mean() < 0.85 * clean.image.mean()
    flat = np.full((200, 200, 3), 100, dtype=np.uint8)
    dark = dusk(flat, gain=0.5, noise=4.0, rng=np.random.default_rng(0))
    assert dark.mean() == pytest.approx(50.0, abs=0.1)
    assert dark.std() == pytest.approx(4.0, rel=0.03)


def test_blur_lowers_high_frequency_energy_and_keeps_the_mean() -> None:
    clean = _scene(8)
    hard = Difficulty.of({"camera": 3}).apply(_scene(8)).image
    assert _high_frequency(hard) < 0.5 * _high_frequency(clean.image)
    blurred = blur(clean.image, sigma=1.2)
    assert _high_frequency(blurred) < 0.5 * _high_frequency(clean.image)
    np.testing.assert_allclose(blurred.mean(axis=(0, 1)), clean.image.mean(axis=(0, 1)), rtol=1e-6)


def test_vignette_by_hand() -> None:
    flat = np.full((4, 8, 3), 200, dtype=np.uint8)
    out = vignette(flat, strength=0.4)
    # corner pixel centre: ry = (0.5 − 2)/2 = −0.75, rx = (0.5 − 4)/4 = −0.875; r² = (0.5625 + 0.765625)/2
    assert out[0, 0, 0] == pytest.approx(200 * (1 - 0.4 * (0.5625 + 0.765625) / 2))
    assert out[1, 3, 0] == pytest.approx(200 * (1 - 0.4 * (0.0625 + 0.015625) / 2))
    assert out[0, 0, 1] == out[3, 7, 2] < out[1, 3, 0] < 200


def test_jpeg_is_pillows_round_trip_at_the_levels_quality() -> None:
    clean = _scene(9)
    for level, quality in JPEG_QUALITY.items():
        buffer = io.BytesIO()
        Image.fromarray(clean.image).save(buffer, format="JPEG", quality=quality)
        expected = np.asarray(Image.open(buffer))
        np.testing.assert_array_equal(jpeg(clean.image, quality), expected)
        assert not np.array_equal(expected, clean.image), level
    # camera level 3: blur σ 1.2, vignetting 0.45, rounded to uint8, then that round trip at quality 25
    lens = np.clip(np.floor(vignette(blur(clean.image, 1.2), 0.45) + 0.5), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(lens).save(buffer, format="JPEG", quality=25)
    hard = Difficulty.of({"camera": 3}).apply(_scene(9)).image
    np.testing.assert_array_equal(hard, np.asarray(Image.open(buffer)))
    assert not np.array_equal(hard, lens)


def test_bad_difficulty_is_refused_naming_the_knobs_and_levels() -> None:
    with pytest.raises(UnknownNameError, match="valid: camera, clutter, occlusion, shadows, weather"):
        Difficulty.of({"fog": 1})
    for level in (-1, 4, 1.5, True):
        with pytest.raises(GradSUMError, match=r"level must be an integer 0\.\.3 \(--difficulty\)"):
            Difficulty.of({"camera": level})  # type: ignore[dict-item]
    assert parse_difficulty(["shadows=2", "camera=1"]) == Difficulty.of({"camera": 1, "shadows": 2})
    for text in ("shadows", "shadows=two", "=1"):
        with pytest.raises(GradSUMError, match="--difficulty"):
            parse_difficulty([text])


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern))}


def test_generate_records_the_difficulty_and_keeps_the_labels(tmp_path: Path) -> None:
    clean = generate(tmp_path / "clean", count=3, size=(32, 64), seed=4)
    zeros = generate(tmp_path / "zeros", count=3, size=(32, 64), seed=4, difficulty={"weather": 0})
    hard = generate(tmp_path / "hard", count=3, size=(32, 64), seed=4, difficulty={"shadows": 2, "camera": 3})
    assert _files(zeros, "*.png") == _files(clean, "*.png")
    assert _files(hard, "*gtFine*.png") == _files(clean, "*gtFine*.png")
    assert _files(hard, "*.json").keys() == _files(clean, "*.json").keys()
    assert _files(hard, "*_scene.json") == _files(clean, "*_scene.json")
    images = _files(hard, "*leftImg8bit.png")
    assert all(images[name] != data for name, data in _files(clean, "*leftImg8bit.png").items())
    parameters = json.loads((hard / MANIFEST).read_text())["parameters"]
    assert parameters["difficulty"] == {"camera": 3, "clutter": 0, "occlusion": 0, "shadows": 2, "weather": 0}
    # a clean set's manifest is the one sets had before the ladder: absent means clean
    assert _files(zeros, "*.json") == _files(clean, "*.json")
    assert "difficulty" not in json.loads((clean / MANIFEST).read_text())["parameters"]


def test_a_harder_sets_re_renders_go_through_its_knobs(tmp_path: Path) -> None:
    # a counterfactual that changes nothing is the stored frame, as it is for a clean set
    hard = generate(
        tmp_path / "hard", count=10, size=(32, 64), seed=4, difficulty={"weather": 2, "camera": 3}
    )
    split = open_truthset(hard, "train")
    stored = split[0]
    np.testing.assert_array_equal(split.counterfactual(0).image, stored.image)
    clean = open_truthset(generate(tmp_path / "clean", count=10, size=(32, 64), seed=4), "train")
    assert not np.array_equal(clean.counterfactual(0).image, stored.image)


def test_cli_difficulty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    args = ["generate", "--out", str(out), "--count", "3", "--size", "32x64"]
    assert main([*args, "--difficulty", "shadows=2", "--difficulty", "camera=1"]) == 0
    assert json.loads((out / MANIFEST).read_text())["parameters"]["difficulty"] == {
        "camera": 1,
        "clutter": 0,
        "occlusion": 0,
        "shadows": 2,
        "weather": 0,
    }
    capsys.readouterr()
    for value, named in (
        ("fog=1", "valid: camera, clutter, occlusion, shadows, weather"),
        ("shadows=4", "--difficulty"),
        ("camera", "--difficulty"),
    ):
        assert main([*args, "--overwrite", "--difficulty", value]) == 2
        err = capsys.readouterr().err
        assert named in err and err.count("\n") == 1


def test_cast_shadow_polygon_by_hand() -> None:
    # a straight centred road, one car in the oncoming lane 8 m ahead, the sun 45° high on the left: the
    # car's 1.8 × 4.2 m footprint swept 1.5 m (its height / tan 45°) to the right covers x ∈ [−4.4, −1.1],
    # z ∈ [8, 12.2]
    base = sample_scene(np.random.default_rng(0), SIZE, 0.0)
    car = sc.SceneObject("car", 8.0, -3.5, 1.8, 1.5, (200, 0, 0))
    params = base.replace(curvature=0.0, heading=0.0, offset=0.0, objects=(car,), poles=())
    rendered = render(params)
    shaded = cast_shadows(_frame(rendered), Sun(azimuth=np.pi / 2, elevation=np.pi / 4))
    x, z = ground_xz(SIZE)
    street = np.isin(rendered.labels, [IDS[name] for name in SHADOWED])
    expected = (x >= -4.4) & (x <= -1.1 + 1e-9) & (z >= 8.0) & (z <= 12.2) & street
    assert expected.sum() > 20
    np.testing.assert_array_equal(shaded, expected)


def test_cast_shadows_darken_by_the_levels_factor_inside_only() -> None:
    cast_pixels = 0
    for seed in range(8):
        clean = _scene(seed)
        frame = _frame(clean)
        for level in (1, 3):
            darkness = 0.15 + 0.12 * level
            rng = knob_rng(clean.params, "shadows")
            bands = shadow_bands(frame, count=level, darkness=darkness, rng=rng)
            cast = cast_shadows(frame, draw_sun(rng))
            hard = Difficulty.of({"shadows": level}).apply(_scene(seed)).image
            image = clean.image.astype(np.float64)
            # inside a cast shadow: exactly the level's factor, rounded half up; in no shadow: untouched
            np.testing.assert_array_equal(hard[cast], np.floor(image[cast] * (1 - darkness) + 0.5))
            sunlit = ~cast & (bands == 1.0)
            np.testing.assert_array_equal(hard[sunlit], clean.image[sunlit])
            assert not (cast & ~np.isin(clean.labels, [IDS[n] for n in SHADOWED])).any()
            cast_pixels += int(cast.sum())
    # thin poles and cars at 64×128 throw small shadows, but eight scenes at two suns hold a few hundred
    assert cast_pixels > 150
