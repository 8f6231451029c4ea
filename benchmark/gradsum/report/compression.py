"""The report's Compression section and its figures, from the compression study's tables (`compression` config).

The study (`gradsum.pipeline.compression`) sets each compressed model against its parent on the same images:
the task metric's change with a paired CI, the profile's Spearman with the parent's, the class whose
per-image figure moved most, and a verdict from those intervals; per parent × compression × method it names
the lowest level at which the profile is shown to drift and the lowest at which the metric is shown to drop.
This module only formats and draws those tables: one figure per parent, three panels against the
compression level. The section exists only when the study ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.typing import LineStyleType

from gradsum.aggregation.label_quality import CONFIDENCE
from gradsum.contract import COMPRESSION_AGREEMENT, ONSET_ORDERS
from gradsum.errors import ResultsError
from gradsum.report.page import interval_text, paragraph, scroll, table, verdict_span
from gradsum.report.plots import COLUMN_WIDTHS, ci_errors
from gradsum.report.results import Results

#: The level of the study's intervals, as the section names it.
LEVEL = f"{CONFIDENCE:.0%}"
#: Where a compression without levels (int8_dynamic) is drawn: right of the level axis, labelled by name.
UNLEVELLED_X = 1.3
#: Marker and line style of each compression, handed out in the order of their names.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES: tuple[LineStyleType, ...] = ("-", "--", ":", "-.")
#: Text size of the figure at each column width (report and paper alike).
FONTSIZES = {"single": 6, "double": 7}
#: The figure's panels: (column, axis label) in order; the metric panel reads the levels table.
PANELS = (
    ("change", "task metric change"),
    ("spearman", "profile Spearman ρ"),
    ("shift", "largest class shift"),
)
#: (rows, columns) of the panels at each column width: side by side across a page, stacked in a column.
GRID = {"single": (3, 1), "double": (1, 3)}
#: Height ÷ width of the figure at each column width (the legend and labels included).
ASPECT = {"single": 1.5, "double": 0.42}


def has_study(results: Results) -> bool:
    """True when the folder holds the study's agreement table with at least one row."""
    return results.compression_agreement is not None and not results.compression_agreement.empty


def _agreement(results: Results) -> pd.DataFrame:
    agreement = results.compression_agreement
    if agreement is None or agreement.empty:
        raise ResultsError(
            f"{results.path / COMPRESSION_AGREEMENT.file}: missing or empty; no compression study in this folder"
        )
    return agreement


def _levels(results: Results) -> pd.DataFrame:
    levels = results.compression_levels
    return pd.DataFrame() if levels is None else levels


def parents(results: Results) -> list[str]:
    """The compressed models' parents, in table order (one figure each)."""
    return list(dict.fromkeys(_agreement(results)["parent"].astype(str)))


def _x(levels: pd.Series) -> np.ndarray:
    """The x position of each level: the level itself, or UNLEVELLED_X for a compression without one."""
    values = levels.to_numpy(float)
    return np.where(np.isfinite(values), values, UNLEVELLED_X)


def _series(
    ax: Axes,
    rows: pd.DataFrame,
    column: str,
    color: Any,
    marker: str,
    linestyle: LineStyleType,
    offset: float,
) -> None:
    """One series of a panel: points with CI whiskers, levels joined by a line (a lone level: a point)."""
    rows = rows.sort_values("level", kind="stable")
    x = _x(rows["level"]) + offset
    y = rows[column].to_numpy(float)
    levelled = rows["level"].notna().to_numpy()
    ax.plot(x[levelled], y[levelled], color=color, linestyle=linestyle, linewidth=0.8)
    ax.errorbar(
        x,
        y,
        yerr=ci_errors(y, rows[f"{column}_ci_low"], rows[f"{column}_ci_high"]),
        fmt=marker,
        color=color,
        markersize=3,
        elinewidth=0.7,
        capsize=1.5,
    )


def _styles(compressions: Sequence[str]) -> dict[str, tuple[str, LineStyleType]]:
    return {
        c: (MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])
        for i, c in enumerate(sorted(compressions))
    }


