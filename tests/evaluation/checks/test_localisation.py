from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from types import ModuleType

import numpy as np
import pytest
from torch import Tensor, nn

from gradsum.evaluation.base import CHANCE, CHECKS, EvaluationContext, PlannedMethod
from gradsum.evaluation.checks.localisation import LocalisationCheck
from gradsum.evaluation.mask_metrics import mass_accuracy, pointing_game, rank_accuracy
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets.base import ArrayTruthSet, CauseDeclaration

SIZE = (12, 16)
#: per image: the cause rectangle (rows, cols), or None for an image without a cause
RECTANGLES = ((slice(0, 4), slice(0, 8)), (slice(2, 10), slice(4, 7)), (slice(5, 12), slice(9, 16)), None)


@pytest.fixture(scope="module")
def quantus() -> ModuleType:
    try:
        return importlib.import_module("quantus")
    except ImportError as error:  # a declared test dependency: a missing oracle is a broken setup
        pytest.fail(f"quantus 0.6 (the localisation oracle, installed by `make setup`) is missing: {error}")


def _samples(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    maps = rng.standard_normal((8, *SIZE))
    masks = rng.random((8, *SIZE)) < rng.uniform(0.05, 0.6, size=(8, 1, 1))
    masks[:, 0, 0] = True  # never empty
    return maps, masks


def _quantus_scores(
    quantus: ModuleType, metric: str, maps: np.ndarray, masks: np.ndarray, **settings: bool
) -> np.ndarray:
    batch = maps.shape[0]
    x_batch = np.random.default_rng(0).random((batch, 3, *SIZE)).astype(np.float32)
    instance = getattr(quantus, metric)(disable_warnings=True, **settings)
    scores = instance(
        model=None,
        x_batch=x_batch,
        y_batch=np.zeros(batch, dtype=int),
        a_batch=maps[:, None].astype(np.float32),
        s_batch=masks[:, None].astype(np.float32),
    )
    return np.asarray(scores, dtype=np.float64)


def test_signed_maps_match_quantus_with_the_map_clipped_for_mass(quantus: ModuleType) -> None:
    maps, masks = _samples(0)
    # our mass is that of the non-negative part; Quantus sums what it is given
    expected_mass = _quantus_scores(
        quantus, "RelevanceMassAccuracy", np.clip(maps, 0, None), masks, normalise=False, abs=False
    )
    np.testing.assert_allclose(mass_accuracy(maps, masks), expected_mass, rtol=1e-5)
    for ours, metric in ((rank_accuracy, "RelevanceRankAccuracy"), (pointing_game, "PointingGame")):
        expected = _quantus_scores(quantus, metric, maps, masks, normalise=False, abs=False)
        np.testing.assert_allclose(ours(maps, masks), expected, rtol=1e-6)


def test_non_negative_maps_match_quantus_defaults(quantus: ModuleType) -> None:
    maps, masks = _samples(1)
    maps = np.abs(maps)
    # Quantus' default max-normalisation scales each map, which changes none of the three figures
    for ours, metric in (
        (mass_accuracy, "RelevanceMassAccuracy"),
        (rank_accuracy, "RelevanceRankAccuracy"),
        (pointing_game, "PointingGame"),
    ):
        np.testing.assert_allclose(
            ours(maps, masks), _quantus_scores(quantus, metric, maps, masks), rtol=1e-5
        )


def test_hand_computed_cases() -> None:
    mask = np.zeros((1, 3, 4), dtype=bool)
    mask[0, :2, :2] = True
    # the map is the mask: all mass inside, the top 4 pixels are the mask, the maximum is inside
    exact = mask.astype(np.float64)
    assert (mass_accuracy(exact, mask), rank_accuracy(exact, mask), pointing_game(exact, mask)) == (1, 1, 1)
    # a constant map scores the area share (4 of 12) on mass and rank; every pixel is a maximum
    flat = np.ones((1, 3, 4))
    np.testing.assert_allclose([mass_accuracy(flat, mask)[0], rank_accuracy(flat, mask)[0]], [1 / 3, 1 / 3])
    assert pointing_game(flat, mask)[0] == 1.0
    # maximum outside; mass inside 2 of 2 + 3 + 2·0.5 → 2/6; negative values carry no mass
    other = np.array([[[1.0, 1.0, 3.0, -5.0], [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]])
    assert pointing_game(other, mask)[0] == 0.0
    assert mass_accuracy(other, mask)[0] == pytest.approx(2 / 6)
    # top 4: 3 (out), 1 and 1 (in), then one of the two 0.5s (both out)
    assert rank_accuracy(other, mask)[0] == pytest.approx(2 / 4)
    # ties at the cut: top 4 = 3, 1, 1 and one of six zeros (two of them inside): 2 + 2/6 hits
    tie = np.array([[[1.0, 1.0, 3.0, -5.0], [0.0, 0.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0]]])
    assert rank_accuracy(tie, mask)[0] == pytest.approx((2 + 2 / 6) / 4)


def test_empty_masks_and_zero_maps_are_undefined() -> None:
    empty = np.zeros((1, 3, 4), dtype=bool)
    some = np.ones((1, 3, 4))
    assert all(math.isnan(f(some, empty)[0]) for f in (mass_accuracy, rank_accuracy, pointing_game))
    assert math.isnan(mass_accuracy(np.zeros((1, 3, 4)), ~empty)[0])


class CauseTruthSet(ArrayTruthSet):
    """Steering images whose cause is a bright rectangle (image 3 has none)."""

    def __init__(self, declared: bool = True) -> None:
        images = np.full((len(RECTANGLES), *SIZE, 3), 20, dtype=np.uint8)
        for image, rectangle in zip(images, RECTANGLES, strict=True):
            if rectangle is not None:
                image[rectangle] = 240
        labels = np.zeros((len(RECTANGLES), *SIZE), dtype=np.uint8)
        super().__init__(images, labels, {"steering": np.zeros(len(RECTANGLES))})
        self.declared = declared

    @property
    def causes(self) -> Mapping[str, CauseDeclaration]:
        return {"steering": CauseDeclaration(("road",), ())} if self.declared else {}

    def cause_mask(self, index: int, task: str) -> np.ndarray | None:
        rectangle = RECTANGLES[index]
        if rectangle is None:
            return None
        mask = np.zeros(SIZE, dtype=bool)
        mask[rectangle] = True
        return mask


class BrightMapContext(EvaluationContext):
    """Plans may name `bright`: the map is 1 on the image's bright pixels (its cause), 0 elsewhere."""

    def maps(
        self,
        model: LoadedModel,
        method: PlannedMethod,
        batch: Tensor,
        labels: Tensor,
        ids: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
    ) -> Tensor:
        if method.method != "bright":
            return super().maps(model, method, batch, labels, ids, indices)
        return (batch.mean(1) > 0.5).float()


class Mean(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean((1, 2, 3))[:, None]


def _context(truthset: CauseTruthSet) -> BrightMapContext:
    plan = (
        PlannedMethod("bright", label="bright"),
        PlannedMethod("uniform", label="null:uniform", normalise="sum", role=CHANCE),
    )
    return BrightMapContext(
        truthset,
        list(range(len(RECTANGLES))),
        [LoadedModel("m", Mean(), {}, "steering", SIZE)],
        {"m": plan},
        {"steering": "output"},
        batch_size=3,
        n_resamples=100,
    )


def test_check_scores_the_images_with_a_mask_and_the_uniform_map_scores_the_area_share() -> None:
    result = CHECKS.get("localisation")().run(_context(CauseTruthSet()))
    table = result.tables["localisation"].set_index(["method", "metric"])
    assert set(table["n_images"]) == {3}
    assert (table.loc["bright", "mean"] == 1.0).all()
    shares = [np.zeros(SIZE)[r].size / np.prod(SIZE) for r in RECTANGLES if r is not None]
    assert table.loc[("null:uniform", "mass_accuracy"), "mean"] == pytest.approx(np.mean(shares))
    assert table.loc[("null:uniform", "rank_accuracy"), "mean"] == pytest.approx(np.mean(shares))
    assert table.loc[("null:uniform", "pointing_game"), "mean"] == 1.0
    summary = result.summary.set_index("method")
    assert summary.loc["bright", "mass_accuracy_ci_low"] == 1.0
    low, high = summary.loc["null:uniform", ["mass_accuracy_ci_low", "mass_accuracy_ci_high"]]
    assert min(shares) <= low <= high <= max(shares)
    assert [(c.check, c.column, c.threshold) for c in result.criteria] == [
        ("localisation", "mass_accuracy", None)
    ]


def test_maps_at_a_smaller_model_input_are_resized_to_the_masks() -> None:
    context = _context(CauseTruthSet())
    context.models = [LoadedModel("m", Mean(), {}, "steering", (SIZE[0] // 2, SIZE[1] // 2))]
    table = LocalisationCheck().run(context).tables["localisation"].set_index(["method", "metric"])
    assert set(table["n_images"]) == {3}
    mass = table.xs("mass_accuracy", level="metric")["mean"]
    # the half-size map, upsampled bilinearly, keeps most of its mass on the cause
    assert mass["bright"] > 0.6 > mass["null:uniform"]


def test_a_truth_set_without_causes_gives_empty_tables_and_no_criteria() -> None:
    result = LocalisationCheck().run(_context(CauseTruthSet(declared=False)))
    assert result.tables["localisation"].empty and result.summary.empty
    assert result.criteria == []
    assert "mass_accuracy_ci_high" in result.summary.columns
