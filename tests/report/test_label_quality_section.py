"""The Label quality section and figure: hand-made study tables in a results folder, checked against the
numbers chosen here (thresholds, verdict changes, category spreads) in the page, the figure and the paper set."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from report_fixtures import MODELS, add_tables, write_results

from gradsum.aggregation.label_quality import agreement_threshold
from gradsum.cli import main
from gradsum.contract import (
    LABEL_AGREEMENT,
    LABEL_CATEGORIES,
    LABEL_CLASSES,
    LABEL_LEVELS,
    LABEL_THRESHOLDS,
    LABEL_VERDICTS,
    TableSchema,
)
from gradsum.errors import ResultsError
from gradsum.report import figures, load_results, write_report
from gradsum.report.html import render_html
from gradsum.report.label_quality import (
    agreement_figure,
    category_spread,
    headline_sentence,
    label_quality_section,
    largest_class_changes,
    threshold_sentence,
    verdict_counts,
)
from gradsum.report.plots import COLUMN_WIDTHS
from gradsum.report.writer import LABEL_AGREEMENT_STEM, pending_plots

#: Two models, three profiles; without trust tables each model's headline method is GradCAM.
STUDY_MODELS = {"pilotnet": MODELS["pilotnet"], "vit": ("vit", ("gradcam", "gradrollout"))}
FLOOR = 0.9
#: level → (kind, mIoU); one level of each kind.
LEVELS = {
    "erode_k1": ("erode", 0.9),
    "dilate_k2": ("dilate", 0.8),
    "coarse_t2": ("coarse", 0.7),
    "pseudo_40": ("pseudo", 0.6),
}
#: (model, method) → the Spearman CI lower bound at each level, in `LEVELS` order. pilotnet · gradcam fails
#: at 0.7 and 0.6 (threshold 0.7); vit · gradcam fails at 0.8 alone (threshold 0.8, the headline's highest);
#: vit · gradrollout agrees everywhere (no threshold, down to 0.6).
LOWS = {
    ("pilotnet", "gradcam"): (0.95, 0.92, 0.85, 0.80),
    ("vit", "gradcam"): (0.95, 0.85, 0.93, 0.91),
    ("vit", "gradrollout"): (0.97, 0.95, 0.94, 0.92),
}
THRESHOLDS = {("pilotnet", "gradcam"): 0.7, ("vit", "gradcam"): 0.8, ("vit", "gradrollout"): math.nan}
#: level → the (model, method, criterion) verdicts that change there: 0, 1, 3 and 2 changes.
CHANGES = {
    "erode_k1": (),
    "dilate_k2": (("vit", "gradcam", "causal"),),
    "coarse_t2": (
        ("pilotnet", "gradcam", "causal"),
        ("pilotnet", "gradcam", "overall"),
        ("vit", "gradcam", "causal"),
    ),
    "pseudo_40": (("pilotnet", "gradcam", "localisation"), ("vit", "gradrollout", "overall")),
}
CRITERIA = ("causal", "localisation", "overall")


def _levels() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "level": level,
                "kind": kind,
                "description": f"{kind} labels",
                "details": "{}",
                "miou": miou,
                "pixel_accuracy": miou + 0.05,
                "void_share": 0.01,
                "held_out_miou": 0.65 if kind == "pseudo" else math.nan,
            }
            for level, (kind, miou) in LEVELS.items()
        ]
    )


def _agreement() -> pd.DataFrame:
    rows = []
    for (model, method), lows in LOWS.items():
        for (level, (_, miou)), low in zip(LEVELS.items(), lows, strict=True):
            rows.append(
                {"level": level, "model": model, "method": method, "miou": miou}
                | {
                    "spearman": min(low + 0.04, 1.0),
                    "spearman_ci_low": low,
                    "spearman_ci_high": min(low + 0.08, 1.0),
                }
                | {"classes": 6, "lost": 0}
            )
    return pd.DataFrame(rows)


def _thresholds() -> pd.DataFrame:
    rows = []
    for (model, method), threshold in THRESHOLDS.items():
        agreeing = [
            miou for (_, miou), low in zip(LEVELS.values(), LOWS[model, method], strict=True) if low >= FLOOR
        ]
        rows.append(
            {"model": model, "method": method, "agreement": FLOOR, "miou_threshold": threshold}
            | {"lowest_miou_agreeing": min(agreeing)}
        )
    return pd.DataFrame(rows)


def _verdicts() -> pd.DataFrame:
    rows = []
    for level, changed in CHANGES.items():
        for model, method in LOWS:
            for criterion in CRITERIA:
                moved = (model, method, criterion) in changed
                rows.append(
                    {
                        "level": level,
                        "model": model,
                        "method": method,
                        "role": "method",
                        "criterion": criterion,
                    }
                    | {"exact": "pass", "degraded": "fail" if moved else "pass", "changed": moved}
                )
    return pd.DataFrame(rows)


def _classes() -> pd.DataFrame:
    """Five class changes: sky at coarse_t2 moves most (−80%), road at pseudo_40 next (+50%); a class whose
    exact score is 0 (relative change infinite) is left out of the ranking."""
    rows = [
        ("coarse_t2", "pilotnet", "gradcam", "sky", 23, 0.5, 0.1, -0.4, -0.5, -0.3, -0.8),
        ("pseudo_40", "vit", "gradcam", "road", 7, 0.4, 0.6, 0.2, 0.1, 0.3, 0.5),
        ("erode_k1", "vit", "gradcam", "car", 26, 0.3, 0.33, 0.03, 0.0, 0.06, 0.1),
        ("dilate_k2", "vit", "gradrollout", "building", 11, 0.2, 0.19, -0.01, -0.02, 0.0, -0.05),
        ("dilate_k2", "pilotnet", "gradcam", "vegetation", 21, 0.0, 0.1, 0.1, 0.05, 0.15, math.inf),
    ]
    columns = ["level", "model", "method", "class", "class_id", "exact", "degraded", "change"]
    frame = pd.DataFrame(rows, columns=[*columns, "change_ci_low", "change_ci_high", "relative_change"])
    return frame.assign(images=4)


def _categories() -> pd.DataFrame:
    """flat: classes from 0.2 to 0.6 (they differ 3-fold under one score); nature: a class at 0 (no ratio)."""
    return pd.DataFrame(
        [
            ("pilotnet", "gradcam", "flat", 0.45, 2, 0.2, 0.6),
            ("pilotnet", "gradcam", "nature", 0.3, 2, 0.0, 0.5),
            ("vit", "gradcam", "sky", 0.7, 1, 0.7, 0.7),
        ],
        columns=["model", "method", "category", "score", "classes", "class_min", "class_max"],
    )


STUDY: dict[TableSchema, pd.DataFrame] = {
    LABEL_LEVELS: _levels(),
    LABEL_AGREEMENT: _agreement(),
    LABEL_THRESHOLDS: _thresholds(),
    LABEL_CLASSES: _classes(),
    LABEL_VERDICTS: _verdicts(),
    LABEL_CATEGORIES: _categories(),
}


def add_label_tables(folder: Path, tables: dict[TableSchema, pd.DataFrame] = STUDY) -> Path:
    """The study's tables written into a results folder and its manifest, as a run would."""
    return add_tables(folder, tables)


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_results(tmp_path_factory.mktemp("labels") / "results" / "run", models=STUDY_MODELS)
    return add_label_tables(folder)


