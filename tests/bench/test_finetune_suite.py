from __future__ import annotations

import pytest

from gradsum.bench import discover_suites


def test_the_finetune_suite_tunes_the_default_vit_and_reports_its_cost() -> None:
    figures = discover_suites().get("finetune", "suite").run(True, "cpu")
    assert (figures["model"], figures["samples"], figures["steps"], figures["batch_size"]) == (
        "vit",
        50,
        10,
        8,
    )
    assert figures["seconds_per_step"] == pytest.approx(figures["seconds_total"] / 10, abs=0.01)
    assert figures["ratio_to_plain_steps"] == pytest.approx(
        figures["seconds_total"] / (figures["plain_seconds_per_step"] * 10), rel=0.1
    )
