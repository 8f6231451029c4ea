"""write_report: a self-contained page with every section and plot; manifest entries refreshed.

Rendering is the slow part, so one module-scoped folder is rendered once and only read afterwards.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_fixtures import write_results

from gradsum.fileio import sha256_file
from gradsum.report import OverlayData, load_results, write_report
from gradsum.report.html import JPEG_ABOVE, OPTIONAL_SECTIONS, SECTIONS, flatten, page_image
from gradsum.report.writer import hybrid_panel, pending_plots

# A stand-in for the overlay grid the pipeline draws from arrays in memory (any PNG will do).
OVERLAY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A results folder with a pipeline-drawn overlay PNG, after one write_report."""
    folder = write_results(tmp_path_factory.mktemp("results") / "run-1")
    (folder / "plots").mkdir()
    (folder / "plots" / "overlay.png").write_bytes(OVERLAY_PNG)
    path = write_report(folder)
    assert path == folder / "report.html"
    return folder, path.read_text()


def test_report_is_self_contained_with_every_section_and_plot(rendered: tuple[Path, str]) -> None:
    folder, page = rendered
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page
    for key, title in SECTIONS:
        # optional sections (the shortcut check's) appear only with their tables: test_shortcut_section.py
        assert (f'id="{key}"' in page and title in page) != (key in OPTIONAL_SECTIONS)
    embedded = page.count('src="data:image/')
    assert embedded == len(pending_plots(load_results(folder))) + 1  # + the overlay already on disk
    assert "samples (overlay.png)" in page and "No sample overlays" not in page


def test_report_states_the_ground_truth_failure_and_the_differing_class(rendered: tuple[Path, str]) -> None:
    _, page = rendered
    assert "Finding: 1 of 3 model × method profiles do not agree with the ground truth" in page
    assert "sky ranks above road" in page and "does not agree" in page
    assert "pilotnet/gradcam" in page and "mae" in page and "minmax" in page


def test_expected_plots_are_drawn_in_both_formats(rendered: tuple[Path, str]) -> None:
    folder, _ = rendered
    pngs = {p.stem for p in (folder / "plots").glob("*.png")}
    svgs = {p.stem for p in (folder / "plots").glob("*.svg")}
    assert pngs == svgs | {"overlay"}
    assert {
        "headline_steering",
        "profile_pilotnet_gradcam",
        "profile_hybrid_gradcam_tokenizer",
        "profile_hybrid_split-attention",
        "heatmap_score",
        "grouped_steering_gradcam",
        "grouped_steering_gradrollout",
        "grouped_hybrid_methods",
        "grouped_vit_methods",
        "attention_entropy_vit",
        "attention_layers_hybrid",
        "methods_hybrid",
    } <= svgs
    assert "methods_vit" not in svgs  # the side-by-side panel is for hybrids
    assert "grouped_pilotnet_methods" not in svgs  # one method: nothing to set side by side


def test_manifest_lists_the_renderings_and_still_validates(rendered: tuple[Path, str]) -> None:
    folder, _ = rendered
    files = json.loads((folder / "manifest.json").read_text())["files"]
    for relative in ("report.html", "plots/heatmap_score.svg", "plots/methods_hybrid.png", "profiles.csv"):
        assert files[relative] == sha256_file(folder / relative)
    load_results(folder)


def test_pipeline_path_writes_the_manifest_last_with_every_checksum(small_results_dir: Path) -> None:
    (small_results_dir / "manifest.json").unlink()
    rng = np.random.default_rng(0)
    labels = np.full((1, 8, 12), 7, dtype=np.uint8)
    overlays = OverlayData(
        rng.integers(0, 255, (1, 8, 12, 3), dtype=np.uint8), labels, {"gradcam": rng.random((1, 8, 12))}
    )
    write_report(
        small_results_dir, overlays=overlays, manifest={"normalisation": "minmax", "files": {"stale": "x"}}
    )
    manifest = json.loads((small_results_dir / "manifest.json").read_text())
    assert manifest["normalisation"] == "minmax"
    assert set(manifest["files"]) == {
        "per_image.parquet",
        "profiles.csv",
        "cards/pilotnet.json",
        "report.html",
        *(
            f"plots/{stem}.{fmt}"
            for stem in ("headline_steering", "profile_pilotnet_gradcam", "heatmap_score")
            for fmt in ("png", "svg")
        ),
        # the overlay grid is raster: PNG only
        "plots/overlay.png",
    }
    assert load_results(small_results_dir).manifest == manifest


def _section(page: str, key: str) -> str:
    start = page.index(f'<section id="{key}">')
    return page[start : page.index("</section>", start)]


def test_page_opens_with_findings_and_the_headline_figure_and_ends_with_folded_configuration(
    rendered: tuple[Path, str],
) -> None:
    _, page = rendered
    sections = re.findall(r'<section id="(\w+)">', page)
    assert sections[0] == "findings" and sections[-1] == "configuration"
    findings = _section(page, "findings")
    assert "Does vit look at the scene like pilotnet (gradcam, steering)?" in findings
    assert "Profile Spearman ρ = 0.60 [0.10, 0.90]" in findings and "road (pilotnet higher)" in findings
    assert findings.count("<figure>") == 1 and "steering: per-class profiles" in findings
    # no trust table in the fixture: GradCAM where it ran, so vit shows gradcam, not gradrollout
    assert "pilotnet · gradcam, vit · gradcam, hybrid · gradcam" in findings
    configuration = re.sub(r">\s+<", "><", _section(page, "configuration"))
    assert configuration.count("<details>") == 1 and "<pre>" not in configuration
    assert "<tr><td>models</td><td>pilotnet, vit, hybrid</td></tr>" in configuration


def test_configuration_flattens_to_dotted_fields() -> None:
    config = {"b": {"y": [1, 2], "x": None}, "a": [{"m": "gradcam", "o": {}}], "c": 3}
    assert list(flatten(config)) == [
        ("a[0].m", "gradcam"),
        ("a[0].o", "—"),
        ("b.x", "—"),
        ("b.y", "1, 2"),
        ("c", "3"),
    ]


def test_per_model_profile_bars_are_folded(rendered: tuple[Path, str]) -> None:
    _, page = rendered
    profiles = _section(page, "profiles")
    gallery, folded = profiles.split("<details>", 1)
    assert "GradSUM score by model and class" in gallery and " profile (" not in gallery
    assert folded.startswith("<summary>8 more figures</summary>") and folded.count("<figure>") == 8


def test_fixture_page_is_modest(rendered: tuple[Path, str]) -> None:
    _, page = rendered
    assert len(page.encode()) < 1_500_000


def test_large_png_is_embedded_as_smaller_jpeg() -> None:
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), 8, 0), 8, 1)
    noisy = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PNG")
    png = buffer.getvalue()
    assert len(png) > JPEG_ABOVE
    mime, data = page_image(png)
    assert mime == "image/jpeg" and data.startswith(b"\xff\xd8") and len(data) < len(png) / 2
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (640, 480)
    assert page_image(OVERLAY_PNG) == ("image/png", OVERLAY_PNG)


def test_hybrid_panel_fills_roles_in_order() -> None:
    methods = ["gradcam", "gradcam_tokenizer", "split", "split/attention", "split/mean"]
    assert hybrid_panel(methods) == [
        ("tokenizer GradCAM", "gradcam_tokenizer"),
        ("attention", "split/attention"),
        ("full-model GradCAM", "gradcam"),
        ("combined", "split"),
    ]
    assert hybrid_panel(["saliency"]) == []