def compression_figure(results: Results, parent: str, size: str = "double") -> Figure:
    """One parent's figure: against the compression level, the task metric's change (its tolerance
    dashed), each method's profile Spearman with the parent's (the floor dashed) and its largest class shift
    (±tolerance dashed), all with their CIs. Colour: the attribution method; marker and line: the
    compression; a compression without levels (int8) stands right of the axis, named.
    """
    if size not in COLUMN_WIDTHS:
        raise ResultsError(f"size: {size!r} is not one of {', '.join(COLUMN_WIDTHS)}")
    agreement = _agreement(results)
    rows = agreement[agreement["parent"].astype(str) == parent]
    if rows.empty:
        raise ResultsError(f"parent: no compressed model of {parent!r}; valid: {', '.join(parents(results))}")
    levels = _levels(results)
    levels = levels[levels["parent"].astype(str) == parent] if not levels.empty else levels
    compressions = list(dict.fromkeys(rows["compression"].astype(str)))
    styles = _styles(compressions)
    methods = list(dict.fromkeys(rows["method"].astype(str)))
    palette = matplotlib.colormaps["tab10"]
    colors = {m: palette(i % palette.N) for i, m in enumerate(methods)}
    width, fontsize = COLUMN_WIDTHS[size], FONTSIZES[size]
    fig = Figure(figsize=(width, ASPECT[size] * width + 0.5), layout="constrained")
    axes = list(fig.subplots(*GRID[size], sharex=True).ravel())
    # small offsets keep the methods' whiskers apart at one level
    offsets = {m: 0.012 * (i - (len(methods) - 1) / 2) for i, m in enumerate(methods)}
    metric_ax, spearman_ax, shift_ax = axes
    for compression, (marker, linestyle) in styles.items():
        if not levels.empty:
            chosen = levels[levels["compression"].astype(str) == compression]
            _series(metric_ax, chosen, "change", "black", marker, linestyle, 0.0)
        for method in methods:
            chosen = rows[
                (rows["compression"].astype(str) == compression) & (rows["method"].astype(str) == method)
            ]
            if chosen.empty:
                continue
            _series(spearman_ax, chosen, "spearman", colors[method], marker, linestyle, offsets[method])
            _series(shift_ax, chosen, "shift", colors[method], marker, linestyle, offsets[method])
    _thresholds(metric_ax, spearman_ax, shift_ax, rows, levels)
    unlevelled = sorted(set(rows.loc[rows["level"].isna(), "compression"].astype(str)))
    for ax, (_, title) in zip(axes, PANELS, strict=True):
        ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
        ax.set_xticks([*ticks, *([UNLEVELLED_X] if unlevelled else [])])
        ax.set_xticklabels([f"{t:g}" for t in ticks] + (["/".join(unlevelled)] if unlevelled else []))
        ax.set_xlim(-0.08, UNLEVELLED_X + 0.12)
        ax.set_title(f"{title} vs parent", fontsize=fontsize)
        ax.tick_params(labelsize=fontsize - 1)
        ax.grid(alpha=0.3)
    metric = str(levels["metric"].iloc[0]) if not levels.empty else "metric"
    metric_ax.set_ylabel(f"{metric} change", fontsize=fontsize)
    rows_, columns = GRID[size]
    # one x label, under the bottom row's middle panel: the panels share their levels
    axes[(rows_ - 1) * columns + columns // 2].set_xlabel(
        "compression level (magnitude: sparsity; channels: share of channels)", fontsize=fontsize
    )
    fig.suptitle(f"{parent}, compressed", fontsize=fontsize + 1)
    handles = [Line2D([], [], color=c, linewidth=1.2, label=m) for m, c in colors.items()]
    handles += [
        Line2D([], [], color="grey", marker=mk, linestyle=ls, markersize=3, label=c)
        for c, (mk, ls) in styles.items()
    ]
    fig.legend(handles=handles, loc="outside lower center", fontsize=fontsize - 1, ncol=min(len(handles), 6))
    return fig


def _thresholds(
    metric_ax: Axes, spearman_ax: Axes, shift_ax: Axes, rows: pd.DataFrame, levels: pd.DataFrame
) -> None:
    """The study's fixed thresholds as dashed lines: −metric tolerance, the Spearman floor, ±shift tolerance."""
    if not levels.empty:
        _dashed(metric_ax, -float(levels["tolerance"].iloc[0]))
    _dashed(spearman_ax, float(rows["floor"].iloc[0]))
    tolerance = float(rows["tolerance"].iloc[0])
    for bound in (-tolerance, tolerance):
        _dashed(shift_ax, bound)


def _dashed(ax: Axes, y: float) -> None:
    ax.axhline(y, color="black", linestyle="--", linewidth=0.7)


def _level_text(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:g}"


def _cell(value: Any) -> str:
    """A text cell that may have read back empty (a missing value)."""
    return value if isinstance(value, str) else ""


