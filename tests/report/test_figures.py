"""`gradsum figures`: the paper set sized for a column, fonts embedded, LaTeX tables, written atomically."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import MODELS, write_results

from gradsum.cli import main
from gradsum.errors import ResultsError
from gradsum.report import figures
from gradsum.report.plots import COLUMN_WIDTHS

#: Two models under one method: one comparison, four figures (headline, two profiles, one pair).
TWO_MODELS = {"pilotnet": MODELS["pilotnet"], "vit": ("vit", ("gradcam",))}
STEMS = (
    "headline_steering",
    "profile_pilotnet_gradcam",
    "profile_vit_gradcam",
    "paired_pilotnet_gradcam_vs_vit_gradcam",
)


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("figures") / "results" / "run", models=TWO_MODELS)


@pytest.fixture(scope="module")
def paper_set(results_folder: Path) -> Path:
    out = results_folder.parent.parent / "paper"
    assert main(["figures", str(results_folder), "--out", str(out)]) == 0
    return out


def _png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def test_every_figure_in_three_formats_and_both_tables(paper_set: Path) -> None:
    expected = {f"{stem}.{fmt}" for stem in STEMS for fmt in figures.PAPER_FORMATS}
    assert {p.name for p in paper_set.iterdir()} == expected | {"profiles.tex", "comparisons.tex"}


def test_single_column_size_and_embedded_fonts(paper_set: Path) -> None:
    for stem in STEMS:
        width, _ = _png_size(paper_set / f"{stem}.png")
        assert width == round(COLUMN_WIDTHS["single"] * figures.PAPER_DPI)
        pdf = (paper_set / f"{stem}.pdf").read_bytes()
        # 3.5 in = 252 pt wide; TrueType (Type 42) fonts embedded as FontFile2, no Type 3 fonts
        assert re.search(rb"/MediaBox \[ 0 0 252 [0-9.]+ \]", pdf)
        assert b"/FontFile2" in pdf and b"/Type3" not in pdf
        svg = (paper_set / f"{stem}.svg").read_text()
        assert 'width="252pt"' in svg and "<text" not in svg  # glyphs drawn as paths


def test_double_column_and_unknown_size(results_folder: Path, tmp_path: Path) -> None:
    one_model = write_results(tmp_path / "results" / "one", models={"pilotnet": MODELS["pilotnet"]})
    out = tmp_path / "double"
    assert [p.name for p in figures.write_figures(one_model, out, size="double")][:3] == [
        "headline_steering.pdf",
        "headline_steering.svg",
        "headline_steering.png",
    ]
    assert _png_size(out / "headline_steering.png")[0] == round(COLUMN_WIDTHS["double"] * figures.PAPER_DPI)
    with pytest.raises(ResultsError, match=r"size: 'a4' is not one of single, double"):
        figures.write_figures(results_folder, tmp_path / "a4", size="a4")
    assert not (tmp_path / "a4").exists()


def test_profile_table_holds_the_profiles_in_cityscapes_order(results_folder: Path, paper_set: Path) -> None:
    tex = (paper_set / "profiles.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    profiles = pd.read_csv(results_folder / "profiles.csv")
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0].strip().splitlines()
    assert [line.split(" & ")[0] for line in body] == [
        "road",
        "sidewalk",
        "building",
        "vegetation",
        "sky",
        "car",
    ]
    car = profiles[(profiles["model"] == "vit") & (profiles["class"] == "car")].iloc[0]
    cell = f"{car['score_mean']:.3f} [{car['score_ci_low']:.3f}, {car['score_ci_high']:.3f}]"
    assert body[-1].rstrip(" \\").split(" & ")[2] == cell


def test_comparison_table_names_the_test_rho_and_differing_classes(paper_set: Path) -> None:
    tex = (paper_set / "comparisons.tex").read_text()
    assert "Spearman $\\rho$ [95\\% CI]" in tex
    assert "pilotnet/gradcam & vit/gradcam & wilcoxon & 0.60 [0.10, 0.90] & road \\\\" in tex


def test_latex_escapes_text() -> None:
    tex = figures.latex(pd.DataFrame({"model_x": ["a_b & 50%", None]}), "cap", "tab:t")
    assert "model\\_x" in tex and "a\\_b \\& 50\\%" in tex and "-- \\\\" in tex


def test_a_failure_writes_nothing(
    results_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fig: object, fmt: str) -> bytes:
        # the second format of the first figure: one file already drawn when the disk fills
        if fmt == figures.PAPER_FORMATS[1]:
            raise OSError("disk full")
        return b"x"

    monkeypatch.setattr(figures, "figure_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        figures.write_figures(results_folder, tmp_path / "new")
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))
    existing = tmp_path / "paper"
    existing.mkdir()
    (existing / "main.tex").write_text("mine")
    with pytest.raises(OSError, match="disk full"):
        figures.write_figures(results_folder, existing)
    assert [p.name for p in existing.iterdir()] == ["main.tex"]


def test_a_bad_results_folder_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["figures", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gradsum figures: error: {missing}: no such results folder"
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["figures", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert f"{empty / 'manifest.json'}: missing" in capsys.readouterr().err
