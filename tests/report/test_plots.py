"""Every plot function draws a figure from the fixture tables; save_figure writes PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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


def test_profile_bar_uses_cityscapes_colours_sorted_by_score(results_dir: Path) -> None:
    profiles = load_results(results_dir).profiles
    fig = plots.profile_bar(profiles, "pilotnet", "gradcam")
    ax = fig.axes[0]
    assert ax.get_title() == "pilotnet · gradcam profile"
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == sorted(heights, reverse=True)
    names = [tick.get_text() for tick in ax.get_xticklabels()]
    colours = [bar.get_facecolor()[:3] for bar in ax.patches]
    assert colours == [pytest.approx(plots.class_color(CITYSCAPES.by_name[n].id)) for n in names]


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
