"""Paper figures from the results tables: profiles, heatmaps, paired profiles, overlays, attention.

Every function returns a `matplotlib.figure.Figure` built without pyplot, so no global figure
state piles up and the Agg canvas is used whatever the session's backend.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from gradsum.errors import ResultsError, ShapeError, UnknownNameError
from gradsum.evaluation.checks.sanity import CASCADING, SIGNED_SIMILARITY, VERDICT_SIMILARITY
from gradsum.fileio import atomic_write_bytes
from gradsum.truthsets.labels import CITYSCAPES, cityscapes_palette

#: Profile measures: the mean column and its confidence-interval columns in profiles.csv.
MEASURES: dict[str, tuple[str, str, str]] = {
    "score": ("score_mean", "score_ci_low", "score_ci_high"),
    "mass_share": ("mass_share", "mass_share_ci_low", "mass_share_ci_high"),
    "lift": ("lift", "lift_ci_low", "lift_ci_high"),
}
MEASURE_LABELS = {"score": "GradSUM score", "mass_share": "share of attribution mass", "lift": "lift"}
FORMATS = ("png", "svg")
DPI = 110
#: Figure widths in inches for a paper's single and double column (two-column journal layouts).
COLUMN_WIDTHS = {"single": 3.5, "double": 7.16}
#: Hatches that tell the series of a grouped profile apart, since colour already encodes the class.
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "++", "--", "**", "||")
_METADATA = {"png": {"Software": None}, "svg": {"Date": None}}


@dataclass(frozen=True)
class OverlayData:
    """Samples to draw in the overlay grid: images, Cityscapes label ids and attribution maps by name."""

    images: np.ndarray
    labels: np.ndarray
    maps: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        n, h, w = self.labels.shape
        if self.images.shape != (n, h, w, 3):
            raise ShapeError(f"overlay images: expected shape {(n, h, w, 3)}, got {self.images.shape}")
        for name, maps in self.maps.items():
            if maps.shape != (n, h, w):
                raise ShapeError(f"overlay map {name!r}: expected shape {(n, h, w)}, got {maps.shape}")


def measure_columns(measure: str) -> tuple[str, str, str]:
    """The mean and CI columns of a profile measure; an unknown measure raises listing the valid ones."""
    if measure not in MEASURES:
        raise UnknownNameError(f"unknown profile measure {measure!r}; valid: {', '.join(MEASURES)}")
    return MEASURES[measure]


def class_color(class_id: int) -> tuple[float, float, float]:
    """The Cityscapes colour of a class id as an RGB triple in 0..1 (grey for unknown ids)."""
    info = CITYSCAPES.by_id.get(int(class_id))
    rgb = info.color if info is not None else (128, 128, 128)
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def label(model: str, method: str) -> str:
    """The display label of one model × method."""
    return f"{model} · {method}"


def _select(profiles: pd.DataFrame, model: str, method: str) -> pd.DataFrame:
    rows = profiles[(profiles["model"] == model) & (profiles["method"] == method)]
    if rows.empty:
        raise ResultsError(f"profiles: no rows for model {model!r} and method {method!r}")
    return rows


def ci_errors(values: np.ndarray | pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Matplotlib's (2, N) error-bar lengths of `values` to their interval [`low`, `high`]."""
    # A figure without an interval (a class seen in one image, a level with nothing to resample) draws no
    # whisker rather than dropping its point or bar.
    v = np.asarray(values, dtype=float)
    return np.nan_to_num(np.clip(np.vstack([v - low.to_numpy(float), high.to_numpy(float) - v]), 0, None))


