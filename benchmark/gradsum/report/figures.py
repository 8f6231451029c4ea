"""The paper set of a results folder: column-sized figures (PDF, SVG, PNG) and LaTeX tables.

The figures are the report's profile figures drawn for print: the headline figure per task (each
model's recommended profile: its GradSUM score and its scale-free lift), every model × method profile,
every comparison the report shows (same task; the same method across models or the same model
across methods), when the label-quality study ran, its agreement curve against label mIoU, and when the
compression study ran, each parent's figure against the compression level. They
are drawn under seaborn's "paper" context and "ticks" style at a journal's single (3.5 in) or double
column width.

Fonts: PDF embeds TrueType (Type 42) fonts, which journals accept (Type 3 is often refused) and which
keep the text selectable. SVG draws glyphs as paths (`svg.fonttype = "path"`): an SVG is used on
slides and the web, where the viewer may lack DejaVu Sans and would reflow labels in a substitute
font; paths look the same everywhere at the cost of editable text, which the PDF keeps.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gradsum.errors import ResultsError
from gradsum.fileio import atomic_directory, atomic_write_bytes
from gradsum.names import pair_label
from gradsum.report import compression, plots
from gradsum.report.findings import SERIES, headline_profiles, meaningful_comparisons, models_by_task
from gradsum.report.label_quality import agreement_figure, has_study
from gradsum.report.results import Results, load_results
from gradsum.report.writer import COMPRESSION_STEM, LABEL_AGREEMENT_STEM, slug

#: Paper formats: vector for the paper (PDF) and slides (SVG), a raster for quick looks.
PAPER_FORMATS = ("pdf", "svg", "png")
#: Print resolution of the PNGs (and of any raster inside the vector files).
PAPER_DPI = 300
#: No dates or software strings, so the same results give the same bytes.
_METADATA: dict[str, dict[str, Any]] = {
    "pdf": {"CreationDate": None},
    "svg": {"Date": None},
    "png": {"Software": None},
}
PROFILE_TABLE = "profiles.tex"
COMPARISON_TABLE = "comparisons.tex"

# fontTools logs every glyph of every font subset at INFO while matplotlib embeds fonts in a PDF.
logging.getLogger("fontTools").setLevel(logging.WARNING)


@dataclass(frozen=True)
class PaperFigure:
    """One figure of the paper set: its file stem and how to draw it at a column width."""

    stem: str
    draw: Callable[[str], Figure]


def paper_rc(size: str) -> dict[Any, Any]:
    """The rcParams of the paper set: seaborn paper context and ticks style, embedded fonts, fixed ids."""
    check_size(size)
    return {
        **sns.axes_style("ticks"),
        **sns.plotting_context("paper"),
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "svg.fonttype": "path",
        "svg.hashsalt": "gradsum",
        "savefig.dpi": PAPER_DPI,
        "savefig.bbox": None,
    }


def check_size(size: str) -> None:
    """Raise naming `size` when it is not a column width of `plots.COLUMN_WIDTHS`."""
    if size not in plots.COLUMN_WIDTHS:
        raise ResultsError(f"size: {size!r} is not one of {', '.join(plots.COLUMN_WIDTHS)}")


def _series(profiles: pd.DataFrame, combos: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """The rows of `combos` (model, method) with a `series` column naming each, in `combos` order."""
    parts = [
        profiles[(profiles["model"] == model) & (profiles["method"] == method)].assign(
            **{SERIES: plots.label(model, method)}
        )
        for model, method in combos
    ]
    return pd.concat(parts, ignore_index=True)


def comparison_sides(results: Results) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """(a, b) model × method pairs of the comparisons the report shows, in table order."""
    labels = {
        pair_label(m, k): (m, k)
        for m, k in results.profiles[["model", "method"]].drop_duplicates().itertuples(index=False)
    }
    shown = meaningful_comparisons(results)
    if shown.empty:
        return []
    pairs = shown[["a", "b"]].drop_duplicates().itertuples(index=False, name=None)
    return [(labels[str(a)], labels[str(b)]) for a, b in pairs]


def _grouped(rows: pd.DataFrame, title: str | None, size: str) -> Figure:
    return plots.grouped_profile_figure(rows, SERIES, size=size, title=title)


def _headline(rows: pd.DataFrame, title: str, size: str) -> Figure:
    return plots.headline_figure(rows, SERIES, size=size, title=title)


def paper_figures(results: Results) -> list[PaperFigure]:
    """Every figure of the paper set: headline per task, each profile, each shown comparison, and the
    label-quality study's agreement curve when the folder holds the study."""
    profiles = results.profiles
    figures = [
        PaperFigure(f"headline_{slug(task)}", partial(_headline, headline_profiles(results, models), task))
        for task, models in models_by_task(results).items()
    ]
    combos = profiles[["model", "method"]].drop_duplicates().itertuples(index=False, name=None)
    figures += [
        PaperFigure(
            f"profile_{slug(model)}_{slug(method)}",
            partial(_grouped, _series(profiles, [(model, method)]), plots.label(model, method)),
        )
        for model, method in combos
    ]
    figures += [
        PaperFigure(
            f"paired_{slug(a[0])}_{slug(a[1])}_vs_{slug(b[0])}_{slug(b[1])}",
            partial(_grouped, _series(profiles, (a, b)), None),
        )
        for a, b in comparison_sides(results)
    ]
    if has_study(results):
        figures.append(PaperFigure(LABEL_AGREEMENT_STEM, partial(agreement_figure, results)))
    if compression.has_study(results):
        figures += [
            PaperFigure(
                f"{COMPRESSION_STEM}_{slug(parent)}", partial(compression.compression_figure, results, parent)
            )
            for parent in compression.parents(results)
        ]
    return figures


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure in one paper format, without dates so the bytes repeat."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=PAPER_DPI, metadata=_METADATA[fmt])
    return buffer.getvalue()


