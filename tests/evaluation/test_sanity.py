"""The sanity check on an untrained PilotNet: step 0 is the model itself, nulls fail, gradients change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradsum.errors import SpecError, UnknownNameError
from gradsum.evaluation.base import CHECKS, CheckResult, EvaluationContext, PlannedMethod
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.sanity import (
    PROFILE_SPEARMAN,
    SANITY_THRESHOLD,
    SanityCheck,
    SanityOptions,
    cascading_figure,
    data_randomisation,
)
from gradsum.evaluation.similarity import SIMILARITIES
from gradsum.models import build_model
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import ArrayTruthSet
from gradsum.truthsets.synthetic.render import IDS

SIZE = (64, 128)
GRADCAM = PlannedMethod("gradcam", "gradcam")
SALIENCY = PlannedMethod("saliency", "saliency")
NULL_LABELS = {method.label for method in NULL_EXPLAINERS}


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
def result() -> CheckResult:
    methods = (GRADCAM, SALIENCY, *NULL_EXPLAINERS)
    return CHECKS.get("sanity")().run(context([loaded("pilot", 0)], methods, {"independent": True}))


def test_step_zero_is_the_model_against_itself(result: CheckResult) -> None:
    table = result.tables["sanity"]
    first = table[table["step"] == 0]
    assert set(first["mode"]) == {"cascading", "independent"}
    assert set(first["similarity"]) == {*SIMILARITIES.names(), PROFILE_SPEARMAN}
    np.testing.assert_allclose(first["value"].to_numpy(float), 1.0)
    assert set(first["n_images"]) == {6}


def test_steps_name_the_top_three_blocks_in_cascade_order(result: CheckResult) -> None:
    table = result.tables["sanity"]
    for mode in ("cascading", "independent"):
        steps = table[table["mode"] == mode][["step", "block"]].drop_duplicates().sort_values("step")
        assert steps["step"].tolist() == [0, 1, 2, 3]
        assert steps["block"].tolist() == ["original", "head.7", "head.5", "head.3"]
    expected_rows = len(NULL_EXPLAINERS) + 2
    assert len(table) == expected_rows * 2 * 4 * (len(SIMILARITIES) + 1)


def test_null_explainers_fail_and_gradcam_changes(result: CheckResult) -> None:
    summary = result.summary.set_index("method")
    assert set(summary["sanity_blocks"]) == {3}
    # the null explainers ignore the model: their maps survive randomisation (uniform: constant maps)
    for label in NULL_LABELS:
        assert summary.loc[label, "sanity_similarity"] == pytest.approx(1.0)
        assert summary.loc[label, "sanity_similarity_ci_high"] >= SANITY_THRESHOLD
    assert summary.loc["gradcam", "sanity_similarity"] < 0.99
    (criterion,) = result.criteria
    assert (criterion.column, criterion.higher_is_better, criterion.threshold) == (
        "sanity_similarity",
        False,
        SANITY_THRESHOLD,
    )


def test_saliency_differs_on_the_fully_randomised_model() -> None:
    model = loaded("pilot", 0)
    result = SanityCheck().run(context([model], (SALIENCY,), {"blocks": "all"}))
    table = result.tables["sanity"]
    rows = table[table["similarity"] == "spearman_abs"]
    assert rows["block"].iloc[-1] == "features.0" and rows["step"].max() == 9
    assert rows["value"].iloc[-1] < 0.9
    assert result.summary["sanity_blocks"].tolist() == [9]


def test_data_randomisation_compares_each_model_with_its_twin() -> None:
    model, twin = loaded("pilot", 0), loaded("pilot_shuffled", 1)
    ctx = context([model], (SALIENCY, NULL_EXPLAINERS[1]), {"blocks": 1, "shuffled": {"pilot": twin}})
    table = data_randomisation(ctx, {"pilot": twin})
    assert set(table["mode"]) == {"data"} and set(table["block"]) == {"pilot_shuffled"}
    values = table[table["similarity"] == "spearman_abs"].set_index("method")["value"]
    assert values["null:uniform"] == 1.0 and values["saliency"] < 0.9
    assert "sanity_data" in SanityCheck().run(ctx).tables
    with pytest.raises(SpecError, match="shuffled: no evaluated model other"):
        data_randomisation(ctx, {"other": twin})


def test_figure_plots_blocks_in_cascade_order_with_nulls_dashed(result: CheckResult) -> None:
    figure = result.figures["sanity_pilot"]
    assert figure is not None
    redrawn = cascading_figure(result.tables["sanity"], "pilot")
    abs_panel, signed_panel = redrawn.axes
    ticks = [label.get_text() for label in abs_panel.get_xticklabels()]
    assert ticks == ["original", "head.7", "head.5", "head.3"]
    styles = {line.get_label(): line.get_linestyle() for line in signed_panel.get_lines()}
    assert {styles[label] for label in NULL_LABELS} == {"--"}
    assert styles["gradcam"] == "-"


def test_options_are_checked() -> None:
    assert SanityOptions.from_options({}).blocks == 3
    assert SanityOptions.from_options({"blocks": "all"}).blocks is None
    with pytest.raises(SpecError, match=r"options\.sanity\.blocks"):
        SanityOptions.from_options({"blocks": 0})
    with pytest.raises(SpecError, match="unknown option depth"):
        SanityOptions.from_options({"depth": 2})


def test_images_and_similarities_narrow_the_check() -> None:
    options = {"images": 2, "similarities": ["spearman_abs"]}
    table = CHECKS.get("sanity")().run(context([loaded("pilot", 0)], (GRADCAM,), options)).tables["sanity"]
    assert set(table["similarity"]) == {"spearman_abs", PROFILE_SPEARMAN}
    assert (table["n_images"] == 2).all()
    with pytest.raises(SpecError, match="must include 'spearman_abs'"):
        SanityOptions.from_options({"similarities": ["ssim"]})
    with pytest.raises(UnknownNameError, match="valid: hog, spearman, spearman_abs, ssim"):
        SanityOptions.from_options({"similarities": ["spearman_abs", "pearson"]})
    with pytest.raises(SpecError, match=r"options\.sanity\.images"):
        SanityOptions.from_options({"images": 0})


def test_null_explainers_give_the_same_maps_on_a_randomised_model() -> None:
    """The premise of reusing a null's original maps for every randomised variant."""
    from gradsum.evaluation.base import planned_maps
    from gradsum.evaluation.randomise import cascading

    model = loaded("pilot", 0)
    rng = np.random.default_rng(1)
    batch = torch.from_numpy(rng.random((3, 3, *SIZE), dtype=np.float32))
    labels = torch.from_numpy(
        rng.choice(np.array(sorted(set(IDS.values())), dtype=np.uint8), size=(3, *SIZE))
    )
    _, randomised = list(cascading(model.module, None, seed=0))[-1]
    for null in NULL_EXPLAINERS:
        original = planned_maps(model, null, batch, labels, "direction")
        assert torch.equal(original, planned_maps(model, null, batch, labels, "direction", module=randomised))
