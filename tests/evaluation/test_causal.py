from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gradsum.errors import UnknownNameError
from gradsum.evaluation import CHECKS
from gradsum.evaluation.base import EvaluationContext, PlannedMethod
from gradsum.evaluation.causal import (
    CAUSAL_EFFECT_COLUMNS,
    CAUSAL_PROFILE_COLUMNS,
    SUMMARY_COLUMNS,
    CausalCheck,
    cached_causal_effects,
    causal_effects,
    causal_profiles,
)
from gradsum.evaluation.erasure import IN_DOMAIN, OUT_OF_DOMAIN
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.models import build_model
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import ArrayTruthSet, TruthSet, open_truthset
from gradsum.truthsets.labels import ignored_cityscapes_ids
from gradsum.truthsets.synthetic import SyntheticTruthSet, generate

SIZE = (64, 128)
#: rows and columns of the bottom-centre window: ego-lane road in every generated scene
WINDOW = (slice(-6, None), slice(48, 80))


class RedMean(nn.Module):
    """Output = mean red intensity of the image minus `bias` (reads only red pixels)."""

    def __init__(self, bias: float = 0.0) -> None:
        super().__init__()
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].mean(dim=(1, 2))[:, None] - self.bias


class WindowGreen(nn.Module):
    """Output = mean green intensity in the bottom-centre window, where only road lives."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1][:, WINDOW[0], WINDOW[1]].mean(dim=(1, 2))[:, None]


def _loaded(name: str, module: nn.Module, task: str, size: tuple[int, int]) -> LoadedModel:
    return LoadedModel(name, module, {}, task, size)


def _context(truthset: TruthSet, models: list[LoadedModel], **kwargs: object) -> EvaluationContext:
    return EvaluationContext(
        truthset=truthset,
        indices=range(len(truthset)),
        models=models,
        plan={m.name: [] for m in models},
        targets={},
        batch_size=4,
        **kwargs,  # type: ignore[arg-type]
    )


def _stripes() -> ArrayTruthSet:
    """Two 4×6 images: red road, green vegetation, blue sky, two columns each."""
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    labels = np.zeros((4, 6), dtype=np.uint8)
    for column, (channel, class_id) in enumerate(((0, 7), (1, 21), (2, 23))):
        image[:, 2 * column : 2 * column + 2, channel] = 255
        labels[:, 2 * column : 2 * column + 2] = class_id
    return ArrayTruthSet(np.stack([image, image]), np.stack([labels, labels]))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruthSet:
    truthset = open_truthset(
        generate(tmp_path_factory.mktemp("causal") / "set", count=12, size=SIZE), "train"
    )
    assert isinstance(truthset, SyntheticTruthSet)
    return truthset


def test_mean_fill_effects_match_the_hand_computation() -> None:
    models = [
        _loaded("red", RedMean(), "steering", (4, 6)),
        _loaded("red_logit", RedMean(bias=0.2), "obstacle", (4, 6)),
    ]
    effects = causal_effects(_context(_stripes(), models), filler="mean")
    assert list(effects.columns) == list(CAUSAL_EFFECT_COLUMNS)
    assert len(effects) == 2 * 3 * 2  # images × classes × models
    assert (effects["domain"] == OUT_OF_DOMAIN).all()
    assert (effects["pixels"] == 8).all() and np.allclose(effects["area_share"], 1 / 3)
    # Erasing the road fills it with the mean outside, (0, 127.5, 127.5) → (0, 128, 128): no red left.
    # Erasing vegetation or sky fills two columns with (128, 0, 128): red rises by 2·128 / (6·255).
    expected = {"road": -1 / 3, "vegetation": 128 / 765, "sky": 128 / 765}
    steering = effects[effects["model"] == "red"].set_index(["image", "class"])
    for (_, cls), row in steering.iterrows():
        assert row["output"] == pytest.approx(1 / 3, abs=1e-6)
        assert row["delta"] == pytest.approx(expected[cls], abs=1e-6)
        assert row["abs_delta"] == pytest.approx(abs(expected[cls]), abs=1e-6)
        assert np.isnan(row["flip"])
    obstacle = effects[effects["model"] == "red_logit"].groupby("class")["flip"].mean()
    # logit 1/3 - 0.2 > 0; without road red it is -0.2 (a flip), with more red it stays positive
    assert obstacle.to_dict() == {"road": 1.0, "sky": 0.0, "vegetation": 0.0}

    profile = causal_profiles(effects, n_resamples=50, seed=0)
    assert list(profile.columns) == list(CAUSAL_PROFILE_COLUMNS)
    abs_delta = profile[(profile["model"] == "red") & (profile["effect"] == "abs_delta")]
    assert abs_delta.sort_values("mean", ascending=False)["class"].iloc[0] == "road"
    road = abs_delta.set_index("class").loc["road"]
    assert (road["mean"], road["ci_low"], road["ci_high"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3), abs=1e-6)
    assert road["n_images"] == 2 and road["domain"] == OUT_OF_DOMAIN
    # steering has no decisions, so only the obstacle model has flip rates
    flip_models = set(profile.loc[profile["effect"] == "flip_rate", "model"])
    assert flip_models == {"red_logit"}


def test_a_model_reading_only_the_road_ranks_road_first_in_domain(synthetic: SyntheticTruthSet) -> None:
    for index in range(len(synthetic)):
        assert (synthetic[index].labels[WINDOW] == 7).all()  # the window holds road only
    model = _loaded("window", WindowGreen(), "steering", SIZE)
    effects = causal_effects(_context(synthetic, [model]))
    assert (effects["domain"] == IN_DOMAIN).all()
    # one row per image × present (non-ignored) class: every rendered class is erasable
    expected_rows = sum(
        len(set(np.unique(synthetic[i].labels).tolist()) - set(ignored_cityscapes_ids()))
        for i in range(len(synthetic))
    )
    assert len(effects) == expected_rows
    # the road rows equal the model read directly on the re-rendered scene
    road = effects[effects["class"] == "road"].reset_index(drop=True)
    for row in road.itertuples():
        index = [synthetic[i].meta["frame"] for i in range(len(synthetic))].index(row.image)
        erased = synthetic.erase(index, "road").image
        direct = float(erased[WINDOW][..., 1].astype(np.float64).mean() / 255)
        assert row.erased_output == pytest.approx(direct, abs=1e-6)
        assert row.abs_delta > 0.05  # grey road → green terrain
    others = effects[effects["class"] != "road"]
    assert others["abs_delta"].max() < 1e-6  # nothing else reaches the window
    profile = causal_profiles(effects, n_resamples=50, seed=0)
    ranked = profile[profile["effect"] == "abs_delta"].sort_values("mean", ascending=False)
    assert ranked["class"].iloc[0] == "road"


def test_causal_check_runs_every_planned_method_on_a_tiny_model(synthetic: SyntheticTruthSet) -> None:
    torch.manual_seed(0)
    models = [
        _loaded(f"cnn_{task}", build_model("compact_cnn", SIZE).eval(), task, SIZE)
        for task in ("steering", "obstacle")
    ]
    plan = [PlannedMethod("gradcam", "gradcam"), *NULL_EXPLAINERS]
    context = EvaluationContext(
        truthset=synthetic,
        indices=range(6),
        models=models,
        plan={m.name: plan for m in models},
        targets={},
        batch_size=4,
        n_resamples=50,
    )
    check = CHECKS.get("causal")()
    assert isinstance(check, CausalCheck) and check.name == "causal"
    result = check.run(context)
    assert set(result.tables) == {"causal_effects", "causal_profiles", "agreement"}
    effects = result.tables["causal_effects"]
    present = sum(
        len(set(np.unique(synthetic[i].labels).tolist()) - set(ignored_cityscapes_ids())) for i in range(6)
    )
    assert len(effects) == present * len(models)
    assert effects.groupby(["model", "image", "class"]).size().max() == 1
    assert (effects["domain"] == IN_DOMAIN).all()
    assert cached_causal_effects(context) is effects  # computed once, shared with other checks
    assert effects.loc[effects["task"] == "obstacle", "flip"].isin([0.0, 1.0]).all()
    agreement = result.tables["agreement"]
    assert len(agreement) == len(models) * len(plan)
    assert (agreement["n_images"] == 6).all() and (agreement["domain"] == IN_DOMAIN).all()
    # the uniform map ranks no class above another: no correlation, never a pass
    uniform = agreement[agreement["method"] == "null:uniform"]
    assert uniform["spearman"].isna().all() and uniform["spearman_ci_low"].isna().all()
    assert list(result.summary.columns) == list(SUMMARY_COLUMNS)
    pd.testing.assert_series_equal(
        result.summary["agreement"], agreement["spearman"], check_names=False, check_index=False
    )
    assert [c.column for c in result.criteria] == ["agreement"]
    assert result.criteria[0].threshold == 0.0 and result.criteria[0].higher_is_better


def test_unknown_filler_is_refused_before_any_work() -> None:
    context = _context(_stripes(), [_loaded("red", RedMean(), "steering", (4, 6))])
    with pytest.raises(UnknownNameError, match="filler"):
        causal_effects(context, filler="smudge")
