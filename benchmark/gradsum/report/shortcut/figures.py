"""The Shortcuts section's figures: each method's cue mass against the measured pull, the cue mass by
rho per series, and the fine-tuning seeds before and after (intervals from `gradsum.evaluation.checks.shortcut`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gradsum.evaluation.checks.shortcut import t_interval
from gradsum.report.page import with_ci
from gradsum.report.plots import ci_errors
from gradsum.report.shortcut.section import QUANTITY_LABELS, finetune_long, quantities, rho_text
from gradsum.report.shortcut.tables import ShortcutTables

#: The model-level quantities the fine-tuning figure draws (every one is in its table).
FIGURE_QUANTITIES = ("r2_decorrelated", "r2_in_distribution", "pull")


def series_colors(tables: ShortcutTables) -> dict[str, tuple[float, float, float, float]]:
    """One colour per series (tab10, in series order), the same in every figure."""
    palette = matplotlib.colormaps["tab10"]
    return {series: palette(i % palette.N) for i, series in enumerate(tables.series)}


def _grid(count: int, columns: int, panel: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    rows = max(1, math.ceil(count / columns))
    columns = max(1, min(columns, count))
    fig = Figure(figsize=(panel[0] * columns, panel[1] * rows), layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False).ravel())
    for ax in axes[count:]:
        ax.set_axis_off()
    return fig, axes[:count]


def _legend(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the figure with every series drawn in any panel (a method may skip a series)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(text, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), fontsize=7, loc="upper right")


def detection_points(tables: ShortcutTables, method: str) -> pd.DataFrame:
    """The detection figure's points for one method: each model's pull and cue mass share with their CIs."""
    pull = tables.models[["model", "pull", "pull_ci_low", "pull_ci_high"]]
    rows = tables.methods[tables.methods["method"].astype(str) == method]
    return rows.merge(pull, on="model", how="inner").sort_values(["series", "rho", "model"], kind="stable")


def _marker_size(rho: pd.Series) -> np.ndarray:
    # Area grows with rho so the strongest shortcut stands out; a model without a known rho gets the smallest.
    return 20 + 100 * np.nan_to_num(rho.to_numpy(float))


def detection_figure(tables: ShortcutTables) -> Figure:
    """One panel per real method: causal pull (x) against cue mass share (y), CIs on both, a colour per
    series, marker area by rho (fine-tuned models as diamonds), the method's Spearman ρ [CI] as title."""
    methods = tables.real_methods
    fig, axes = _grid(len(methods), 3, (3.6, 3.0))
    colors = series_colors(tables)
    detection = tables.detection.set_index(tables.detection["method"].astype(str))
    for ax, method in zip(axes, methods, strict=True):
        points = detection_points(tables, method)
        for (series, finetuned), group in points.groupby(["series", "finetuned"], sort=True):
            color = colors[str(series)]
            ax.errorbar(
                group["pull"],
                group["cue_mass_share"],
                xerr=ci_errors(group["pull"], group["pull_ci_low"], group["pull_ci_high"]),
                yerr=ci_errors(
                    group["cue_mass_share"], group["cue_mass_share_ci_low"], group["cue_mass_share_ci_high"]
                ),
                fmt="none",
                ecolor=color,
                elinewidth=0.8,
                alpha=0.7,
            )
            ax.scatter(
                group["pull"],
                group["cue_mass_share"],
                s=_marker_size(group["rho"]),
                color=color,
                marker="D" if finetuned else "o",
                edgecolor="black",
                linewidth=0.5,
                label=f"{series}{' fine-tuned' if finetuned else ''}",
                zorder=3,
            )
            for x, y, rho in zip(group["pull"], group["cue_mass_share"], group["rho"], strict=True):
                ax.annotate(
                    rho_text(float(rho)), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=6
                )
        ax.set_title(f"{method}: Spearman ρ = {with_ci(detection.loc[method], 'spearman')}", fontsize=9)
        ax.set_xlabel("causal pull of the tint (steering units)", fontsize=8)
        ax.set_ylabel("cue mass share", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle("Does the cue mass follow the causal pull? (labels: rho)", fontsize=10)
    return fig


def series_points(tables: ShortcutTables, method: str) -> pd.DataFrame:
    """The series figure's points for one method: models not fine-tuned with a known rho, by series and rho."""
    rows = tables.methods[(tables.methods["method"].astype(str) == method) & ~tables.methods["finetuned"]]
    return rows[rows["rho"].notna()].sort_values(["series", "rho"], kind="stable")


def series_figure(tables: ShortcutTables) -> Figure:
    """One panel per real method: cue mass share against rho (categorical axis), a line per series, the
    series' fair model (rho 0) interval as a band."""
    methods = tables.real_methods
    fig, axes = _grid(len(methods), 3, (3.4, 2.8))
    colors = series_colors(tables)
    for ax, method in zip(axes, methods, strict=True):
        points = series_points(tables, method)
        rhos = sorted(points["rho"].astype(float).unique())
        for series, group in points.groupby("series", sort=True):
            color = colors[str(series)]
            x = [rhos.index(float(r)) for r in group["rho"]]
            ax.errorbar(
                x,
                group["cue_mass_share"],
                yerr=ci_errors(
                    group["cue_mass_share"], group["cue_mass_share_ci_low"], group["cue_mass_share_ci_high"]
                ),
                color=color,
                marker="o",
                markersize=4,
                capsize=2,
                label=str(series),
            )
            fair = group[group["rho"] == 0]
            if not fair.empty:
                ax.axhspan(
                    float(fair["cue_mass_share_ci_low"].iloc[0]),
                    float(fair["cue_mass_share_ci_high"].iloc[0]),
                    color=color,
                    alpha=0.15,
                    linewidth=0,
                )
        ax.set_xticks(range(len(rhos)), [rho_text(r) for r in rhos])
        ax.set_xlabel("rho (tint agreement in training)", fontsize=8)
        ax.set_ylabel("cue mass share", fontsize=8)
        ax.set_title(method, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    fig.suptitle("Cue mass share by rho (band: the fair model's 95% CI)", fontsize=10)
    return fig


def finetune_figure(tables: ShortcutTables) -> Figure:
    """Before and after fine-tuning, per base: seeds as dots joined pairwise, the mean with its 95% t
    interval; one panel per quantity (R² decorrelated, R² in distribution, pull, each method's masses)."""
    long = finetune_long(tables)
    shown = [QUANTITY_LABELS[q] for q in FIGURE_QUANTITIES] + [q for q in quantities(long) if " · " in q]
    bases = sorted(long["base"].unique())
    fig, axes = _grid(len(shown), 4, (2.6, 2.6))
    palette = matplotlib.colormaps["tab10"]
    for ax, quantity in zip(axes, shown, strict=True):
        for i, base in enumerate(bases):
            rows = long[(long["base"] == base) & (long["quantity"] == quantity)]
            color = palette(i % palette.N)
            x = np.array([2 * i, 2 * i + 1], dtype=float)
            for before, after in zip(rows["before"], rows["after"], strict=True):
                ax.plot(x, [before, after], color=color, alpha=0.35, linewidth=0.8, marker="o", markersize=3)
            for xi, column in zip(x, ("before", "after"), strict=True):
                mean = t_interval(rows[column])
                low, high = (mean.low, mean.high) if math.isfinite(mean.low) else (mean.mean, mean.mean)
                ax.errorbar(
                    [xi + 0.15],
                    [mean.mean],
                    yerr=[[mean.mean - low], [high - mean.mean]],
                    color=color,
                    marker="_",
                    markersize=10,
                    capsize=3,
                    linewidth=1.2,
                )
        ticks = [f"{base}\n{when}" for base in bases for when in ("before", "after")]
        ax.set_xticks(range(len(ticks)), ticks, fontsize=6)
        ax.set_title(quantity, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Relevance-guided fine-tuning: seeds (dots), mean with 95% t interval", fontsize=10)
    return fig