def onset_sentence(row: Mapping[str, Any]) -> str:
    """What one parent × compression × method's onset says: where the profile was first shown to drift and
    the metric first shown to drop, and which came first."""
    name = f"{row['parent']} · {row['method']}, {row['compression']}"
    drift, drop = _cell(row["drift_model"]), _cell(row["drop_model"])
    drifted = (
        f"the profile was first shown to drift at level {_level_text(float(row['drift_level']))} ({drift})"
    )
    dropped = f"the task metric first shown to drop at level {_level_text(float(row['drop_level']))} ({drop})"
    if not drift and not drop:
        return f"{name}: neither the profile nor the task metric was shown to move at the {row['levels']} level(s) tested."
    if not drop:
        return f"{name}: {drifted}; the task metric was not shown to drop at any level tested: the profile moved first."
    if not drift:
        return f"{name}: {dropped}; the profile was not shown to drift at any level tested: the metric moved first."
    return f"{name}: {drifted}, {dropped}: {row['order']}."


def headline_sentence(onset: pd.DataFrame) -> str:
    """Does the profile drift before the accuracy drops? Counted over every parent × compression × method."""
    counts = onset["order"].astype(str).value_counts()
    parts = ", ".join(f"{counts[order]} {order}" for order in ONSET_ORDERS if order in counts)
    return (
        f"Does the profile drift before the task metric drops? Over {len(onset)} parent × compression × method "
        f"series: {parts} (first level at which each is shown beyond its threshold by its {LEVEL} CI)."
    )


def levels_table(levels: pd.DataFrame) -> pd.DataFrame:
    """The variants as the section lists them: how each was made and its task metric against the parent's."""
    return pd.DataFrame(
        {
            "model": levels["model"],
            "parent": levels["parent"],
            "compression": levels["compression"],
            "level": levels["level"],
            "sparsity": levels["sparsity"],
            "MB": levels["bytes"] / 1e6,
            "metric": levels["metric"],
            "parent's": levels["parent_value"],
            "variant's": levels["value"],
            f"change [{LEVEL} CI]": [
                interval_text(v, lo, hi, "+.3f")
                for v, lo, hi in zip(
                    levels["change"], levels["change_ci_low"], levels["change_ci_high"], strict=True
                )
            ],
            "dropped": levels["dropped"],
        }
    )


def agreement_table(agreement: pd.DataFrame) -> str:
    """Per variant × method: Spearman [CI], the largest class shift [CI] and the verdict, as HTML."""
    head = (
        "model",
        "method",
        f"Spearman ρ [{LEVEL} CI]",
        "largest class shift",
        f"shift [{LEVEL} CI]",
        "verdict",
    )
    rows = []
    for r in agreement.to_dict("records"):
        spearman = (
            "—"
            if not math.isfinite(float(r["spearman"]))
            else f"{r['spearman']:.3f} [{r['spearman_ci_low']:.3f}, {r['spearman_ci_high']:.3f}]"
        )
        verdict = _cell(r["gate"])
        failed = _cell(r["gate_failed"])
        cells = [escape(str(r["model"])), escape(str(r["method"])), spearman]
        cells += [escape(f"{_cell(r['shift_class']) or '—'} ({r['statistic']})")]
        cells += [interval_text(r["shift"], r["shift_ci_low"], r["shift_ci_high"], "+.3f")]
        cells += [verdict_span(verdict + (f" ({failed})" if failed else ""), verdict)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return scroll(f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def compression_section(results: Results) -> str:
    """The study's text (the figures lead the section): the headline count, each series' onset, the variants
    with their task metric, and each variant × method's agreement and verdict ("" when the study did not run)."""
    if not has_study(results):
        return ""
    agreement = _agreement(results)
    first = agreement.iloc[0]
    intro = paragraph(
        "Each compressed model is set against its parent on the same images: its profile's Spearman ρ with the "
        f"parent's ({LEVEL} image-bootstrap CI), the class whose per-image {first['statistic']} moved most "
        f"(paired {LEVEL} CI), and the task metric's change on the test split (paired {LEVEL} CI). A profile is "
        f"shown to drift when its Spearman CI lies below {float(first['floor']):g} or a class's shift CI lies "
        f"beyond ±{float(first['tolerance']):g}; these thresholds were fixed before the study ran. The verdict "
        "fails when an interval lies beyond its threshold, passes when every one lies within, else is inconclusive."
    )
    onset = results.compression_onset
    sentences = (
        ""
        if onset is None or onset.empty
        else paragraph(headline_sentence(onset), "recommendation")
        + "".join(paragraph(onset_sentence(r)) for r in onset.to_dict("records"))
    )
    levels = _levels(results)
    levels_part = "" if levels.empty else table(levels_table(levels))
    return intro + sentences + levels_part + agreement_table(agreement)
