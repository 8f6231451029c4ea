"""The calibrated sanity check on untrained PilotNets: the curve, the drop's terms, depths, model-free methods."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from gradsum.errors import SpecError, UnknownNameError
from gradsum.evaluation.base import (
    CHECKS,
    CONTROL,
    CheckResult,
    EvaluationContext,
    PlannedMethod,
    check_options,
)
from gradsum.evaluation.checks.sanity import (
    PER_IMAGE_COLUMNS,
    PROFILE_SPEARMAN,
    SANITY_CRITERION,
    SEED_TWIN,
    SELF,
    SUMMARY_COLUMNS,
    BatchMaps,
    SanityCheck,
    SanityOptions,
    Source,
    Sources,
    calibration,
    data_randomisation,
    method_depth,
)
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.randomise import cascade_names
from gradsum.evaluation.similarity import SIMILARITIES
from gradsum.models import build_model
from gradsum.models.loaded import LoadedModel
from gradsum.report.plots import cascading_figure
from gradsum.truthsets import ArrayTruthSet
from gradsum.truthsets.synthetic.render import IDS

SIZE = (64, 128)
GRADCAM = PlannedMethod("gradcam", label="gradcam")
SALIENCY = PlannedMethod("saliency", label="saliency")
#: a known-answer control: model-free by its role, so the check leaves it out like the nulls
CONTROL_METHOD = PlannedMethod("saliency", label="control:saliency", role=CONTROL)
PILOTNET_BLOCKS = [
    "head.7",
    "head.5",
    "head.3",
    "head.1",
    "features.4",
    "features.3",
    "features.2",
    "features.1",
    "features.0",
]


def loaded(name: str, seed: int) -> LoadedModel:
    torch.manual_seed(seed)
    module = build_model("pilotnet", SIZE).eval()
    return LoadedModel(name, module, {}, "steering", SIZE)


def context(
    models: list[LoadedModel], methods: tuple[PlannedMethod, ...], options: dict[str, object]
) -> EvaluationContext:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, *SIZE, 3), dtype=np.uint8)
    labels = rng.choice(np.array(sorted(set(IDS.values())), dtype=np.uint8), size=(6, *SIZE))
    return EvaluationContext(
        truthset=ArrayTruthSet(images, labels),
        indices=range(6),
        models=models,
        plan={model.name: methods for model in models},
        targets={"steering": "direction"},
        batch_size=4,
        n_resamples=200,
        options={"sanity": options},
    )


@pytest.fixture(scope="module")
def twin() -> LoadedModel:
    return loaded("pilot_seed1", 1)


@pytest.fixture(scope="module")
def result(twin: LoadedModel) -> CheckResult:
    methods = (GRADCAM, SALIENCY, CONTROL_METHOD, *NULL_EXPLAINERS)
    options = {"blocks": 3, "independent": True, "twins": {"pilot": twin}}
    return CHECKS.get("sanity")().run(context([loaded("pilot", 0)], methods, options))


def test_step_zero_is_the_model_against_itself(result: CheckResult) -> None:
    table = result.tables["sanity"]
    first = table[table["step"] == 0]
    assert set(first["mode"]) == {"cascading", "independent"}
    assert set(first["similarity"]) == {*SIMILARITIES.names(), PROFILE_SPEARMAN}
    np.testing.assert_allclose(first["value"].to_numpy(float), 1.0)
    assert set(first["n_images"]) == {6}


def test_steps_name_the_top_blocks_in_cascade_order(result: CheckResult) -> None:
    table = result.tables["sanity"]
    for mode in ("cascading", "independent"):
        steps = table[table["mode"] == mode][["step", "block"]].drop_duplicates().sort_values("step")
        assert steps["step"].tolist() == [0, 1, 2, 3]
        assert steps["block"].tolist() == ["original", "head.7", "head.5", "head.3"]
    # two methods × two modes × four steps × (the map similarities and the profile Spearman)
    assert len(table) == 2 * 2 * 4 * (len(SIMILARITIES) + 1)


def test_model_free_methods_leave_every_table(result: CheckResult) -> None:
    """Nulls and controls: no randomisation can change their maps, so they are no part of the check."""
    assert set(result.tables["sanity"]["method"]) == {"gradcam", "saliency"}
    assert set(result.summary["method"]) == {"gradcam", "saliency"}
    assert result.per_image is not None
    assert set(result.per_image["method"]) == {"gradcam", "saliency"}


def test_summary_and_per_image_hold_the_drop_and_its_terms(result: CheckResult) -> None:
    assert tuple(result.summary.columns) == SUMMARY_COLUMNS
    per_image = result.per_image
    assert per_image is not None and tuple(per_image.columns) == PER_IMAGE_COLUMNS
    assert len(per_image) == 2 * 6
    for _, row in result.summary.iterrows():
        rows = per_image[per_image["method"] == row["method"]]
        # the point figure is the ratio of the per-image means the verdict resamples
        ratio = rows["sanity_drop_num"].mean() / rows["sanity_drop_den"].mean()
        assert row["sanity_drop"] == pytest.approx(ratio)
        np.testing.assert_allclose(
            rows["sanity_drop_num"].mean(), row["sanity_ceiling"] - row["sanity_randomised"], atol=1e-12
        )
        np.testing.assert_allclose(
            rows["sanity_drop_den"].mean(), row["sanity_ceiling"] - row["sanity_floor"], atol=1e-12
        )
        assert row["sanity_ceiling_source"] == SEED_TWIN
        assert row["sanity_images"] == 6
        # two untrained PilotNets of different seeds: their maps are alike only in part
        assert -1.0 < row["sanity_ceiling"] < 1.0
    summary = result.summary.set_index("method")
    assert (summary.loc["gradcam", "sanity_depth"], summary.loc["gradcam", "sanity_depth_block"]) == (
        5,
        "features.4",
    )
    assert (summary.loc["saliency", "sanity_depth"], summary.loc["saliency", "sanity_depth_block"]) == (
        9,
        "features.0",
    )


def test_floor_of_a_varying_map_is_below_one(result: CheckResult) -> None:
    """Two independent re-initialisations give different maps: the floor is no identity."""
    floors = result.summary.set_index("method")[["sanity_floor", "sanity_floor_signed"]]
    assert (floors.abs() < 0.99).all().all()
    model = loaded("pilot", 0)
    chosen = calibration(model.module, SALIENCY, seed=0, twin=False)
    assert chosen.randomised.blocks == chosen.second.blocks and chosen.randomised.seed != chosen.second.seed
    batch = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(2, *SIZE, dtype=torch.int64)
    maps = BatchMaps(model, SALIENCY, batch, labels, "direction", Sources(model))
    first, second = maps.raw(chosen.randomised), maps.raw(chosen.second)
    assert first.std() > 0 and not torch.allclose(first, second)
    assert (maps.ordering("spearman_abs", chosen.randomised, chosen.second) < 0.99).all()


def test_the_criterion_is_the_normalised_drop_above_zero() -> None:
    criterion = SANITY_CRITERION
    assert (criterion.column, criterion.denominator, criterion.key) == (
        "sanity_drop_num",
        "sanity_drop_den",
        "sanity",
    )
    assert criterion.higher_is_better and criterion.threshold == 0.0 and not criterion.against_nulls


def test_without_a_twin_the_ceiling_is_the_model_itself_and_a_warning_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gradsum.evaluation.checks.sanity"):
        result = SanityCheck().run(context([loaded("pilot", 0)], (SALIENCY,), {"blocks": 1}))
    assert "no seed twin" in caplog.text and "uncalibrated" in caplog.text
    row = result.summary.iloc[0]
    assert row["sanity_ceiling_source"] == SELF
    assert row["sanity_ceiling"] == 1.0 and row["sanity_ceiling_signed"] == 1.0
    assert row["sanity_drop"] == pytest.approx((1 - row["sanity_randomised"]) / (1 - row["sanity_floor"]))


def test_depth_reaches_the_layer_a_method_reads() -> None:
    module = loaded("pilot", 0).module
    assert cascade_names(module) == PILOTNET_BLOCKS
    middle = PlannedMethod("gradcam", label="gradcam_middle", layer="features.2")
    # a CAM at a middle stage: randomised down to its stage, the two stages below it stay trained
    assert method_depth(module, middle) == tuple(PILOTNET_BLOCKS[:7])
    # a layer inside a stage counts as its stage; a parameter-free layer (the flatten) as the block above
    assert method_depth(module, PlannedMethod("gradcam", label="x", layer="features.2.2"))[-1] == "features.2"
    assert method_depth(module, PlannedMethod("gradcam", label="x", layer="head.0"))[-1] == "head.1"
    # gradients and guided GradCAM read every layer: the full cascade
    assert method_depth(module, SALIENCY) == tuple(PILOTNET_BLOCKS)
    assert method_depth(module, PlannedMethod("guided_gradcam", label="gg")) == tuple(PILOTNET_BLOCKS)
    copy = Sources(loaded("pilot", 0)).module(calibration(module, middle, 0, False).randomised)
    # parameters: an untrained model's BatchNorm statistics already hold their reset values
    trained, randomised = dict(module.named_parameters()), dict(copy.named_parameters())
    for name in trained:
        changed = not torch.equal(trained[name], randomised[name])
        assert changed == name.startswith(("head.", "features.4", "features.3", "features.2")), name


def test_depth_on_a_vit_stops_at_the_cam_layer_and_rollout_takes_all() -> None:
    vit = build_model("vit", (32, 64), patch_size=16, embed_dim=16, depth=3, num_heads=2)
    assert method_depth(vit, GRADCAM) == ("head", "norm", "blocks.2")
    assert method_depth(vit, PlannedMethod("gradrollout", label="rollout")) == tuple(cascade_names(vit))


def test_data_randomisation_compares_each_model_with_its_twin() -> None:
    model, shuffled = loaded("pilot", 0), loaded("pilot_shuffled", 1)
    ctx = context([model], (SALIENCY, NULL_EXPLAINERS[1]), {"blocks": 1, "shuffled": {"pilot": shuffled}})
    table = data_randomisation(ctx, {"pilot": shuffled})
    assert set(table["mode"]) == {"data"} and set(table["block"]) == {"pilot_shuffled"}
    values = table[table["similarity"] == "spearman_abs"].set_index("method")["value"]
    assert list(values.index) == ["saliency"] and values["saliency"] < 0.9
    assert "sanity_data" in SanityCheck().run(ctx).tables
    with pytest.raises(SpecError, match="shuffled: no evaluated model other"):
        data_randomisation(ctx, {"other": shuffled})


def test_twins_must_name_evaluated_models_of_the_same_input() -> None:
    model = loaded("pilot", 0)
    ctx = context([model], (SALIENCY,), {"blocks": 1, "twins": {"other": loaded("x", 1)}})
    with pytest.raises(SpecError, match=r"options\.sanity\.twins: no evaluated model other"):
        SanityCheck().run(ctx)
    torch.manual_seed(1)
    small = LoadedModel("small", build_model("pilotnet", (66, 200)), {}, "steering", (66, 200))
    ctx = context([model], (SALIENCY,), {"blocks": 1, "twins": {"pilot": small}})
    with pytest.raises(SpecError, match=r"twins\.pilot: twin small is steering at \(66, 200\)"):
        SanityCheck().run(ctx)


def test_the_reports_figure_plots_the_tables_blocks_in_cascade_order(result: CheckResult) -> None:
    abs_panel, signed_panel = cascading_figure(result.tables["sanity"], "pilot").axes
    ticks = [label.get_text() for label in abs_panel.get_xticklabels()]
    assert ticks == ["original", "head.7", "head.5", "head.3"]
    assert {line.get_label() for line in signed_panel.get_lines()} == {"gradcam", "saliency"}


def test_options_are_checked() -> None:
    assert check_options("sanity", {}) == SanityOptions(similarities=tuple(SIMILARITIES.names()))
    assert check_options("sanity", {}).blocks is None
    assert check_options("sanity", {"blocks": 3}).blocks == 3
    assert check_options("sanity", {"blocks": "all"}).blocks is None
    with pytest.raises(SpecError, match=r"evaluation\.options\.sanity: field 'blocks'"):
        check_options("sanity", {"blocks": 0})
    with pytest.raises(
        SpecError, match=r"evaluation\.options\.sanity: unknown field 'depth'; valid fields: blocks"
    ):
        check_options("sanity", {"depth": 2})
    with pytest.raises(SpecError, match=r"field 'independent' should be bool, got 'yes'"):
        check_options("sanity", {"independent": "yes"})


def test_images_and_similarities_narrow_the_curve() -> None:
    options = {"blocks": 2, "images": 2, "similarities": ["ssim"]}
    result = CHECKS.get("sanity")().run(context([loaded("pilot", 0)], (GRADCAM,), options))
    table = result.tables["sanity"]
    assert set(table["similarity"]) == {"ssim", PROFILE_SPEARMAN}
    assert (table["n_images"] == 2).all()
    # the drop reads its own similarities whatever the curve shows
    assert np.isfinite(result.summary[["sanity_drop", "sanity_drop_signed"]].to_numpy(float)).all()
    assert result.per_image is not None and len(result.per_image) == 2
    with pytest.raises(UnknownNameError, match="valid: hog, spearman, spearman_abs, ssim"):
        check_options("sanity", {"similarities": ["spearman_abs", "pearson"]})
    with pytest.raises(SpecError, match=r"options\.sanity: field 'images'"):
        check_options("sanity", {"images": 0})


def test_sources_make_each_randomised_copy_once() -> None:
    model = loaded("pilot", 0)
    sources = Sources(model)
    source = Source(("head.7",), 0)
    assert sources.module(source) is sources.module(Source(("head.7",), 0))
    assert sources.module(Source()) is model.module
    with pytest.raises(Exception, match="no seed twin"):
        sources.module(Source(twin=True))
