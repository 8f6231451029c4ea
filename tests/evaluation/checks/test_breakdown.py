"""The breakdown check: causal instance vs same-class distractors, and class profiles per target group."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsum.aggregation import class_scores, per_image_frame, profiles
from gradsum.evaluation import CHECKS, NULL_EXPLAINERS
from gradsum.evaluation.base import CheckResult, EvaluationContext, PlannedMethod
from gradsum.evaluation.checks.breakdown import (
    DIFFERENCE,
    INSTANCE_PROFILE_COLUMNS,
    STRAIGHT,
    TARGET_GROUPS,
    TARGET_PROFILE_COLUMNS,
    steering_group,
)
from gradsum.models import build_model
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import open_truthset
from gradsum.truthsets.base import ArrayTruthSet
from gradsum.truthsets.labels import CITYSCAPES
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)
#: the obstacle model reads half-size input, so its maps are resized to the labels
HALF = (32, 64)
CLASS_AREA = next(m for m in NULL_EXPLAINERS if m.method == "class_area")
RANDOM = next(m for m in NULL_EXPLAINERS if m.method == "random")
PLAN = (PlannedMethod("gradcam", label="gradcam"), RANDOM, CLASS_AREA)


def _has_distractor(truthset: SyntheticTruthSet) -> bool:
    for index in range(len(truthset)):
        obstacles = truthset.record(index)["obstacle_instances"]
        instances = truthset[index].instances
        assert instances is not None
        others = (
            (instances // 1000 == obstacles[0] // 1000) & ~np.isin(instances, obstacles) if obstacles else []
        )
        if np.any(others):
            return True
    return False


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruthSet:
    folder = Path(tmp_path_factory.mktemp("breakdown"))
    for seed in range(2, 8):
        truthset = open_truthset(generate(folder / f"s{seed}", count=40, seed=seed, size=SIZE), "test")
        assert isinstance(truthset, SyntheticTruthSet)
        if _has_distractor(truthset):
            return truthset
    raise AssertionError("no seed gives a positive obstacle scene with a same-class distractor")


def _models() -> list[LoadedModel]:
    torch.manual_seed(0)
    obstacle = build_model("compact_cnn", HALF).eval()
    steering = build_model("compact_cnn", SIZE).eval()
    return [
        LoadedModel("obstacle", obstacle, {}, "obstacle", HALF),
        LoadedModel("steering", steering, {}, "steering", SIZE),
    ]


def _context(truthset: ArrayTruthSet | SyntheticTruthSet, models: list[LoadedModel]) -> EvaluationContext:
    return EvaluationContext(
        truthset=truthset,
        indices=range(len(truthset)),
        models=models,
        plan={m.name: list(PLAN) for m in models},
        targets={"steering": "direction", "obstacle": "positive"},
        batch_size=3,
        n_resamples=50,
    )


@pytest.fixture(scope="module")
def checked(synthetic: SyntheticTruthSet) -> tuple[EvaluationContext, CheckResult]:
    context = _context(synthetic, _models())
    return context, CHECKS.get("breakdown")().run(context)


def _oracle(context: EvaluationContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image instance scores and per_image rows, recomputed from `context.maps` by hand."""
    truthset = context.truthset
    assert isinstance(truthset, SyntheticTruthSet)
    instance_rows, frames = [], []
    for ids, images, labels, chunk in context.batches():
        label_tensor = torch.from_numpy(np.stack(labels).astype(np.int64))
        for model in context.models:
            batch = context.model_input(model, images)
            for planned in context.plan[model.name]:
                maps = context.maps(model, planned, batch, label_tensor).detach().float()
                scores = class_scores(maps, label_tensor)
                frames.append(per_image_frame(scores, ids, model.name, planned.label))
                full = F.interpolate(maps[:, None], size=SIZE, mode="bilinear", align_corners=False)[:, 0]
                for row, (image, index) in enumerate(zip(ids, chunk, strict=True)):
                    obstacles = truthset.record(index)["obstacle_instances"]
                    if model.task != "obstacle" or not obstacles:
                        continue
                    instances = truthset[index].instances
                    assert instances is not None
                    cause = np.isin(instances, obstacles)
                    class_id = obstacles[0] // 1000
                    others = (instances // 1000 == class_id) & ~cause
                    values = full[row].double().numpy()
                    instance_rows.append(
                        {
                            "method": planned.label,
                            "class": CITYSCAPES.by_id[class_id].name,
                            "image": image,
                            "cause": values[cause].mean(),
                            "distractor": values[others].mean() if others.any() else math.nan,
                            "distractor_pixels": int(others.sum()),
                        }
                    )
    return pd.DataFrame(instance_rows), pd.concat(frames, ignore_index=True)


def test_instance_scores_are_the_map_means_over_cause_and_distractor_pixels(
    checked: tuple[EvaluationContext, CheckResult],
) -> None:
    context, result = checked
    table = result.tables["instance_profiles"]
    assert list(table.columns) == list(INSTANCE_PROFILE_COLUMNS)
    # only the obstacle model has a causal instance: the steering cause mask is a road region
    assert set(table["model"]) == {"obstacle"}
    assert set(table["method"]) == {m.label for m in PLAN}
    expected, _ = _oracle(context)
    assert (expected["distractor_pixels"] > 0).any()
    table = table.set_index(["method", "class", "role"])
    for (method, name), rows in expected.groupby(["method", "class"]):
        both = rows.dropna()
        figures = {
            "cause": rows["cause"],
            "distractor": rows["distractor"].dropna(),
            DIFFERENCE: both["cause"] - both["distractor"],
        }
        for role, values in figures.items():
            row = table.loc[(method, name, role)]
            assert row["score_mean"] == pytest.approx(values.mean())
            assert int(row["n_images"]) == len(values)
            assert row["score_ci_low"] <= row["score_mean"] <= row["score_ci_high"]
        distractors = rows.loc[rows["distractor_pixels"] > 0, "distractor_pixels"]
        assert table.loc[(method, name, "distractor"), "pixels_mean"] == pytest.approx(distractors.mean())
    # the maps are not flat: the GradCAM cause score is not the distractor score
    gradcam = table.xs("gradcam", level="method")
    assert not np.allclose(gradcam.xs("cause", level="role")["score_mean"], 0.0)


def test_target_groups_follow_the_targets_and_give_the_groups_profiles(
    checked: tuple[EvaluationContext, CheckResult],
) -> None:
    context, result = checked
    table = result.tables["target_profiles"]
    assert list(table.columns) == list(TARGET_PROFILE_COLUMNS)
    truthset = context.truthset
    _, per_image = _oracle(context)
    index_of = {
        i: index for ids, _, _, chunk in context.batches() for i, index in zip(ids, chunk, strict=True)
    }
    assert len(index_of) == len(truthset)
    for model in context.models:
        targets = truthset.targets(model.task)
        groups = {image: TARGET_GROUPS.get(model.task)(float(targets[i])) for image, i in index_of.items()}
        rows = per_image[per_image["model"] == model.name]
        mine = table[table["model"] == model.name]
        assert set(mine["group"]) == set(groups.values())
        for group in set(groups.values()):
            members = [image for image, g in groups.items() if g == group]
            expected = profiles(rows[rows["image"].isin(members)], n_resamples=50, seed=0)
            got = mine[mine["group"] == group].drop(columns="group").reset_index(drop=True)
            pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert result.summary.empty and list(result.summary.columns) == ["model", "method"]
    assert result.criteria == []


class Mean(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean((1, 2, 3))[:, None]


#: steering targets and the groups STRAIGHT puts them in (±0.1 is straight, the bounds included)
STEERING = [(-0.5, "left"), (-0.1, "straight"), (0.0, "straight"), (0.1, "straight"), (0.3, "right")]


def test_array_truthset_no_instances_and_steering_groups_at_the_straight_bound() -> None:
    # image i: road (7) on its first i + 1 columns of 8, sky (23) on the rest
    labels = np.full((len(STEERING), 4, 8), 23, dtype=np.uint8)
    for i in range(len(STEERING)):
        labels[i, :, : i + 1] = 7
    images = np.zeros((*labels.shape, 3), dtype=np.uint8)
    truthset = ArrayTruthSet(images, labels, {"steering": np.array([s for s, _ in STEERING])})
    context = _context(truthset, [LoadedModel("m", Mean(), {}, "steering", (4, 8))])
    context.plan = {"m": [CLASS_AREA]}
    result = CHECKS.get("breakdown")().run(context)
    assert result.tables["instance_profiles"].empty
    assert list(result.tables["instance_profiles"].columns) == list(INSTANCE_PROFILE_COLUMNS)
    table = result.tables["target_profiles"].set_index(["group", "class"])
    # the class-area prior scores each class by its share of the image: road (i + 1) / 8
    for group in ("left", "straight", "right"):
        members = [i for i, (_, g) in enumerate(STEERING) if g == group]
        assert table.loc[(group, "road"), "n_images"] == len(members)
        assert table.loc[(group, "road"), "score_mean"] == pytest.approx(
            np.mean([(i + 1) / 8 for i in members])
        )


def test_groups_at_the_bounds() -> None:
    assert STRAIGHT == 0.1
    assert [steering_group(s) for s, _ in STEERING] == [g for _, g in STEERING]
    assert steering_group(0.1001) == "right" and steering_group(-0.1001) == "left"
    obstacle = TARGET_GROUPS.get("obstacle")
    assert [obstacle(t) for t in (0.0, 0.49, 0.5, 1.0)] == ["negative", "negative", "positive", "positive"]