@pytest.fixture(scope="module")
def page(study_folder: Path) -> str:
    return write_report(study_folder).read_text()


def _section(page: str) -> str:
    start = page.index('<section id="labels">')
    return page[start : page.index("</section>", start)]


def test_the_fixture_thresholds_are_the_studys_rule() -> None:
    agreement = _agreement()
    for (model, method), threshold in THRESHOLDS.items():
        rows = agreement[(agreement["model"] == model) & (agreement["method"] == method)]
        found = agreement_threshold(rows["miou"].to_numpy(), rows["spearman_ci_low"].to_numpy(), FLOOR)
        assert found == pytest.approx(threshold, nan_ok=True)


def test_the_section_leads_with_the_curve(page: str, study_folder: Path) -> None:
    section = _section(page)
    assert 'href="#labels"' in page and "<h2>Label quality</h2>" in section
    assert section.count('src="data:image/') == 1
    assert section.index("<img") < section.index("<p>")
    assert (study_folder / "plots" / f"{LABEL_AGREEMENT_STEM}.png").stat().st_size > 0


def test_each_profile_has_its_threshold_sentence(page: str) -> None:
    section = _section(page)
    assert (
        "pilotnet · gradcam: the profile agrees (Spearman CI lower bound ≥ 0.9) with labels of mIoU above "
        "0.700 (the 2 level(s) tested there); at label mIoU 0.700 its Spearman CI lower bound fell below 0.9."
    ) in section
    assert (
        "vit · gradcam: the profile agrees (Spearman CI lower bound ≥ 0.9) with labels of mIoU above 0.800 (the 1 level(s)"
        in section
    )
    assert (
        "vit · gradrollout: the profile agreed with the exact-label profile (Spearman CI lower bound ≥ 0.9) "
        "at every level tested, down to label mIoU 0.600."
    ) in section


def test_a_profile_failing_at_the_best_labels_tested_claims_no_threshold(study_folder: Path) -> None:
    # pilotnet · gradcam now falls below the floor at the best level too (mIoU 0.9): nothing tested agrees above it
    agreement = _agreement()
    first = (agreement["model"] == "pilotnet") & (agreement["level"] == "erode_k1")
    agreement.loc[first, "spearman_ci_low"] = 0.85
    thresholds = _thresholds().assign(miou_threshold=[0.9, 0.8, math.nan])
    row = thresholds.iloc[0].to_dict()
    assert threshold_sentence(row, agreement) == (
        "pilotnet · gradcam: at label mIoU 0.900 its Spearman CI lower bound fell below 0.9, and no better "
        "labels were tested: they must be better than mIoU 0.900, by how much this study cannot tell."
    )
    assert headline_sentence(load_results(study_folder), thresholds, agreement).startswith(
        "How good labels must be on this set: better than label mIoU 0.900, the best labels tested, at which "
        "pilotnet · gradcam's profile fell below the floor (0.9)"
    )


