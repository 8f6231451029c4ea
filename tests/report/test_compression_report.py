"""The Compression section and figures: hand-made study tables in a results folder, checked against the numbers
chosen here (onsets, verdicts, intervals) in the page, the figure and the paper set."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import MODELS, add_tables, write_results

from gradsum.cli import main
from gradsum.contract import (
    COMPRESSION_AGREEMENT,
    COMPRESSION_LEVELS,
    COMPRESSION_ONSET,
    TableSchema,
)
from gradsum.errors import ResultsError
from gradsum.pipeline.compression import onset_rows
from gradsum.report import load_results, write_report
from gradsum.report.compression import (
    UNLEVELLED_X,
    compression_figure,
    compression_section,
    headline_sentence,
    onset_sentence,
    parents,
)
from gradsum.report.writer import COMPRESSION_STEM

STUDY_MODELS = {"pilotnet": MODELS["pilotnet"], "vit": ("vit", ("gradcam", "gradrollout"))}
#: variant → (parent, compression, level, metric change, its CI).
VARIANTS = {
    "pilotnet_magnitude_0.5": ("pilotnet", "magnitude", 0.5, -0.005, (-0.012, 0.002)),
    "pilotnet_magnitude_0.9": ("pilotnet", "magnitude", 0.9, -0.2, (-0.26, -0.15)),
    "pilotnet_int8_dynamic": ("pilotnet", "int8_dynamic", math.nan, 0.0, (-0.003, 0.003)),
    "vit_magnitude_0.5": ("vit", "magnitude", 0.5, -0.01, (-0.03, 0.01)),
    "vit_magnitude_0.9": ("vit", "magnitude", 0.9, -0.015, (-0.03, -0.001)),
}
#: (variant, method) → (Spearman, CI low, CI high). pilotnet drifts at 0.5 while its R² holds (profile first);
#: the ViT's GradCAM profile falls below the floor at 0.9 only, where its metric is not shown to drop.
SPEARMAN = {
    ("pilotnet_magnitude_0.5", "gradcam"): (0.8, 0.7, 0.85),
    ("pilotnet_magnitude_0.9", "gradcam"): (0.3, 0.1, 0.5),
    ("pilotnet_int8_dynamic", "gradcam"): (1.0, 0.98, 1.0),
    ("vit_magnitude_0.5", "gradcam"): (0.97, 0.93, 0.99),
    ("vit_magnitude_0.9", "gradcam"): (0.7, 0.6, 0.8),
    ("vit_magnitude_0.5", "gradrollout"): (0.99, 0.96, 1.0),
    ("vit_magnitude_0.9", "gradrollout"): (0.95, 0.91, 0.98),
}
FLOOR, SHIFT_TOLERANCE, METRIC_TOLERANCE = 0.9, 0.05, 0.02


def _levels() -> pd.DataFrame:
    rows = []
    for model, (parent, compression, level, change, (low, high)) in VARIANTS.items():
        rows.append(
            {"model": model, "parent": parent, "compression": compression, "level": level}
            | {"sparsity": 0.0 if math.isnan(level) else level, "parameters": 1000, "bytes": 4000}
            | {"images": 1000, "metric": "r2", "parent_value": 0.98, "value": 0.98 + change}
            | {"change": change, "change_ci_low": low, "change_ci_high": high, "tolerance": METRIC_TOLERANCE}
            | {"dropped": high < -METRIC_TOLERANCE}
        )
    return pd.DataFrame(rows)


def _agreement() -> pd.DataFrame:
    rows = []
    for (model, method), (rho, low, high) in SPEARMAN.items():
        parent, compression, level, *_ = VARIANTS[model]
        drifted = high < FLOOR
        rows.append(
            {"model": model, "parent": parent, "compression": compression, "level": level, "method": method}
            | {"spearman": rho, "spearman_ci_low": low, "spearman_ci_high": high, "classes": 6, "lost": 0}
            | {"statistic": "mass_share", "shift_class": "sky", "shift": 0.01}
            | {"shift_ci_low": 0.0, "shift_ci_high": 0.02, "shift_images": 4}
            | {"floor": FLOOR, "tolerance": SHIFT_TOLERANCE, "drifted": drifted}
            | {"gate": "fail" if drifted else "pass", "gate_failed": "spearman" if drifted else ""}
        )
    return pd.DataFrame(rows)


STUDY: dict[TableSchema, pd.DataFrame] = {
    COMPRESSION_LEVELS: _levels(),
    COMPRESSION_AGREEMENT: _agreement(),
    COMPRESSION_ONSET: pd.DataFrame(onset_rows(_agreement(), _levels())),
}


def add_compression_tables(folder: Path) -> Path:
    """The study's tables written into a results folder and its manifest, as a run would."""
    return add_tables(folder, STUDY)


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_results(tmp_path_factory.mktemp("compression") / "results" / "run", models=STUDY_MODELS)
    return add_compression_tables(folder)


