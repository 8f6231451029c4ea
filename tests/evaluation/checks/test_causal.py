from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gradsum.errors import SpecError, UnknownNameError
from gradsum.evaluation import CHECKS, check_options
from gradsum.evaluation.base import IMAGES, EvaluationContext, PlannedMethod
from gradsum.evaluation.checks.causal import (
    CAUSAL_PROFILE_COLUMNS,
    SUMMARY_COLUMNS,
    CausalCheck,
    CausalOptions,
    causal_profiles,
)
from gradsum.evaluation.concordance import CAUSAL_PER_IMAGE_COLUMNS
from gradsum.evaluation.erasure import IN_DOMAIN, OUT_OF_DOMAIN
from gradsum.evaluation.materiality import MATERIALITY, MATERIALITY_COLUMNS
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.referee import CAUSAL_EFFECT_COLUMNS, cached_causal_effects, causal_effects
from gradsum.models import build_model
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import ArrayTruthSet, TruthSet, open_truthset
from gradsum.truthsets.labels import ignored_cityscapes_ids
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate

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
    # an array truth set renders no placebo: nothing to subtract, and no forward pass for it
    assert effects[["placebo_output", "placebo_abs_delta"]].isna().all().all()
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
        placebo = synthetic.placebo(index, "road").image
        direct = float(placebo[WINDOW][..., 1].astype(np.float64).mean() / 255)
        assert row.placebo_output == pytest.approx(direct, abs=1e-6)
        assert row.placebo_abs_delta == pytest.approx(abs(direct - row.output), abs=1e-6)
    assert (road["placebo_abs_delta"] < road["abs_delta"]).all()  # texture moves it less than erasure
    others = effects[effects["class"] != "road"]
    assert others["abs_delta"].max() < 1e-6  # nothing else reaches the window
    assert others["placebo_abs_delta"].max() < 1e-6
    profile = causal_profiles(effects, n_resamples=50, seed=0)
    ranked = profile[profile["effect"] == "abs_delta"].sort_values("mean", ascending=False)
    assert ranked["class"].iloc[0] == "road"


def test_causal_check_runs_every_planned_method_on_a_tiny_model(synthetic: SyntheticTruthSet) -> None:
    torch.manual_seed(0)
    models = [
        _loaded(f"cnn_{task}", build_model("compact_cnn", SIZE).eval(), task, SIZE)
        for task in ("steering", "obstacle")
    ]
    plan = [PlannedMethod("gradcam", label="gradcam"), *NULL_EXPLAINERS]
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
    assert set(result.tables) == {"causal_effects", "causal_profiles", "causal_materiality", "agreement"}
    effects = result.tables["causal_effects"]
    present = sum(
        len(set(np.unique(synthetic[i].labels).tolist()) - set(ignored_cityscapes_ids())) for i in range(6)
    )
    assert len(effects) == present * len(models)
    assert effects.groupby(["model", "image", "class"]).size().max() == 1
    assert (effects["domain"] == IN_DOMAIN).all()
    assert cached_causal_effects(context) is effects  # computed once, shared with other checks
    assert effects.loc[effects["task"] == "obstacle", "flip"].isin([0.0, 1.0]).all()
    assert effects["placebo_abs_delta"].notna().all()  # the synthetic set renders every placebo
    agreement = result.tables["agreement"]
    assert len(agreement) == len(models) * len(plan)
    assert (agreement["n_images"] == 6).all() and (agreement["domain"] == IN_DOMAIN).all()
    # the uniform map ranks no class above another: no correlation
    uniform = agreement[agreement["method"] == "null:uniform"]
    assert uniform["spearman"].isna().all() and uniform["spearman_ci_low"].isna().all()
    materiality = result.tables["causal_materiality"]
    assert list(materiality.columns) == list(MATERIALITY_COLUMNS)
    assert len(materiality) == len(effects.groupby(["model", "class"]))
    assert set(materiality["margin"]) == {MATERIALITY["steering"], MATERIALITY["obstacle"]}
    per_image = result.per_image
    assert per_image is not None and list(per_image.columns) == list(CAUSAL_PER_IMAGE_COLUMNS)
    assert len(per_image) == len(models) * len(plan) * 6
    summary = result.summary
    assert list(summary.columns) == list(SUMMARY_COLUMNS) and len(summary) == len(models) * len(plan)
    # the uniform map's mass is its area: a lift of 1 wherever the model has a material class
    lift = summary.loc[summary["method"] == "null:uniform", "causal_lift"].dropna()
    assert lift.to_numpy() == pytest.approx(np.ones(len(lift)))
    # the secondary density Spearman is the agreement table's, kept beside the new figures
    pd.testing.assert_series_equal(
        summary["density_spearman"], agreement["spearman"], check_names=False, check_index=False
    )
    assert [(c.key, c.column, c.denominator, c.threshold, c.over) for c in result.criteria] == [
        ("causal", "concordance", None, 0.5, IMAGES),
        ("causal_image", "image_concordance", None, 0.5, IMAGES),
        ("causal_lift", "material_mass", "material_area", 1.0, IMAGES),
    ]


