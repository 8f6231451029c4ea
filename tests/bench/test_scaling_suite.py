"""The scaling suite: its extrapolation and targets against hand computations, and the quick suite through the CLI.

Timing figures are only checked against one another (a ratio is its seconds ÷ the inference's), never
against a clock.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gradsum.bench import figure_path
from gradsum.bench.suites import scaling
from gradsum.bench.suites.attribution import INFERENCE
from gradsum.cli import main
from gradsum.models import build_model


def test_extrapolate_follows_the_power_law_of_the_two_largest_points() -> None:
    # 1 s at 1,000 tokens and 8 s at 2,000: N³, so 64 s at 4,000; the smallest point does not enter
    assert scaling.extrapolate([(500, 99.0), (2000, 8.0), (1000, 1.0)], 4000) == pytest.approx(64.0)
    # one point: N³ assumed
    assert scaling.extrapolate([(1000, 2.0)], 2000) == pytest.approx(16.0)
    # noise that says "cheaper with more tokens" is held at linear
    assert scaling.extrapolate([(1000, 2.0), (2000, 1.5)], 4000) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="measured"):
        scaling.extrapolate([], 10)


def _record(tokens: int, batch: int, seconds: float) -> dict[str, Any]:
    return {
        "tokens": tokens,
        "depth": 12,
        "batch": batch,
        "large": False,
        "ops": {"chefer_lrp": {"seconds": seconds}},
    }


def test_the_gate_extrapolates_per_frame_and_records_its_reason() -> None:
    large = scaling.Point((1024, 2048), 1, 12, large=True)
    # per frame 1 s at 1,153 tokens (batch 1) and 2 s at 2,049; the 73-token batch-8 point is ignored
    earlier = [_record(73, 8, 0.8), _record(1153, 1, 1.0), _record(2049, 1, 2.0)]
    gate = scaling._gate("chefer_lrp", large, earlier)
    exponent = math.log(2.0) / math.log(2049 / 1153)
    assert gate["estimated_seconds"] == pytest.approx(2.0 * (8193 / 2049) ** exponent)
    assert gate["run"] is (gate["estimated_seconds"] <= scaling.GATED_BUDGET_S)
    slow = scaling._gate("chefer_lrp", large, [_record(1153, 1, 10.0), _record(2049, 1, 100.0)])
    assert slow["run"] is False and slow["why"].startswith("skipped: estimated")


def test_a_time_target_is_not_met_when_the_ratio_grows_with_tokens() -> None:
    flat = [{**_record(n, 1, 1.0), "ops": {"rollout": {"ratio": 1.1}}} for n in (73, 289, 1153)]
    growing = [{**_record(n, 1, 1.0), "ops": {"rollout": {"ratio": r}}} for n, r in ((73, 0.5), (1153, 1.2))]
    assert scaling._time_target("rollout", 1.3, flat, 12)["met"] is True
    target = scaling._time_target("rollout", 1.3, growing, 12)
    assert target["slope"] == pytest.approx(math.log(1.2 / 0.5) / math.log(1153 / 73))
    assert target["met"] is False


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("scaling") / "bench.json"
    assert main(["bench", "--suite", "scaling", "--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text()), out


def test_quick_suite_records_every_op_at_every_point(quick: tuple[dict[str, Any], Path]) -> None:
    results, _ = quick
    figures = results["suites"]["scaling"]
    grid = scaling.QUICK
    assert results["machine"]["torch"]
    assert [(p["tokens"], p["depth"], p["batch"]) for p in figures["points"]] == [
        (point.tokens, point.depth, point.batch) for point in grid.points
    ]
    for point in figures["points"]:
        assert set(point["ops"]) == set(grid.ops)
        assert (
            point["attention_bytes"]
            == point["batch"] * scaling.named_shape()["num_heads"] * point["tokens"] ** 2 * 4
        )
        reference = point["ops"][INFERENCE]
        for figures_of_op in point["ops"].values():
            assert figures_of_op["ratio"] == pytest.approx(figures_of_op["seconds"] / reference["seconds"])
            bound = scaling.MEMORY_HEADROOM * reference["peak_bytes"] + point["attention_bytes"]
            assert figures_of_op["peak_ratio"] == pytest.approx(figures_of_op["peak_bytes"] / bound)
            assert figures_of_op["peak_bytes"] > 0
    # 73 tokens: 96×192 is a 6×12 patch grid plus the class token
    assert figures["points"][0]["tokens"] == 73 and figures["points"][-1]["tokens"] == 289


def test_quick_suite_states_its_targets_as_booleans(quick: tuple[dict[str, Any], Path]) -> None:
    targets = quick[0]["suites"]["scaling"]["targets"]
    assert {"gradrollout_time", "large_frame"} <= set(targets)
    assert all(isinstance(target["met"], bool) for target in targets.values())
    # the quick grid has no gradcam, so the large-frame target cannot be met
    runs = {row["method"]: row for row in targets["large_frame"]["runs"]}
    assert runs["gradcam"]["skipped"] == "not in this grid" and targets["large_frame"]["met"] is False
    assert runs["gradrollout"]["tokens"] == 289 and runs["gradrollout"]["seconds"] > 0


def test_quick_suite_draws_a_png_beside_the_json(quick: tuple[dict[str, Any], Path]) -> None:
    _, out = quick
    path = figure_path(out, "scaling")
    assert path == out.parent / "bench.scaling.png"
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"


def test_a_full_depth_point_builds_the_named_size() -> None:
    point = next(p for p in scaling.FULL.points if p.depth == scaling.DEPTH)
    assert scaling.named_shape()["depth"] == scaling.DEPTH
    ours = build_model("vit", point.image_size, **point.vit())
    named = build_model("vit", point.image_size, size=scaling.SIZE_NAME)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in named.state_dict().items()
    }
