"""write_report: a self-contained page with every section and plot; manifest entries refreshed.

Rendering is the slow part, so one module-scoped folder is rendered once and only read afterwards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from report_fixtures import write_results

from gradsum.fileio import sha256_file
from gradsum.report import OverlayData, load_results, write_report
from gradsum.report.html import SECTIONS
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
        assert f'id="{key}"' in page and title in page
    embedded = page.count('src="data:image/png;base64,')
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
        "profile_pilotnet_gradcam",
        "profile_hybrid_gradcam_tokenizer",
        "profile_hybrid_split-attention",
        "heatmap_score",
        "paired_pilotnet_vs_vit_gradcam",
        "paired_pilotnet_vs_hybrid_gradcam",
        "attention_entropy_vit",
        "attention_layers_hybrid",
        "methods_hybrid",
    } <= svgs
    assert "methods_vit" not in svgs  # the side-by-side panel is for hybrids


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
            for stem in ("profile_pilotnet_gradcam", "heatmap_score", "overlay")
            for fmt in ("png", "svg")
        ),
    }
    assert load_results(small_results_dir).manifest == manifest


def test_hybrid_panel_fills_roles_in_order() -> None:
    methods = ["gradcam", "gradcam_tokenizer", "split", "split/attention", "split/mean"]
    assert hybrid_panel(methods) == [
        ("tokenizer GradCAM", "gradcam_tokenizer"),
        ("attention", "split/attention"),
        ("full-model GradCAM", "gradcam"),
        ("combined", "split"),
    ]
    assert hybrid_panel(["saliency"]) == []