def _bars(ax: Axes, rows: pd.DataFrame, measure: str, order: Sequence[str]) -> None:
    mean, low, high = measure_columns(measure)
    rows = rows.set_index("class").reindex(order).dropna(subset=[mean])
    x = np.arange(len(rows))
    values = rows[mean].to_numpy(float)
    colors = [class_color(i) for i in rows["class_id"]]
    ax.bar(x, values, color=colors, edgecolor="black", linewidth=0.5)
    ax.errorbar(
        x, values, yerr=ci_errors(values, rows[low], rows[high]), fmt="none", ecolor="black", capsize=2
    )
    ax.set_xticks(x, rows.index, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(MEASURE_LABELS[measure])
    ax.grid(axis="y", alpha=0.3)


def profile_bar(profiles: pd.DataFrame, model: str, method: str, measure: str = "score") -> Figure:
    """The GradSUM talk's profile figure: one bar per class in Cityscapes order and colours, CI error bars."""
    rows = _select(profiles, model, method)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    _bars(ax, rows, measure, class_order(rows))
    ax.set_title(f"{label(model, method)} profile")
    return fig


def class_order(table: pd.DataFrame) -> list[str]:
    """The classes of a table (`class`, `class_id` columns) in Cityscapes order: the order of every plot."""
    ids = table.drop_duplicates("class").sort_values("class_id", kind="stable")
    return list(ids["class"])


def _class_ids(table: pd.DataFrame) -> dict[str, int]:
    return {str(c): int(i) for c, i in zip(table["class"], table["class_id"], strict=True)}


def _check_grouped(profiles: pd.DataFrame, group: str, size: str) -> None:
    if size not in COLUMN_WIDTHS:
        raise ResultsError(
            f"grouped profile figure: size must be one of {sorted(COLUMN_WIDTHS)}, not {size!r}"
        )
    if group not in profiles.columns:
        raise ResultsError(f"profiles: no column {group!r} to group the profile bars by")
    if profiles.empty:
        raise ResultsError("profiles: no rows to draw a grouped profile figure from")


def _grouped_bars(ax: Axes, profiles: pd.DataFrame, group: str, measure: str, fontsize: int) -> list[str]:
    """One bar per `group` value in each class (Cityscapes order and colours, hatch per series, CI
    whiskers) on `ax`; returns the series in order of first appearance."""
    mean, low, high = measure_columns(measure)
    order, ids = class_order(profiles), _class_ids(profiles)
    series = list(dict.fromkeys(profiles[group].astype(str)))
    step = 0.8 / len(series)
    for i, name in enumerate(series):
        rows = profiles[profiles[group].astype(str) == name].set_index("class").reindex(order)
        present = rows[mean].notna().to_numpy()
        x = np.arange(len(order))[present] - 0.4 + step * (i + 0.5)
        values = rows[mean].to_numpy(float)[present]
        colors = [class_color(ids[c]) for c in rows.index[present]]
        hatch = HATCHES[i % len(HATCHES)]
        ax.bar(x, values, step, color=colors, edgecolor="black", linewidth=0.4, hatch=hatch, label=name)
        errors = ci_errors(values, rows[low][present], rows[high][present])
        ax.errorbar(x, values, yerr=errors, fmt="none", ecolor="black", elinewidth=0.6, capsize=1)
    ax.set_xticks(np.arange(len(order)), order, rotation=60, ha="right", fontsize=fontsize)
    ax.tick_params(axis="y", labelsize=fontsize)
    ax.set_ylabel(MEASURE_LABELS[measure], fontsize=fontsize + 1)
    ax.grid(axis="y", alpha=0.3)
    return series


def _series_legend(fig: Figure, series: Sequence[str], fontsize: int) -> None:
    handles = [
        Patch(facecolor="white", edgecolor="black", hatch=HATCHES[i % len(HATCHES)], label=name)
        for i, name in enumerate(series)
    ]
    # Above the axes, not over them: the bars fill the axes' height in every class.
    fig.legend(handles=handles, loc="outside upper center", fontsize=fontsize - 1, ncol=min(len(series), 3))


def _fontsize(size: str) -> int:
    return 7 if size == "double" else 6


def grouped_profile_figure(
    profiles: pd.DataFrame,
    group: str = "model",
    *,
    measure: str = "score",
    size: str = "double",
    title: str | None = None,
) -> Figure:
    """The paper figure: classes on the x axis in Cityscapes order, one bar per `group` value in each class.

    `profiles` holds the rows to draw (a profiles.csv subset); `group` names the column whose values are
    the series (`model`, `method`, or any column the caller adds, such as a "model · method" label), in
    order of first appearance. Bars take their class's Cityscapes colour, series differ by hatch (legend),
    and whiskers show the measure's CI. `size` is the paper column width: "single" or "double".
    """
    _check_grouped(profiles, group, size)
    width, fontsize = COLUMN_WIDTHS[size], _fontsize(size)
    fig = Figure(figsize=(width, 0.45 * width if size == "double" else 0.75 * width), layout="constrained")
    ax = fig.add_subplot()
    series = _grouped_bars(ax, profiles, group, measure, fontsize)
    _series_legend(fig, series, fontsize)
    if title:
        ax.set_title(title, fontsize=fontsize + 2)
    return fig


#: The lift at which a class holds the attribution mass its area gives it (mass share = area share).
EVEN_LIFT = 1.0


def headline_figure(
    profiles: pd.DataFrame, group: str = "model", *, size: str = "double", title: str | None = None
) -> Figure:
    """The headline: the GradSUM score profile and, beside it, the lift (mass share ÷ area share) profile.

    The score's scale depends on the method's maps; the lift is scale-free (1: the class holds the mass
    share its area gives it, marked by a dashed line), so profiles of different methods share its axis.
    At a double column the panels sit side by side; a single column stacks them.
    """
    _check_grouped(profiles, group, size)
    width, fontsize = COLUMN_WIDTHS[size], _fontsize(size)
    shape, height = ((1, 2), 0.45 * width) if size == "double" else ((2, 1), 1.3 * width)
    fig = Figure(figsize=(width, height), layout="constrained")
    score, lift = fig.subplots(*shape, squeeze=True)
    series = _grouped_bars(score, profiles, group, "score", fontsize)
    _grouped_bars(lift, profiles, group, "lift", fontsize)
    lift.axhline(EVEN_LIFT, color="black", linestyle="--", linewidth=0.6)
    lift.set_ylabel("lift (mass share ÷ area share)", fontsize=fontsize + 1)
    _series_legend(fig, series, fontsize)
    # Panel titles, not a suptitle: constrained layout stacks a suptitle under the outside legend.
    if title:
        score.set_title(title, fontsize=fontsize + 2)
    lift.set_title("scale-free: the same for every method", fontsize=fontsize + 1)
    return fig


def profile_heatmap(profiles: pd.DataFrame, measure: str = "score") -> Figure:
    """Models × methods (rows) by classes (columns) heatmap of a profile measure; absent classes blank."""
    mean = measure_columns(measure)[0]
    table = profiles.assign(
        row=[label(m, k) for m, k in zip(profiles["model"], profiles["method"], strict=True)]
    )
    grid = table.pivot_table(index="row", columns="class", values=mean, sort=False)
    grid = grid.reindex(columns=class_order(profiles))
    fig = Figure(figsize=(max(6.0, 0.45 * grid.shape[1] + 3), max(2.5, 0.45 * grid.shape[0] + 1.8)))
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    sns.heatmap(
        grid,
        ax=ax,
        cmap="viridis",
        annot=grid.shape[1] <= 20,
        fmt=".2f",
        annot_kws={"fontsize": 7},
        cbar_kws={"label": MEASURE_LABELS[measure]},
    )
    ax.set_xlabel("class")
    ax.set_ylabel("")
    ax.set_title(f"{MEASURE_LABELS[measure]} by model and class")
    return fig


def paired_profile(
    profiles: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], measure: str = "score"
) -> Figure:
    """Two model × method profiles side by side per class (grouped bars with CIs), e.g. CNN vs ViT."""
    mean, low, high = measure_columns(measure)
    first, second = _select(profiles, *a), _select(profiles, *b)
    both = pd.concat([first, second])
    order, ids = class_order(both), _class_ids(both)
    fig = Figure(figsize=(max(7.0, 0.5 * len(order) + 2), 4), layout="constrained")
    ax = fig.add_subplot()
    colors = [class_color(ids[c]) for c in order]
    x = np.arange(len(order))
    width = 0.4
    for offset, rows, hatch in ((-width / 2, first, ""), (width / 2, second, "//")):
        rows = rows.set_index("class").reindex(order)
        values = rows[mean].to_numpy(float)
        ax.bar(x + offset, values, width, color=colors, edgecolor="black", linewidth=0.5, hatch=hatch)
        errors = ci_errors(values, rows[low], rows[high])
        ax.errorbar(x + offset, values, yerr=errors, fmt="none", ecolor="black", capsize=2)
    ax.set_xticks(x, order, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(MEASURE_LABELS[measure])
    ax.grid(axis="y", alpha=0.3)
    # Hatching, not colour, tells the two profiles apart because colour already encodes the class.
    handles = [
        Patch(facecolor="white", edgecolor="black", hatch=h, label=label(*p)) for h, p in (("", a), ("//", b))
    ]
    ax.legend(handles=handles, fontsize=8)
    ax.set_title(f"{label(*a)} vs {label(*b)}")
    return fig


def colorize(labels: np.ndarray) -> np.ndarray:
    """Cityscapes ids (H, W) as an RGB uint8 image in the Cityscapes colours."""
    return cityscapes_palette()[np.clip(labels, 0, len(cityscapes_palette()) - 1)]


def overlay_grid(data: OverlayData, alpha: float = 0.5) -> Figure:
    """Rows = samples; columns = image, class map, then each attribution map over the image."""
    names = list(data.maps)
    n = data.labels.shape[0]
    columns = 2 + len(names)
    fig = Figure(figsize=(2.4 * columns, 2.0 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, columns, squeeze=False)
    for row in range(n):
        panels = [("image", data.images[row], None), ("classes", colorize(data.labels[row]), None)]
        panels += [(name, data.images[row], data.maps[name][row]) for name in names]
        for ax, (title, picture, heat) in zip(axes[row], panels, strict=True):
            ax.imshow(picture)
            if heat is not None:
                ax.imshow(heat, cmap="jet", alpha=alpha)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    return fig


def attention_entropy(attention: pd.DataFrame, model: str) -> Figure:
    """Layer × head heatmap of attention entropy relative to uniform (1 = uniform attention)."""
    rows = attention[attention["model"] == model]
    if rows.empty:
        raise ResultsError(f"attention: no rows for model {model!r}")
    grid = rows.pivot_table(index="layer", columns="head", values="entropy_ratio")
    fig = Figure(figsize=(max(4.0, 0.5 * grid.shape[1] + 2), max(3.0, 0.35 * grid.shape[0] + 1.5)))
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    sns.heatmap(
        grid,
        ax=ax,
        vmin=0,
        vmax=1,
        cmap="magma",
        annot=grid.size <= 150,
        fmt=".2f",
        annot_kws={"fontsize": 6},
    )
    ax.set_title(f"{model}: attention entropy ÷ uniform")
    return fig


def attention_layers(attention_profiles: pd.DataFrame, model: str) -> Figure:
    """Raw-attention class profile per layer: one line per class (Cityscapes colour) with its CI band."""
    rows = attention_profiles[attention_profiles["model"] == model]
    if rows.empty:
        raise ResultsError(f"attention_profiles: no rows for model {model!r}")
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for (class_id, name), line in rows.sort_values("layer").groupby(["class_id", "class"], sort=True):
        color = class_color(int(class_id))
        ax.plot(line["layer"], line["score_mean"], marker="o", ms=3, color=color, label=name)
        ax.fill_between(line["layer"], line["score_ci_low"], line["score_ci_high"], color=color, alpha=0.2)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("raw-attention score")
    ax.set_title(f"{model}: raw-attention class profile per layer (flat = uniform)")
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    return fig


def method_panel(
    profiles: pd.DataFrame,
    model: str,
    methods: Sequence[str],
    measure: str = "score",
    titles: Sequence[str] | None = None,
) -> Figure:
    """One model's profiles under several methods side by side (hybrid ViT: tokenizer, attention, full, combined).

    Classes take Cityscapes order in every panel so that bars line up across panels;
    `titles` (default: the method names) head the panels.
    """
    if not methods:
        raise ValueError("method_panel: methods is empty")
    panels = [_select(profiles, model, m) for m in methods]
    order = class_order(pd.concat(panels))
    fig = Figure(figsize=(4.2 * len(methods), 4), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    for ax, title, rows in zip(axes, titles or methods, panels, strict=True):
        _bars(ax, rows, measure, order)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"{model}: profiles by method")
    return fig


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure encoded as PNG or SVG, without timestamps so the bytes repeat."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # A fixed salt and no date make SVG ids and bytes repeatable run to run.
    with matplotlib.rc_context({"svg.hashsalt": "gradsum", "svg.fonttype": "path"}):
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
    return buffer.getvalue()


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write `<stem>.png` and `<stem>.svg` atomically and release the figure."""
    paths = [atomic_write_bytes(Path(f"{stem}.{fmt}"), figure_bytes(fig, fmt)) for fmt in FORMATS]
    fig.clear()
    return paths


def causal_profile(causal_profiles: pd.DataFrame, model: str, effect: str = "abs_delta") -> Figure:
    """The causal profile of one model: the output change when each class is erased (Cityscapes order), CIs."""
    rows = causal_profiles[(causal_profiles["model"] == model) & (causal_profiles["effect"] == effect)]
    if rows.empty:
        raise ResultsError(f"causal_profiles: no {effect} rows for model {model!r}")
    rows = rows.sort_values("class_id", kind="stable")
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    values = rows["mean"].to_numpy(float)
    ax.bar(x, values, color=[class_color(i) for i in rows["class_id"]], edgecolor="black", linewidth=0.5)
    ax.errorbar(
        x, values, yerr=ci_errors(values, rows["ci_low"], rows["ci_high"]), fmt="none", ecolor="black"
    )
    ax.set_xticks(x, rows["class"], rotation=60, ha="right", fontsize=8)
    domains = ", ".join(sorted(set(rows["domain"].astype(str))))
    ax.set_ylabel("|output change| when erased")
    ax.set_title(f"{model}: causal profile (erasure {'in-domain' if domains == 'in' else 'out-of-domain'})")
    ax.grid(axis="y", alpha=0.3)
    return fig


def granularity(table: pd.DataFrame, model: str) -> Figure:
    """Causal agreement and mass on the cause per layer depth, one line per CAM method, grid in the ticks."""
    rows = table[table["model"] == model].sort_values("depth")
    if rows.empty:
        raise ResultsError(f"granularity: no rows for model {model!r}")
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (
        ("agreement", "agreement with the causal profile (Spearman)"),
        ("cause_mass", "mass on the cause"),
    )
    for ax, (column, title) in zip(axes, panels, strict=True):
        for method, group in rows.groupby("method", sort=True):
            ax.errorbar(
                group["depth"],
                group[column],
                yerr=ci_errors(
                    group[column].to_numpy(float), group[f"{column}_ci_low"], group[f"{column}_ci_high"]
                ),
                marker="o",
                markersize=3,
                capsize=2,
                label=str(method),
            )
        ticks = rows.drop_duplicates("depth")
        ax.set_xticks(
            ticks["depth"],
            [f"{layer}\n{grid}" for layer, grid in zip(ticks["layer"], ticks["grid"], strict=True)],
            rotation=60,
            ha="right",
            fontsize=7,
        )
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].plot(rows["depth"], rows["cause_area"], color="grey", linestyle="--", label="cause area share")
    axes[1].legend(fontsize="small")
    fig.suptitle(f"{model}: granularity sweep (shallow → deep)")
    return fig


#: the two panels of the cascading figure: similarity → title
SANITY_PANELS = {
    VERDICT_SIMILARITY: "Spearman rank correlation, |map|",
    SIGNED_SIMILARITY: "Spearman rank correlation, signed",
}


def cascading_figure(table: pd.DataFrame, model: str) -> Figure:
    """Adebayo et al.'s cascading plot for one model: similarity to the original map per randomised block.

    x: the blocks in cascade order ("original" first); one line per method with its CI band (tables
    written before model-free methods left the check mark their null explainers, drawn dashed grey).
    """
    rows = table[(table["model"] == model) & (table["mode"] == CASCADING)]
    if rows.empty:
        raise ResultsError(f"model: the sanity table has no cascading rows for {model!r}")
    ticks = rows[["step", "block"]].drop_duplicates().sort_values("step")
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots(1, len(SANITY_PANELS), sharey=True)
    for axis, (similarity, title) in zip(axes, SANITY_PANELS.items(), strict=True):
        for method, group in rows[rows["similarity"] == similarity].groupby("method", sort=True):
            group = group.sort_values("step")
            null = "null" in group and bool(group["null"].iloc[0])
            style: dict[str, Any] = (
                {"color": "grey", "linestyle": "--", "linewidth": 1.0}
                if null
                else {"marker": "o", "markersize": 3}
            )
            (line,) = axis.plot(group["step"], group["value"], label=str(method), **style)
            axis.fill_between(
                group["step"], group["ci_low"], group["ci_high"], color=line.get_color(), alpha=0.12
            )
        axis.set_xticks(ticks["step"].tolist(), ticks["block"].tolist(), rotation=45, ha="right")
        axis.set_title(title)
        axis.set_xlabel("randomised block (cascading, from the output)")
        axis.set_ylim(-1.05, 1.05)
    axes[0].set_ylabel("similarity to the original map")
    legend_axis = next((axis for axis in reversed(axes) if axis.get_legend_handles_labels()[0]), None)
    if legend_axis is not None:
        legend_axis.legend(fontsize="small", loc="lower left")
    figure.suptitle(f"{model}: cascading model randomisation")
    return figure
