from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from torch import Tensor, nn

from gradsum.errors import SpecError
from gradsum.evaluation.base import CHANCE, CHECKS, EvaluationContext, PlannedMethod, check_options
from gradsum.evaluation.checks.perturbation import (
    ORDERS,
    Order,
    PerturbationCheck,
    PerturbationOptions,
    removal_priority,
    remove,
    road_inputs,
    trapezoid_auc,
)
from gradsum.evaluation.imputation import FastNoisyLinearImputer
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets.base import ArrayTruthSet

SIZE = (20, 30)
#: the region the model reads: 6 × 10 = 60 pixels, 10 % of the image
ROWS, COLS = slice(5, 11), slice(10, 20)
BACKGROUND = 26
#: one region brightness per image (uint8), so the bootstrap intervals are not degenerate
BRIGHTNESS = (150, 170, 190, 210, 230, 250)
FRACTIONS = tuple(round(0.1 * k, 1) for k in range(1, 10))


class RegionMean(nn.Module):
    """Output = scale · (mean of the input over the fixed rectangle − offset): depends on that region only."""

    def __init__(self, scale: float = 1.0, offset: float = 0.0) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * (x[:, :, ROWS, COLS].mean((1, 2, 3)) - self.offset)[:, None]


class PerfectMapContext(EvaluationContext):
    """Plans may name `perfect`: a map that is 1 on the rectangle and 0 elsewhere."""

    def maps(
        self,
        model: LoadedModel,
        method: PlannedMethod,
        batch: Tensor,
        labels: Tensor,
        ids: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
    ) -> Tensor:
        if method.method != "perfect":
            return super().maps(model, method, batch, labels, ids, indices)
        maps = torch.zeros(batch.shape[0], *batch.shape[-2:])
        maps[:, ROWS, COLS] = 1.0
        return maps


PLAN = (
    PlannedMethod("perfect", label="perfect"),
    PlannedMethod("random", label="null:random", normalise="minmax", role=CHANCE),
    PlannedMethod("uniform", label="null:uniform", normalise="sum", role=CHANCE),
)


def _context(task: str, module: nn.Module, target: str) -> PerfectMapContext:
    images = np.full((len(BRIGHTNESS), *SIZE, 3), BACKGROUND, dtype=np.uint8)
    for image, value in zip(images, BRIGHTNESS, strict=True):
        image[ROWS, COLS] = value
    labels = np.zeros((len(BRIGHTNESS), *SIZE), dtype=np.uint8)
    truthset = ArrayTruthSet(images, labels, {task: np.ones(len(BRIGHTNESS))})
    model = LoadedModel("m", module, {}, task, SIZE)
    return PerfectMapContext(
        truthset,
        list(range(len(BRIGHTNESS))),
        [model],
        {"m": PLAN},
        {task: target},
        batch_size=4,
        n_resamples=200,
    )


def _drop() -> np.ndarray:
    """Per image: the region's brightness above the background in [0, 1] units."""
    return (np.asarray(BRIGHTNESS) - BACKGROUND) / 255.0


@pytest.mark.parametrize(("fraction", "order"), [(0.3, ORDERS[0]), (0.3, ORDERS[1]), (0.7, ORDERS[1])])
def test_removal_equals_pytorch_grad_cams_road_on_a_tie_free_map(fraction: float, order: Order) -> None:
    generator = torch.Generator().manual_seed(0)
    image, cam = torch.rand(3, 16, 16, generator=generator), torch.rand(16, 16, generator=generator)
    theirs_cls = ROADMostRelevantFirst if order is ORDERS[0] else ROADLeastRelevantFirst
    percentile = round(100 * (1 - fraction))
    torch.manual_seed(7)
    theirs = theirs_cls(percentile).perturbation(image, cam)
    keys = np.random.default_rng(0).permutation(cam.numel())
    priority = removal_priority(cam.numpy(), keys, order)
    ours = remove(image, priority, fraction, order, FastNoisyLinearImputer(), seed=7)
    # the same system and the same noise draws; the solvers differ in rounding only (float32 output)
    assert float((ours - theirs).abs().max()) <= 1e-5
    # the expected share of pixels is imputed: the most relevant (MoRF) or the least relevant (LeRF) ones
    changed = (ours != image).any(0)
    assert int(changed.sum()) == round(fraction * 256)
    ranked = cam.flatten().argsort(descending=order is ORDERS[0])[: round(fraction * 256)]
    assert set(torch.nonzero(changed.flatten())[:, 0].tolist()) == set(ranked.tolist())