def test_the_onsets_are_the_lowest_levels_shown() -> None:
    onset = STUDY[COMPRESSION_ONSET].set_index(["parent", "compression", "method"])
    pilot = onset.loc[("pilotnet", "magnitude", "gradcam")]
    assert (pilot["drift_level"], pilot["drop_level"], pilot["order"]) == (0.5, 0.9, "profile first")
    vit = onset.loc[("vit", "magnitude", "gradcam")]
    assert vit["drift_level"] == 0.9 and math.isnan(vit["drop_level"]) and vit["order"] == "profile first"
    assert onset.loc[("vit", "magnitude", "gradrollout"), "order"] == "neither"
    assert onset.loc[("pilotnet", "int8_dynamic", "gradcam"), "order"] == "neither"


def test_the_sentences_say_what_moved_first(study_folder: Path) -> None:
    onset = load_results(study_folder).compression_onset
    assert onset is not None
    rows = onset.set_index(["parent", "compression", "method"])
    pilot = dict(rows.loc[("pilotnet", "magnitude", "gradcam")]) | {
        "parent": "pilotnet",
        "compression": "magnitude",
        "method": "gradcam",
    }
    assert onset_sentence(pilot) == (
        "pilotnet · gradcam, magnitude: the profile was first shown to drift at level 0.5 "
        "(pilotnet_magnitude_0.5), the task metric first shown to drop at level 0.9 (pilotnet_magnitude_0.9): "
        "profile first."
    )
    # read back from the CSV, an empty model cell is a missing value: the sentence still says "none shown"
    rollout = dict(rows.loc[("vit", "magnitude", "gradrollout")]) | {
        "parent": "vit",
        "compression": "magnitude",
        "method": "gradrollout",
    }
    assert "neither the profile nor the task metric was shown to move at the 2 level(s)" in onset_sentence(
        rollout
    )
    assert headline_sentence(onset) == (
        "Does the profile drift before the task metric drops? Over 4 parent × compression × method series: "
        "2 profile first, 2 neither (first level at which each is shown beyond its threshold by its 95% CI)."
    )


def test_the_section_lists_every_variant_with_its_intervals(study_folder: Path) -> None:
    html = compression_section(load_results(study_folder))
    assert "-0.200 [-0.260, -0.150]" in html  # pilotnet at 0.9: the metric change and its CI
    assert "0.800 [0.700, 0.850]" in html  # pilotnet at 0.5: Spearman and its CI
    assert '<span class="fail">fail (spearman)</span>' in html
    # a row per variant (levels) and per variant × method (agreement), and the agreement table's header
    assert html.count("<tr>") == len(VARIANTS) + len(SPEARMAN) + 1


def test_the_page_has_the_section_and_its_figures(study_folder: Path) -> None:
    page = write_report(study_folder).read_text()
    assert 'id="compression"' in page and 'href="#compression"' in page
    for parent in ("pilotnet", "vit"):
        assert (study_folder / "plots" / f"{COMPRESSION_STEM}_{parent}.png").is_file()


def test_a_folder_without_the_study_has_no_section(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "plain", models=STUDY_MODELS)
    results = load_results(folder)
    assert compression_section(results) == ""
    assert 'id="compression"' not in write_report(folder).read_text()
    with pytest.raises(ResultsError, match=r"compression_agreement\.csv: missing or empty"):
        compression_figure(results, "pilotnet")


def test_the_figure_draws_each_series_with_its_intervals(study_folder: Path) -> None:
    results = load_results(study_folder)
    assert parents(results) == ["pilotnet", "vit"]
    fig = compression_figure(results, "vit")
    metric, spearman, shift = fig.axes
    # the metric panel: one series (magnitude at 0.5 and 0.9); the tolerance dashed at -0.02
    lines = [
        line for line in metric.get_lines() if len(line.get_xdata()) == 2 and line.get_linestyle() != "--"
    ]
    assert any(list(line.get_ydata()) == [-0.01, -0.015] for line in lines)
    assert any(list(line.get_ydata()) == [-METRIC_TOLERANCE] * 2 for line in metric.get_lines())
    assert any(list(line.get_ydata()) == [FLOOR] * 2 for line in spearman.get_lines())
    assert {tuple(line.get_ydata()) for line in shift.get_lines()} >= {
        (-SHIFT_TOLERANCE,) * 2,
        (SHIFT_TOLERANCE,) * 2,
    }
    # the int8 variant of pilotnet stands right of the level axis, labelled by its compression
    pilot = compression_figure(results, "pilotnet")
    labels = [t.get_text() for t in pilot.axes[0].get_xticklabels()]
    assert labels[-1] == "int8_dynamic" and pilot.axes[0].get_xticks()[-1] == pytest.approx(UNLEVELLED_X)
    with pytest.raises(ResultsError, match=r"parent: no compressed model of 'hybrid'; valid: pilotnet, vit"):
        compression_figure(results, "hybrid")
    with pytest.raises(ResultsError, match=r"size: 'wide'"):
        compression_figure(results, "vit", "wide")


def test_the_paper_set_holds_one_figure_per_parent(study_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "paper"
    assert main(["figures", str(study_folder), "--out", str(out)]) == 0
    for parent in ("pilotnet", "vit"):
        for fmt in ("pdf", "svg", "png"):
            assert (out / f"{COMPRESSION_STEM}_{parent}.{fmt}").is_file()
