"""The precision suite: its measures against hand computations, and the quick suite's JSON through the CLI.

Timings are only checked to be positive, never against a clock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from gradsum.attribution import METHODS
from gradsum.attribution.precision import LRP_DENOMINATORS
from gradsum.bench.suites import precision
from gradsum.cli import main
from gradsum.models import load_spec, save_model

ROAD, SIDEWALK = 7, 8


def test_identical_maps_agree_and_a_changed_class_moves_its_profile_by_hand() -> None:
    oracle = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    labels = torch.tensor([[[ROAD, ROAD], [SIDEWALK, SIDEWALK]]], dtype=torch.uint8)
    same = precision.compare_maps(oracle, oracle.clone(), labels)
    assert same == pytest.approx({"spearman_median": 1.0, "spearman_min": 1.0, "profile_max_abs_diff": 0.0})
    # one sidewalk pixel 3 → 5: the pixel order holds, the sidewalk's mean score moves from 2.5 to 3.5
    moved = precision.compare_maps(oracle, torch.tensor([[[0.0, 1.0], [2.0, 5.0]]]), labels)
    assert moved == pytest.approx({"spearman_median": 1.0, "spearman_min": 1.0, "profile_max_abs_diff": 1.0})
    reversed_ = precision.compare_maps(oracle, -oracle, labels)
    assert reversed_["spearman_median"] == pytest.approx(-1.0)


def test_a_method_family_is_the_module_that_defines_it() -> None:
    assert precision.family_of("gradcam") == "fastcam"
    assert precision.family_of("lib:gradcam") == "cam"
    assert precision.family_of("lrp_epsilon_plus") == "lrp"
    assert precision.family_of("rollout") == "attention"


def _dict_rows(figures: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (model, method, row)
        for model, entry in figures["models"].items()
        for method, row in entry["methods"].items()
        if isinstance(row, dict)
    ]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The quick suite through `gradsum bench`, with a checkpoint for PilotNet and none for the ViT."""
    root = tmp_path_factory.mktemp("precision_suite")
    spec = load_spec("pilotnet")
    torch.manual_seed(1)
    card = save_model(spec.build().eval(), spec, root / "models" / "pilotnet")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADSUM_BENCH_MODELS", str(root / "models"))
        out = root / "bench.json"
        assert main(["bench", "--suite", "precision", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    figures: dict[str, Any] = json.loads(out.read_text())["suites"]["precision"]
    figures["checkpoint_sha256"] = card.weights_sha256
    return figures


def test_quick_suite_covers_its_models_and_methods(quick: dict[str, Any]) -> None:
    scale = precision.QUICK
    assert (quick["oracle"], quick["precisions"], quick["images"]) == ("fp32", ["bf16"], scale.images)
    # the JSON is written with sorted keys
    assert sorted(quick["models"]) == sorted(scale.models)
    pilotnet, vit = quick["models"]["pilotnet"], quick["models"]["vit"]
    assert (
        pilotnet["weights"].startswith("checkpoint: ")
        and quick["checkpoint_sha256"][:12] in pilotnet["weights"]
    )
    assert vit["weights"].startswith("untrained: spec vit with random weights (seed 0); no checkpoint at ")
    assert (pilotnet["family"], pilotnet["task"], vit["family"]) == ("cnn", "steering", "vit")
    assert scale.methods is not None
    for entry in quick["models"].values():
        applicable = [m for m in scale.methods if entry["family"] in METHODS.get(m).applies_to]
        assert sorted(entry["methods"]) == sorted(applicable)


def test_refused_methods_carry_their_reason(quick: dict[str, Any]) -> None:
    refused = f"refused: {LRP_DENOMINATORS}"
    assert quick["models"]["pilotnet"]["methods"]["lrp_epsilon_plus"] == refused
    assert quick["models"]["vit"]["methods"]["attnlrp"] == refused


def test_quick_suite_figures_are_in_their_ranges(quick: dict[str, Any]) -> None:
    rows = _dict_rows(quick)
    assert {method for _, method, _ in rows} == {"gradcam", "rollout", "gradrollout", "saliency"}
    for _, method, row in rows:
        figures = row["bf16"]
        assert row["family"] == precision.family_of(method)
        assert -1.0 <= figures["spearman_min"] <= figures["spearman_median"] <= 1.0
        # min-max maps lie in [0, 1], and so does a class's mean score
        assert 0.0 <= figures["profile_max_abs_diff"] <= 1.0
        assert row["fp32_s"] > 0 and figures["seconds"] > 0
        assert figures["time_ratio"] == pytest.approx(figures["seconds"] / row["fp32_s"])


def test_targets_judge_every_cam_and_attention_row(quick: dict[str, Any]) -> None:
    targets = quick["targets"]
    assert targets["spearman_median_at_least"] == precision.TARGET_SPEARMAN
    judged = [
        (model, method, row["bf16"]["spearman_median"])
        for model, method, row in _dict_rows(quick)
        if row["family"] in precision.TARGET_FAMILIES
    ]
    missed = [
        {"model": m, "method": n, "spearman_median": rho}
        for m, n, rho in judged
        if rho < precision.TARGET_SPEARMAN
    ]
    assert (targets["bf16"]["rows"], targets["bf16"]["met"]) == (len(judged), len(judged) - len(missed))
    assert sorted(targets["bf16"]["missed"], key=str) == sorted(missed, key=str)