def test_a_constant_map_removes_the_same_pixels_in_both_orders_and_the_seed_fixes_the_noise() -> None:
    image = torch.rand(3, 12, 14, generator=torch.Generator().manual_seed(1))
    first = road_inputs(image, torch.ones(12, 14), (0.2, 0.5), seed=3)
    again = road_inputs(image, torch.ones(12, 14), (0.2, 0.5), seed=3)
    other = road_inputs(image, torch.ones(12, 14), (0.2, 0.5), seed=4)
    assert torch.equal(first["morf"], first["lerf"])
    assert torch.equal(first["morf"], again["morf"])
    assert not torch.equal(first["morf"], other["morf"])


def test_trapezoid_auc_includes_the_unperturbed_point() -> None:
    curves = np.array([[0.0, 1.0, 1.0], [2.0, 2.0, 0.0]])
    # x = 0, 0.1, 0.2: [0,1,1] → 0.05 + 0.1; [2,2,0] → 0.2 + 0.1
    np.testing.assert_allclose(trapezoid_auc(curves, (0.1, 0.2)), [0.15, 0.3])


def test_perfect_map_beats_random_map_on_a_region_model_and_a_constant_map_has_no_gap() -> None:
    result = CHECKS.get("perturbation")().run(_context("steering", RegionMean(), "output"))
    curves = result.tables["perturbation"].set_index(["method", "order", "fraction"]).sort_index()
    drop = _drop()
    # LeRF of the perfect map imputes only pixels outside the region (up to 90 %): the output never moves
    lerf = curves.loc[("perfect", "lerf"), "mean"]
    assert np.all(lerf.to_numpy() == 0.0)
    # MoRF imputes the whole region from background neighbours at 10 %: the output falls to the background
    morf = curves.loc[("perfect", "morf"), "mean"]
    assert morf.loc[0.0] == 0.0
    np.testing.assert_allclose(morf.loc[list(FRACTIONS)], drop.mean(), atol=0.005)
    auc = result.tables["perturbation_auc"].set_index("method")
    # trapezoid over x = 0 … 0.9 of (0, d, …, d): d · (0.05 + 0.8)
    assert auc.loc["perfect", "deletion_auc"] == pytest.approx(0.85 * drop.mean(), abs=0.005)
    assert auc.loc["perfect", "insertion_auc"] == 0.0
    summary = result.summary.set_index("method")
    assert summary.loc["perfect", "road_gap_ci_low"] > summary.loc["null:random", "road_gap_ci_high"] + 0.3
    assert abs(summary.loc["null:random", "road_gap"]) < 0.1
    assert (summary.loc["null:uniform", ["road_gap", "road_gap_ci_low", "road_gap_ci_high"]] == 0.0).all()
    assert result.criteria[0].column == "road_gap" and result.criteria[0].threshold == 0.0
    assert set(result.tables["perturbation"]["n_images"]) == {len(BRIGHTNESS)}


def test_obstacle_reads_the_explained_logit_and_the_accuracy_against_the_labels() -> None:
    module = RegionMean(scale=10.0, offset=0.4)
    result = PerturbationCheck().run(_context("obstacle", module, "positive"))
    auc = result.tables["perturbation_auc"].set_index(["method", "measure"])
    # every image is labelled positive and starts with a positive logit; MoRF at 10 % removes the region,
    # the logit falls to 10 · (background − 0.4) < 0 and stays wrong; LeRF never touches the region
    assert auc.loc[("perfect", "accuracy"), "deletion_auc"] == pytest.approx(0.05)
    assert auc.loc[("perfect", "accuracy"), "insertion_auc"] == pytest.approx(0.9)
    assert auc.loc[("perfect", "accuracy"), "road_gap"] == pytest.approx(0.85)
    start = 10.0 * (np.asarray(BRIGHTNESS) / 255.0 - 0.4)
    floor = 10.0 * (BACKGROUND / 255.0 - 0.4)
    expected_gap = float(np.mean(0.85 * (start - floor)))
    assert auc.loc[("perfect", "target_logit"), "road_gap"] == pytest.approx(expected_gap, abs=0.05)
    summary = result.summary.set_index("method")
    assert summary.loc["perfect", "road_gap"] == auc.loc[("perfect", "target_logit"), "road_gap"]
    assert isinstance(result.tables["perturbation"], pd.DataFrame)
    assert set(result.tables["perturbation"]["measure"]) == {"target_logit", "accuracy"}


def test_options_reject_fractions_outside_the_open_unit_interval_and_unknown_keys() -> None:
    assert check_options("perturbation", {"fractions": [0.25, 0.5]}).fractions == (0.25, 0.5)
    assert check_options("perturbation", {}) == PerturbationOptions()
    with pytest.raises(SpecError, match="field 'fractions' needs increasing values"):
        check_options("perturbation", {"fractions": [0.5, 1.0]})
    with pytest.raises(SpecError, match=r"evaluation\.options\.perturbation: unknown field 'steps'"):
        check_options("perturbation", {"steps": 3})
