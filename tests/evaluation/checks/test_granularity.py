"""The granularity sweep: every depth of each model family, figures equal to the single-layer checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradsum.errors import SpecError, UnknownNameError
from gradsum.evaluation import CHECKS, check_options
from gradsum.evaluation.agreement import agreement_table
from gradsum.evaluation.base import EvaluationContext, PlannedMethod
from gradsum.evaluation.checks.granularity import LAYERS, GranularityOptions
from gradsum.evaluation.mask_metrics import mass_accuracy
from gradsum.evaluation.referee import cached_causal_effects, gradsum_rows
from gradsum.models import build_model, model_family
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import open_truthset
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)


def _loaded(name: str, architecture: str, task: str, **arch: object) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(name, build_model(architecture, SIZE, **arch).eval(), {}, task, SIZE)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruthSet:
    root = generate(Path(tmp_path_factory.mktemp("granularity")) / "synth", count=60, seed=5, size=SIZE)
    truthset = open_truthset(root, "test")
    assert isinstance(truthset, SyntheticTruthSet)
    return truthset


def _context(
    truthset: SyntheticTruthSet, models: list[LoadedModel], methods: tuple[str, ...]
) -> EvaluationContext:
    return EvaluationContext(
        truthset=truthset,
        indices=range(len(truthset)),
        models=models,
        plan={m.name: [] for m in models},
        targets={"steering": "direction", "obstacle": "positive"},
        batch_size=4,
        n_resamples=50,
        options={"granularity": {"methods": list(methods)}},
    )


def test_layers_run_shallow_to_deep_for_every_family() -> None:
    pilot = build_model("pilotnet", SIZE)
    assert LAYERS.get(model_family(pilot))(pilot) == [f"features.{i}" for i in range(5)]
    vit = build_model("vit", SIZE, embed_dim=32, depth=2, num_heads=2)
    assert LAYERS.get(model_family(vit))(vit) == ["blocks.0.norm1", "blocks.1.norm1"]
    hybrid = build_model("hybrid_vit", SIZE, embed_dim=32, depth=2, num_heads=2)
    layers = LAYERS.get(model_family(hybrid))(hybrid)
    assert layers[-2:] == ["blocks.0.norm1", "blocks.1.norm1"]
    assert layers[0].startswith("patch_embed.backbone") and len(layers) > 3


def test_sweep_equals_the_single_layer_figures(synthetic: SyntheticTruthSet) -> None:
    model = _loaded("pilot", "pilotnet", "steering")
    context = _context(synthetic, [model], ("gradcam",))
    table = CHECKS.get("granularity")().run(context).tables["granularity"]
    assert list(table["layer"]) == [f"features.{i}" for i in range(5)]
    assert list(table["depth"]) == list(range(5))
    # the grid shrinks with depth: each conv stage has fewer cells
    cells = [int(g.split("x")[0]) * int(g.split("x")[1]) for g in table["grid"]]
    assert cells == sorted(cells, reverse=True)

    # oracle: the causal agreement of GradCAM planned at one layer, and its mass on the cause masks
    layer = "features.2"
    planned = PlannedMethod("gradcam", label=f"gradcam@{layer}", layer=layer)
    single = _context(synthetic, [model], ())
    single.plan = {"pilot": [planned]}
    effects = cached_causal_effects(single, "inpaint")
    expected = agreement_table(gradsum_rows(single), effects, synthetic.causes, 50, 0).iloc[0]
    row = table.set_index("layer").loc[layer]
    assert row["agreement"] == pytest.approx(expected["spearman"], nan_ok=True)
    assert row["agreement_ci_low"] == pytest.approx(expected["spearman_ci_low"], nan_ok=True)

    masses = []
    for _, images, labels, chunk in single.batches():
        batch = single.model_input(model, images)
        maps = single.maps(model, planned, batch, torch.from_numpy(np.stack(labels))).detach()
        for row_index, index in enumerate(chunk):
            mask = synthetic.cause_mask(index, "steering")
            if mask is not None:
                masses.append(
                    float(mass_accuracy(maps[row_index : row_index + 1], torch.from_numpy(mask)[None])[0])
                )
    assert row["cause_mass"] == pytest.approx(np.mean(masses))
    assert int(row["n_images"]) == len(masses)


def test_obstacle_masses_only_on_positive_images(synthetic: SyntheticTruthSet) -> None:
    model = _loaded("obstacle", "compact_cnn", "obstacle")
    table = CHECKS.get("granularity")().run(_context(synthetic, [model], ("layercam",))).tables["granularity"]
    positives = sum(synthetic.cause_mask(i, "obstacle") is not None for i in range(len(synthetic)))
    assert set(table["n_images"]) == {positives}
    assert isinstance(table, pd.DataFrame) and (table["method"] == "layercam").all()


def test_options_are_checked() -> None:
    assert check_options("granularity", {}) == GranularityOptions(("gradcam", "layercam", "hirescam"))
    with pytest.raises(
        SpecError, match=r"options\.granularity: unknown field 'layers'; valid fields: methods"
    ):
        check_options("granularity", {"layers": 3})
    with pytest.raises(UnknownNameError, match="valid: cnn, hybrid, vit"):
        LAYERS.get("rnn")
