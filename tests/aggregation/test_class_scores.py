from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradsum.aggregation import class_fractions, class_scores, per_image_frame, prepare_labels
from gradsum.errors import GradSUMError
from gradsum.truthsets.labels import CITYSCAPES, NUM_CITYSCAPES_IDS, ignored_cityscapes_ids

IGNORED = set(ignored_cityscapes_ids())


def _reference(maps: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The naive per-class masking loop, with maps already at the label resolution."""
    batch = maps.shape[0]
    out = {
        k: np.full((batch, NUM_CITYSCAPES_IDS), np.nan) for k in ("score", "mass_share", "area_share", "lift")
    }
    for i in range(batch):
        valid = ~np.isin(labels[i], sorted(IGNORED))
        total_mass, total_area = maps[i][valid].sum(), valid.sum()
        for c in range(NUM_CITYSCAPES_IDS):
            mask = labels[i] == c
            if c in IGNORED or not mask.any():
                continue
            out["score"][i, c] = maps[i][mask].sum() / mask.sum()
            out["mass_share"][i, c] = maps[i][mask].sum() / total_mass
            out["area_share"][i, c] = mask.sum() / total_area
            out["lift"][i, c] = out["mass_share"][i, c] / out["area_share"][i, c]
    return out


def _nearest_centre(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = ((np.arange(shape[0]) + 0.5) * maps.shape[1] / shape[0]).astype(int)
    cols = ((np.arange(shape[1]) + 0.5) * maps.shape[2] / shape[1]).astype(int)
    return maps[:, rows][:, :, cols]


def _upsampled(maps: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """The maps upsampled bilinearly (align_corners=False) in float64."""
    return F.interpolate(maps[:, None].double(), size=shape, mode="bilinear", align_corners=False)[
        :, 0
    ].numpy()


def _random(
    batch: int, grid: tuple[int, int], shape: tuple[int, int], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    maps = torch.rand(batch, *grid, generator=generator)
    # 20 of the 34 ids per image, so some classes are absent
    labels = torch.randint(0, 20, (batch, *shape), generator=generator) + torch.randint(0, 15, (batch, 1, 1))
    return maps, labels


def _assert_matches(scores: object, expected: dict[str, np.ndarray]) -> None:
    for name, values in expected.items():
        np.testing.assert_allclose(getattr(scores, name).numpy(), values, rtol=1e-9, atol=1e-12, err_msg=name)


def test_label_resolution_equals_naive_loop() -> None:
    maps, labels = _random(3, (8, 16), (32, 48), seed=1)
    scores = class_scores(maps, labels)
    _assert_matches(scores, _reference(_upsampled(maps, (32, 48)), labels.numpy()))
    assert scores.resolution == "label"


def test_same_size_needs_no_resampling() -> None:
    maps, labels = _random(2, (12, 20), (12, 20), seed=2)
    _assert_matches(class_scores(maps, labels), _reference(maps.double().numpy(), labels.numpy()))


@pytest.mark.parametrize(("grid", "shape"), [((4, 8), (32, 64)), ((5, 7), (23, 30))])
def test_grid_resolution_equals_naive_loop(grid: tuple[int, int], shape: tuple[int, int]) -> None:
    maps, labels = _random(3, grid, shape, seed=3)
    scores = class_scores(maps, labels, resolution="grid")
    reference = _reference(_nearest_centre(maps.double().numpy(), shape), labels.numpy())
    _assert_matches(scores, reference)
    assert scores.pixels.sum().item() == 3 * shape[0] * shape[1]


def test_class_fractions_sum_to_one_and_match_block_counts() -> None:
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2, :2] = 7
    labels[0, 0, 0] = 26
    fractions = class_fractions(labels, (2, 2))
    torch.testing.assert_close(fractions.sum(dim=1), torch.ones(1, 2, 2, dtype=torch.float64))
    assert fractions[0, 7, 0, 0].item() == 0.75
    assert fractions[0, 26, 0, 0].item() == 0.25
    assert fractions[0, 0, 1, 1].item() == 1.0


def test_absent_and_ignored_classes_are_nan_and_have_no_rows() -> None:
    labels = torch.full((2, 8, 8), 7)
    labels[:, :2] = 0  # unlabeled: ignored
    labels[1, 4:] = 26
    scores = class_scores(torch.rand(2, 8, 8), labels)
    assert scores.present.sum(dim=1).tolist() == [1, 2]
    assert torch.isnan(scores.score[0, 26]) and torch.isnan(scores.score[:, 0]).all()
    frame = per_image_frame(scores, ["a", "b"], "cnn", "gradcam")
    assert list(zip(frame["image"], frame["class"], strict=True)) == [
        ("a", "road"),
        ("b", "road"),
        ("b", "car"),
    ]
    assert frame["pixels"].tolist() == [48, 16, 32]
    assert not IGNORED & set(frame["class_id"])


def test_grid_path_agrees_with_label_path_on_a_constant_map() -> None:
    _, labels = _random(2, (4, 8), (36, 50), seed=4)
    maps = torch.full((2, 4, 8), 0.3)
    label_path, grid_path = class_scores(maps, labels), class_scores(maps, labels, resolution="grid")
    for name in ("score", "mass_share", "area_share", "lift"):
        torch.testing.assert_close(getattr(label_path, name), getattr(grid_path, name), equal_nan=True)
    torch.testing.assert_close(label_path.pixels, grid_path.pixels)


@pytest.mark.parametrize("resolution", ["label", "grid"])
def test_mass_shares_sum_to_one_and_uniform_map_has_lift_one(resolution: str) -> None:
    maps, labels = _random(4, (6, 10), (24, 40), seed=5)
    scores = class_scores(maps, labels, resolution=resolution)
    torch.testing.assert_close(scores.mass_share.nansum(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(scores.area_share.nansum(dim=1), torch.ones(4, dtype=torch.float64))
    uniform = class_scores(torch.ones(4, 6, 10), labels, resolution=resolution)
    lifts = uniform.lift[uniform.present]
    torch.testing.assert_close(lifts, torch.ones_like(lifts))


def test_per_image_frame_names_classes_from_cityscapes() -> None:
    maps, labels = _random(2, (4, 4), (8, 8), seed=6)
    frame = per_image_frame(class_scores(maps, labels), ["x", "y"], "vit", "rollout")
    assert (frame["class"] == [CITYSCAPES.by_id[c].name for c in frame["class_id"]]).all()
    assert set(frame["model"]) == {"vit"} and set(frame["method"]) == {"rollout"}


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (torch.full((1, 4, 4), 40), {}, "labels: ids must lie in 0..33"),
        (torch.zeros(1, 4, 4), {}, "integer"),
        (torch.zeros(2, 4, 4, dtype=torch.long), {}, "labels has 2"),
        (torch.zeros(1, 4, 4, dtype=torch.long), {"resolution": "pixel"}, "resolution"),
    ],
)
def test_bad_inputs_name_the_argument(labels: torch.Tensor, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(GradSUMError, match=message):
        class_scores(torch.rand(1, 4, 4), labels, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("resolution", ["label", "grid"])
def test_prepared_labels_give_the_same_scores(resolution: str) -> None:
    maps, labels = _random(3, (6, 9), (30, 40), seed=7)
    direct = class_scores(maps, labels, resolution=resolution)
    prepared = prepare_labels(labels, (6, 9), resolution=resolution)
    again = class_scores(maps, prepared)
    assert again.resolution == resolution
    torch.testing.assert_close(again.pixels, direct.pixels)
    for name in ("score", "mass_share", "lift"):
        torch.testing.assert_close(
            getattr(again, name), getattr(direct, name), equal_nan=True, rtol=1e-6, atol=1e-9
        )
    with pytest.raises(GradSUMError, match="maps: shape"):
        class_scores(torch.rand(3, 5, 9), prepared)
    with pytest.raises(GradSUMError, match="resolution"):
        class_scores(maps, prepared, resolution="grid" if resolution == "label" else "label")


@pytest.mark.parametrize(
    ("grid", "shape"),
    [
        ((5, 7), (23, 31)),  # non-integer scale, every moment in one float64 word
        ((2, 3), (97, 211)),  # bins so wide the moments need two words
        ((8, 8), (4, 5)),  # labels coarser than the maps
    ],
)
def test_prepared_label_weights_equal_the_upsampled_maps(
    grid: tuple[int, int], shape: tuple[int, int]
) -> None:
    maps, labels = _random(2, grid, shape, seed=8)
    scores = class_scores(maps, prepare_labels(labels.to(torch.uint8), grid))
    _assert_matches(scores, _reference(_upsampled(maps, shape), labels.numpy()))
