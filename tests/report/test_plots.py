"""Every plot function draws a figure from the fixture tables; save_figure writes PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from gradsum.errors import ResultsError
from gradsum.report import OverlayData, load_results, plots, save_figure
from gradsum.truthsets.labels import CITYSCAPES


def _overlays() -> OverlayData:
    rng = np.random.default_rng(0)
    labels = np.full((2, 16, 24), CITYSCAPES.by_name["road"].id, dtype=np.uint8)
    labels[:, :6] = CITYSCAPES.by_name["sky"].id
    images = rng.integers(0, 255, (2, 16, 24, 3), dtype=np.uint8)
    return OverlayData(
        images, labels, {"gradcam": rng.random((2, 16, 24)), "gradrollout": rng.random((2, 16, 24))}
    )


#: The fixture's classes in Cityscapes order (by label id: road 7, sidewalk 8, building 11, vegetation 21, ...).
CITYSCAPES_ORDER = ["road", "sidewalk", "building", "vegetation", "sky", "car"]


def test_profile_bar_uses_cityscapes_order_and_colours(results_dir: Path) -> None:
    profiles = load_results(results_dir).profiles
    fig = plots.profile_bar(profiles, "pilotnet", "gradcam")
    ax = fig.axes[0]
    assert ax.get_title() == "pilotnet · gradcam profile"
    names = [tick.get_text() for tick in ax.get_xticklabels()]
    assert names == CITYSCAPES_ORDER
    rows = profiles[(profiles["model"] == "pilotnet") & (profiles["method"] == "gradcam")].set_index("class")
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [bar.get_height() for bar in bars] == pytest.approx(list(rows.loc[names, "score_mean"]))
    colours = [bar.get_facecolor()[:3] for bar in bars]
    assert colours == [pytest.approx(plots.class_color(CITYSCAPES.by_name[n].id)) for n in names]


@pytest.mark.parametrize("size", ["single", "double"])
def test_grouped_profile_bars_follow_cityscapes_order_and_colours(results_dir: Path, size: str) -> None:
    profiles = load_results(results_dir).profiles
    # shuffled rows, and vit without "sky": order comes from the class ids, a missing class draws no bar
    rows = profiles[profiles["method"] == "gradcam"].sample(frac=1.0, random_state=0)
    rows = rows[~((rows["model"] == "vit") & (rows["class"] == "sky"))]
    fig = plots.grouped_profile_figure(rows, "model", size=size)
    ax = fig.axes[0]
    assert fig.get_size_inches()[0] == pytest.approx(plots.COLUMN_WIDTHS[size])
    assert [t.get_text() for t in ax.get_xticklabels()] == CITYSCAPES_ORDER
    series = list(dict.fromkeys(rows["model"]))
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in bars] == series
    for container in bars:
        model = container.get_label()
        expected = rows[rows["model"] == model].set_index("class")
        drawn = [CITYSCAPES_ORDER[round(bar.get_x() + bar.get_width() / 2)] for bar in container]
        assert drawn == [c for c in CITYSCAPES_ORDER if c in expected.index]
        assert [bar.get_height() for bar in container] == pytest.approx(
            list(expected.loc[drawn, "score_mean"])
        )
        assert [bar.get_facecolor()[:3] for bar in container] == [
            pytest.approx(plots.class_color(CITYSCAPES.by_name[c].id)) for c in drawn
        ]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == series


def _heights(ax: Axes, series: str) -> list[float]:
    (container,) = [c for c in ax.containers if isinstance(c, BarContainer) and c.get_label() == series]
    return [bar.get_height() for bar in container]


@pytest.mark.parametrize("size", ["single", "double"])
def test_headline_draws_the_score_and_beside_it_the_scale_free_lift(results_dir: Path, size: str) -> None:
    profiles = load_results(results_dir).profiles
    rows = profiles[profiles["method"] == "gradcam"]
    fig = plots.headline_figure(rows, "model", size=size, title="steering")
    FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    score, lift = fig.axes
    assert fig.get_size_inches()[0] == pytest.approx(plots.COLUMN_WIDTHS[size])
    for model in ("pilotnet", "vit", "hybrid"):
        expected = rows[rows["model"] == model].set_index("class").loc[CITYSCAPES_ORDER]
        assert _heights(score, model) == pytest.approx(list(expected["score_mean"]))
        assert _heights(lift, model) == pytest.approx(list(expected["lift"]))
    assert [t.get_text() for t in lift.get_xticklabels()] == CITYSCAPES_ORDER
    assert lift.get_ylabel() == "lift (mass share ÷ area share)" and score.get_ylabel() == "GradSUM score"
    (even,) = [line for line in lift.get_lines() if line.get_linestyle() == "--"]
    assert np.asarray(even.get_ydata()).tolist() == [plots.EVEN_LIFT, plots.EVEN_LIFT]
    # a double column sets the panels side by side, a single column stacks them
    left, right = score.get_position(), lift.get_position()
    assert (right.x0 > left.x1) if size == "double" else (right.y1 < left.y0)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["pilotnet", "vit", "hybrid"]
    assert score.get_title() == "steering"


def test_grouped_profile_figure_names_a_bad_size_or_group(results_dir: Path) -> None:
    profiles = load_results(results_dir).profiles
    with pytest.raises(ResultsError, match="'triple'"):
        plots.grouped_profile_figure(profiles, size="triple")
    with pytest.raises(ResultsError, match="'series'"):
        plots.grouped_profile_figure(profiles, "series")


def test_unknown_model_is_a_results_error(results_dir: Path) -> None:
    with pytest.raises(ResultsError, match="'nope'"):
        plots.profile_bar(load_results(results_dir).profiles, "nope", "gradcam")


def test_every_plot_function_draws(results_dir: Path) -> None:
    results = load_results(results_dir)
    assert results.attention is not None and results.attention_profiles is not None
    figures = [
        plots.profile_heatmap(results.profiles),
        plots.paired_profile(results.profiles, ("pilotnet", "gradcam"), ("vit", "gradcam")),
        plots.overlay_grid(_overlays()),
        plots.attention_entropy(results.attention, "vit"),
        plots.attention_layers(results.attention_profiles, "hybrid"),
        plots.method_panel(
            results.profiles, "hybrid", ["gradcam_tokenizer", "gradrollout", "gradcam", "split"]
        ),
    ]
    assert all(isinstance(f, Figure) and f.axes for f in figures)
    assert len(figures[2].axes) == 2 * 4  # two samples × (image, classes, two maps)
    assert len(figures[5].axes) == 4


def test_overlay_data_checks_shapes() -> None:
    data = _overlays()
    with pytest.raises(ValueError, match="overlay map 'bad'"):
        OverlayData(data.images, data.labels, {"bad": np.zeros((2, 8, 8))})


def test_save_figure_writes_repeatable_png_and_svg(results_dir: Path, tmp_path: Path) -> None:
    profiles = load_results(results_dir).profiles
    first = save_figure(plots.profile_bar(profiles, "vit", "gradrollout"), tmp_path / "a" / "profile")
    second = save_figure(plots.profile_bar(profiles, "vit", "gradrollout"), tmp_path / "b" / "profile")
    assert [p.suffix for p in first] == [".png", ".svg"]
    assert first[0].read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in first[1].read_bytes()
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_figure_still_draws_an_earlier_table_with_nulls_dashed() -> None:
    rows = [
        {"model": "m", "method": method, "null": null, "mode": "cascading", "step": step, "block": block}
        | {"similarity": similarity, "value": 1.0 - step / 2, "ci_low": 0.0, "ci_high": 1.0, "n_images": 2}
        for method, null in (("gradcam", False), ("null:random", True))
        for step, block in ((0, "original"), (1, "head"))
        for similarity in ("spearman_abs", "spearman")
    ]
    styles = {
        line.get_label(): line.get_linestyle()
        for line in plots.cascading_figure(pd.DataFrame(rows), "m").axes[0].get_lines()
    }
    assert styles == {"gradcam": "-", "null:random": "--"}


def test_the_sanity_figure_needs_cascading_rows_of_the_model() -> None:
    with pytest.raises(ResultsError, match="no cascading rows for 'm'"):
        plots.cascading_figure(pd.DataFrame(columns=["model", "mode"]), "m")