def test_the_headline_threshold_is_the_highest_over_the_headline_methods(page: str) -> None:
    # gradrollout is no model's headline method (GradCAM is, without trust tables), so 0.8 is the answer
    assert (
        "How good labels must be on this set: at every level tested above label mIoU 0.800, every headline "
        "profile (pilotnet · gradcam, vit · gradcam) agreed with its exact-label profile"
    ) in _section(page)


def test_verdict_changes_are_counted_per_level_and_listed(study_folder: Path, page: str) -> None:
    results = load_results(study_folder)
    assert results.label_verdicts is not None
    counts = verdict_counts(results.label_verdicts, results.label_levels)
    assert counts["level"].tolist() == list(CHANGES)
    assert counts["changed"].tolist() == [len(c) for c in CHANGES.values()]
    assert counts["compared"].tolist() == [len(LOWS) * len(CRITERIA)] * len(CHANGES)
    assert counts["mIoU"].tolist() == [miou for _, miou in LEVELS.values()]
    section = _section(page)
    assert "6 of 36 verdicts" in section
    assert section.count('<span class="pass">pass</span> → <span class="fail">fail</span>') == 6


def test_the_largest_class_changes_by_relative_change() -> None:
    top = largest_class_changes(_classes(), top=2)
    assert top["class"].tolist() == ["sky", "road"]
    assert top["relative change"].tolist() == [-0.8, 0.5]
    assert top["per-image change [95% CI]"].tolist() == ["-0.4 [-0.5, -0.3]", "0.2 [0.1, 0.3]"]
    # the infinite relative change (an exact score of 0) is never ranked
    assert "vegetation" not in set(largest_class_changes(_classes())["class"])


def test_category_ratio_is_what_the_category_hides(page: str) -> None:
    spread = category_spread(_categories())
    assert spread["max ÷ min"].tolist()[0] == pytest.approx(3.0)
    assert math.isnan(spread["max ÷ min"].tolist()[1]) and spread["max ÷ min"].tolist()[2] == 1.0
    assert spread["class scores min – max"].tolist() == ["0.2 – 0.6", "0 – 0.5", "0.7 – 0.7"]
    section = _section(page)
    assert (
        "<td>flat</td>\n      <td>0.45</td>\n      <td>2</td>\n      <td>0.2 – 0.6</td>\n      <td>3</td>"
        in section
    )


def test_the_figure_draws_every_level_the_floor_and_the_thresholds(study_folder: Path) -> None:
    fig = agreement_figure(load_results(study_folder))
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["pilotnet", "vit"]
    agreement = _agreement()
    for ax in panels:
        rows = agreement[agreement["model"] == ax.get_title()]
        drawn = np.vstack([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])
        assert sorted(map(tuple, drawn.round(9))) == sorted(
            zip(rows["miou"].round(9), rows["spearman"].round(9), strict=True)
        )
        horizontal = [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert horizontal == [FLOOR]
    vertical = [ln.get_xdata()[0] for ln in panels[0].get_lines() if ln.get_linestyle() == ":"]
    assert vertical == [0.7]  # pilotnet's one threshold; vit's gradrollout has none
    assert [ln.get_xdata()[0] for ln in panels[1].get_lines() if ln.get_linestyle() == ":"] == [0.8]
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:6] == ["gradcam", "gradrollout", "coarse", "dilate", "erode", "pseudo"]


def test_gradsum_figures_writes_the_agreement_curve(study_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "paper"
    assert main(["figures", str(study_folder), "--out", str(out)]) == 0
    for fmt in figures.PAPER_FORMATS:
        assert (out / f"{LABEL_AGREEMENT_STEM}.{fmt}").stat().st_size > 0
    width, _ = struct.unpack(">II", (out / f"{LABEL_AGREEMENT_STEM}.png").read_bytes()[16:24])
    assert width == round(COLUMN_WIDTHS["single"] * figures.PAPER_DPI)


def test_a_study_without_verdicts_classes_or_categories_still_reads(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "run", models=STUDY_MODELS)
    add_label_tables(
        folder, {s: t for s, t in STUDY.items() if s in (LABEL_LEVELS, LABEL_AGREEMENT, LABEL_THRESHOLDS)}
    )
    section = label_quality_section(load_results(folder))
    assert "The trust checks were not rerun under the levels&#x27; labels" in section
    assert "largest class profile changes" not in section and "max ÷ min" not in section
    assert "above label mIoU 0.800, every headline profile" in section


def test_no_section_and_no_figure_without_the_study(tmp_path: Path) -> None:
    results = load_results(write_results(tmp_path / "plain", models=STUDY_MODELS))
    assert label_quality_section(results) == ""
    assert not [p for p in pending_plots(results) if p.section == "labels"]
    assert LABEL_AGREEMENT_STEM not in {f.stem for f in figures.paper_figures(results)}
    page = render_html(results, [])
    assert 'id="labels"' not in page and 'href="#labels"' not in page and 'id="trust"' in page
    with pytest.raises(ResultsError, match=r"label_agreement\.csv: missing or empty"):
        agreement_figure(results)
