"""The report's "Issues in the input data" section: the void figures and their sentence, the outliers
listed and drawn (at most four per model, the farthest first), thumbnails re-embedded by `gradsum report`,
and the thumbnail's two panels drawn in the right colours."""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from report_fixtures import write_results

from gradsum.contract import INPUT_DATA, write_table
from gradsum.fileio import sha256_file
from gradsum.report import load_results, write_report
from gradsum.report.input_data import (
    MAX_SHOWN,
    MAX_SHOWN_IN_ALL,
    THUMBNAIL_HEIGHT,
    Thumbnail,
    shown_outliers,
    thumbnail_size,
    void_sentences,
    void_summary,
)
from gradsum.report.overlays import ALPHA, CMAP, labelled_overlay_figure
from gradsum.report.plots import figure_bytes
from gradsum.truthsets.labels import CITYSCAPES

MODELS = {"pilotnet": ("pilotnet", ("gradcam",)), "vit": ("vit", ("gradcam", "gradrollout"))}
#: pilotnet · gradcam: image 0003 planted far (distance 30) and 20% of every map's mass on void.
PLANTED = "0003"
#: vit · gradrollout: six flagged images (v0..v5, farthest v5): only the four farthest are drawn.
VIT_FLAGGED = [f"v{i}" for i in range(6)]


def _input_data() -> pd.DataFrame:
    rows = [
        (
            "pilotnet",
            "gradcam",
            image,
            0.2,
            0.05,
            30.0 if image == PLANTED else 1.0 + 0.1 * i,
            image == PLANTED,
        )
        for i, image in enumerate(("0001", "0002", "0003", "0004"))
    ]
    rows += [("vit", "gradcam", image, 0.01, 0.05, 1.0, False) for image in ("0001", "0002")]
    rows += [("vit", "gradrollout", image, 0.0, 0.05, 10.0 + i, True) for i, image in enumerate(VIT_FLAGGED)]
    rows += [("vit", "gradrollout", f"w{i}", 0.0, 0.05, 1.0, False) for i in range(10)]
    return pd.DataFrame(rows, columns=list(INPUT_DATA.names))


def _thumbnail(model: str, method: str, image: str) -> Thumbnail:
    rng = np.random.default_rng(0)
    labels = np.full((8, 16), CITYSCAPES.by_name["road"].id, np.uint8)
    return Thumbnail(
        model, method, image, rng.integers(0, 255, (8, 16, 3), dtype=np.uint8), labels, rng.random((8, 16))
    )


def _section(page: str) -> str:
    start = page.index('<section id="input_data">')
    return page[start : page.index("</section>", start)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_results(tmp_path_factory.mktemp("results") / "run", models=MODELS)
    write_table(folder, INPUT_DATA, _input_data())
    return folder


def test_the_void_summary_and_its_sentence_name_the_blind_model() -> None:
    summary = void_summary(_input_data()).set_index(["model", "method"])
    assert summary.loc[("pilotnet", "gradcam"), "void_mass_median"] == pytest.approx(0.2)
    assert summary.loc[("pilotnet", "gradcam"), "outliers"] == 1
    assert summary.loc[("vit", "gradrollout"), "outliers"] == 6
    sentences = void_sentences(summary.reset_index())
    assert sentences == [
        "pilotnet · gradcam: the median image puts 20% of the map's mass on void pixels (5% of its area): "
        "the profile is blind to 20% of what the map marks."
    ]


def test_at_most_four_outliers_per_model_are_shown_the_farthest_first() -> None:
    shown = shown_outliers(_input_data())
    assert shown["image"].tolist() == [PLANTED, "v5", "v4", "v3", "v2"]
    assert (shown["model"] == "vit").sum() == MAX_SHOWN


def test_a_run_of_many_models_shows_the_farthest_outliers_of_all() -> None:
    # 12 models with 4 outliers each, model k's at distances 10k + 1..4: the 20 farthest are models 7-11's
    rows = [
        (f"m{k:02d}", "gradcam", f"i{j}", 0.0, 0.05, 10.0 * k + j, True)
        for k in range(12)
        for j in range(1, 5)
    ]
    shown = shown_outliers(pd.DataFrame(rows, columns=list(INPUT_DATA.names)))
    assert len(shown) == MAX_SHOWN_IN_ALL == 20
    assert sorted(set(shown["model"])) == [f"m{k:02d}" for k in range(7, 12)]
    # still listed by model, the farthest first within each
    assert shown["image"].tolist()[:4] == ["i4", "i3", "i2", "i1"] and shown["model"].is_monotonic_increasing


def test_thumbnails_are_shrunk_to_a_fixed_height_with_their_aspect() -> None:
    assert thumbnail_size(1024, 2048) == (THUMBNAIL_HEIGHT, 2 * THUMBNAIL_HEIGHT)
    assert thumbnail_size(48, 96) == (48, 96)


def test_the_section_names_the_planted_image_with_its_thumbnails_and_void_figure(folder: Path) -> None:
    thumbnails = [_thumbnail("pilotnet", "gradcam", PLANTED)]
    thumbnails += [_thumbnail("vit", "gradrollout", image) for image in VIT_FLAGGED]
    section = _section(write_report(folder, thumbnails=thumbnails).read_text())
    assert "Issues in the input data" in section
    assert "the profile is blind to 20% of what the map marks" in section
    assert f"pilotnet · gradcam, image {PLANTED}: 30.0 robust SDs" in section
    # one thumbnail for pilotnet, four of vit's six
    assert section.count("<figure>") == 1 + MAX_SHOWN
    assert "image v1:" not in section and "image v5:" in section
    assert section.count('src="data:image/png;base64,') == 1 + MAX_SHOWN
    assert {p.name for p in (folder / "plots").glob("outlier_*")} == {
        "outlier_pilotnet_0.png",
        *(f"outlier_vit_{rank}.png" for rank in range(MAX_SHOWN)),
    }
    # `gradsum report` has no frames: it embeds the thumbnails the pipeline drew
    again = _section(write_report(folder).read_text())
    assert again.count("<figure>") == 1 + MAX_SHOWN
    assert re.sub(r"base64,[^\"]+", "", again) == re.sub(r"base64,[^\"]+", "", section)
    load_results(folder)


def test_a_folder_without_the_table_has_no_section(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "old", models=MODELS)
    page = write_report(folder).read_text()
    assert 'id="input_data"' not in page and load_results(folder).input_data is None
    assert sha256_file(folder / "report.html")


def _decoded(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_a_thumbnail_shows_the_label_colour_on_the_left_and_the_map_on_the_right() -> None:
    grey = np.full((48, 48, 3), 128, np.uint8)
    road = CITYSCAPES.by_name["road"]
    labels = np.full((48, 48), road.id, np.uint8)
    heat = np.ones((48, 48))
    pixels = _decoded(figure_bytes(labelled_overlay_figure(grey, labels, heat, "t"), "png"))
    middle = pixels.shape[0] * 3 // 5
    left, right = pixels[middle, pixels.shape[1] // 4], pixels[middle, 3 * pixels.shape[1] // 4]
    label_colour = ALPHA * np.asarray(road.color) + (1 - ALPHA) * 128
    hot = ALPHA * np.asarray(matplotlib.colormaps[CMAP](1.0)[:3]) * 255 + (1 - ALPHA) * 128
    np.testing.assert_allclose(left, label_colour, atol=3)
    np.testing.assert_allclose(right, hot, atol=3)