def profile_table(profiles: pd.DataFrame) -> pd.DataFrame:
    """Classes (rows, Cityscapes order) by model · method: "mean [CI low, CI high]" of the GradSUM score."""
    cells = profiles.assign(
        series=[plots.label(m, k) for m, k in zip(profiles["model"], profiles["method"], strict=True)],
        cell=[
            f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
            for m, lo, hi in zip(
                profiles["score_mean"], profiles["score_ci_low"], profiles["score_ci_high"], strict=True
            )
        ],
    )
    grid = cells.pivot_table(index="class", columns="series", values="cell", aggfunc="first", sort=False)
    return grid.reindex(plots.class_order(profiles)).rename_axis(columns=None).reset_index()


def comparison_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per compared pair: the test, the profile Spearman ρ [95% CI] and the classes that differ."""
    rows = []
    for (a, b), pair in comparisons.groupby(["a", "b"], sort=False):
        first = pair.iloc[0]
        differs = pair[pair["differs"]]
        rows.append(
            {
                "A": a,
                "B": b,
                # tables written before the unpaired test existed hold paired tests only
                "test": first.get("test", "wilcoxon"),
                "Spearman $\\rho$ [95% CI]": (
                    f"{first['spearman_rho']:.2f} [{first['spearman_ci_low']:.2f}, "
                    f"{first['spearman_ci_high']:.2f}]"
                ),
                "classes differing (Holm)": ", ".join(plots.class_order(differs)) or "none",
            }
        )
    return pd.DataFrame(rows)


def latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs LaTeX table (toprule/midrule/bottomrule) through pandas' Styler.

    Cells and headers are escaped for LaTeX; `$...$` in a header stays math (a column named ρ).
    """
    styler = frame.style.hide(axis="index").format(escape="latex", na_rep="--")
    styler = styler.format_index(escape="latex-math", axis=1)
    return styler.to_latex(hrules=True, caption=caption, label=label, position_float="centering")


def paper_tables(results: Results) -> dict[str, str]:
    """The LaTeX tables of the paper set by file name: the profiles, and the comparisons when any."""
    tables = {
        PROFILE_TABLE: latex(
            profile_table(results.profiles),
            "GradSUM score per class: mean [95\\% bootstrap CI] over the images that contain the class.",
            "tab:gradsum-profiles",
        )
    }
    shown = meaningful_comparisons(results)
    if not shown.empty:
        tables[COMPARISON_TABLE] = latex(
            comparison_table(shown),
            "Profile comparisons: Spearman $\\rho$ of the class profiles and the classes whose per-class "
            "test differs after Holm correction.",
            "tab:gradsum-comparisons",
        )
    return tables


def render_paper_set(results: Results, size: str = "single") -> dict[str, bytes]:
    """Every file of the paper set by name, drawn in memory."""
    files: dict[str, bytes] = {}
    with matplotlib.rc_context(paper_rc(size)):
        for item in paper_figures(results):
            figure = item.draw(size)
            for fmt in PAPER_FORMATS:
                files[f"{item.stem}.{fmt}"] = figure_bytes(figure, fmt)
            figure.clear()
    files.update({name: text.encode("utf-8") for name, text in paper_tables(results).items()})
    return files


def write_figures(
    results_dir: str | os.PathLike[str], out: str | os.PathLike[str], size: str = "single"
) -> list[Path]:
    """Write the paper set of a results folder into `out`; a bad folder raises `ResultsError` naming it.

    Everything is drawn in memory first, so a failure writes nothing. A new `out` appears whole (staged
    and renamed); into an existing one, which may hold the user's own files, each file is replaced
    atomically and nothing else is touched.
    """
    check_size(size)
    files = render_paper_set(load_results(Path(results_dir)), size)
    target = Path(out)
    if target.exists():
        return [atomic_write_bytes(target / name, data) for name, data in files.items()]
    with atomic_directory(target) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)
    return [target / name for name in files]


def draw_paper_figures(results: Results, size: str = "single") -> dict[str, Figure]:
    """The paper set's figures by stem, drawn at `size` under the paper style (for a notebook to show)."""
    with matplotlib.rc_context(paper_rc(size)):
        return {item.stem: item.draw(size) for item in paper_figures(results)}