def _window_context(synthetic: SyntheticTruthSet, **kwargs: object) -> EvaluationContext:
    model = _loaded("window", WindowGreen(), "steering", SIZE)
    plan = [
        PlannedMethod("gradient", label="gradient"),
        PlannedMethod("uniform", label="uniform", normalise="sum"),
    ]
    return EvaluationContext(
        truthset=synthetic,
        indices=range(len(synthetic)),
        models=[model],
        plan={model.name: plan},
        targets={},
        batch_size=4,
        n_resamples=200,
        **kwargs,  # type: ignore[arg-type]
    )


def test_concordance_of_a_window_model_by_hand(synthetic: SyntheticTruthSet) -> None:
    result = CausalCheck().run(_window_context(synthetic))
    materiality = result.tables["causal_materiality"].set_index("class")
    # only road reaches the window; every other class moves the output by nothing, as does its placebo
    assert materiality.index[materiality["material"]].tolist() == ["road"]
    assert (materiality.drop(index="road")[["effect", "placebo", "excess"]].abs().max() < 1e-6).all()
    assert materiality.loc["road", "excess_ci_low"] > MATERIALITY["steering"]
    per_image = result.per_image
    assert per_image is not None
    gradient = per_image[per_image["method"] == "gradient"]
    # the gradient lives in the window, on road only: road outweighs every other class, every image
    assert (gradient["concordance"] == 1.0).all()
    # the uniform map weighs classes by area: road against each other present class, ties half
    expected, road_area = [], []
    ignored = set(ignored_cityscapes_ids())
    for index in range(len(synthetic)):
        labels = synthetic[index].labels
        counts = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True), strict=True)}
        road = counts.pop(7)
        others = [n for c, n in counts.items() if c not in ignored]
        expected.append(np.mean([1.0 if road > n else 0.5 if road == n else 0.0 for n in others]))
        road_area.append(road / (road + sum(others)))
    uniform = per_image[per_image["method"] == "uniform"]
    assert uniform["concordance"].to_numpy() == pytest.approx(expected)
    assert uniform["material_area"].to_numpy() == pytest.approx(road_area)
    assert uniform["material_mass"].to_numpy() == pytest.approx(road_area)
    summary = result.summary.set_index("method")
    assert summary.loc["uniform", "causal_lift"] == pytest.approx(1.0)
    assert summary.loc["uniform", "concordance"] == pytest.approx(np.mean(expected))
    assert summary.loc["gradient", "causal_lift"] == pytest.approx(1 / np.mean(road_area))
    assert (summary["n_material"] == 1).all() and (summary["material_classes"] == "road").all()
    assert (summary["domain"] == IN_DOMAIN).all()


def test_a_margin_above_the_road_effect_leaves_nothing_material(synthetic: SyntheticTruthSet) -> None:
    context = _window_context(synthetic, options={"causal": {"materiality": {"steering": 10.0}}})
    result = CausalCheck().run(context)
    assert not result.tables["causal_materiality"]["material"].any()
    assert (result.tables["causal_materiality"]["margin"] == 10.0).all()
    assert result.per_image is not None
    assert result.per_image[["concordance", "material_mass", "material_area"]].isna().all().all()
    assert (result.summary["n_material"] == 0).all() and result.summary["causal_lift"].isna().all()


def test_causal_options_are_checked() -> None:
    assert check_options("causal", {}) == CausalOptions("inpaint", MATERIALITY)
    chosen = check_options("causal", {"filler": "mean", "materiality": {"steering": 0.05}})
    assert chosen == CausalOptions("mean", {"steering": 0.05, "obstacle": 0.5})
    with pytest.raises(SpecError, match=r"unknown field 'margin'; valid fields: filler, materiality"):
        check_options("causal", {"margin": 0.1})
    with pytest.raises(SpecError, match=r"unknown task.*lane"):
        check_options("causal", {"materiality": {"lane": 0.1}})
    with pytest.raises(UnknownNameError, match="filler"):
        check_options("causal", {"filler": "smudge"})


def test_unknown_filler_is_refused_before_any_work() -> None:
    context = _context(_stripes(), [_loaded("red", RedMean(), "steering", (4, 6))])
    with pytest.raises(UnknownNameError, match="filler"):
        causal_effects(context, filler="smudge")
