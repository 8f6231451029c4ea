"""The report's Label quality section and its figure, from the label-quality study's tables (`labels` config).

The study (`gradsum.pipeline.label_quality`) relabels the evaluated images at several levels (the exact
labels degraded, or a segmenter's predictions), recomputes every model × method profile from the same maps
under each level's labels, and compares it with the exact-label profile (Spearman ρ with an image-bootstrap
CI). The label mIoU below which a profile stopped agreeing, the verdicts that changed, the classes that moved
most and what a Cityscapes category profile hides all come from its tables; this module only formats and
draws them. The section exists only when the study ran.
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

from gradsum.aggregation.label_quality import CONFIDENCE
from gradsum.contract import LABEL_AGREEMENT
from gradsum.errors import ResultsError
from gradsum.report.findings import best_methods
from gradsum.report.page import interval_text, paragraph, scroll, table, verdict_span
from gradsum.report.plots import COLUMN_WIDTHS, ci_errors, label
from gradsum.report.results import Results

#: Marker of each level kind, handed out in the order of the kinds' names (a kind the study adds later
#: gets the next one, so no list of kinds is kept here).
MARKERS = ("s", "^", "v", "o", "D", "P", "X", "*", "h", "<", ">")
#: Panels per row of the agreement figure at each column width.
PANEL_COLUMNS = {"single": 2, "double": 3}
#: Inches: a panel is at most this tall, so that one or two models do not fill a page.
MAX_PANEL_HEIGHT = 2.6
#: Text size and legend columns of the agreement figure at each column width (report and paper alike).
FONTSIZES = {"single": 6, "double": 7}
LEGEND_COLUMNS = {"single": 3, "double": 5}
#: How many per-class changes the section lists: the largest by relative change of the class's profile.
TOP_CLASS_CHANGES = 10
#: The level of the study's intervals, as the section names it.
LEVEL = f"{CONFIDENCE:.0%}"


def has_study(results: Results) -> bool:
    """True when the folder holds the study's agreement table with at least one row."""
    return _table(results.label_agreement) is not None


def _table(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """A study table, or None when absent or without rows (a part of the study that did not run)."""
    return None if frame is None or frame.empty else frame


def _agreement(results: Results) -> pd.DataFrame:
    agreement = _table(results.label_agreement)
    if agreement is None:
        raise ResultsError(
            f"{results.path / LABEL_AGREEMENT.file}: missing or empty; no label-quality study in this folder"
        )
    return agreement


def method_colors(methods: Sequence[str]) -> dict[str, Any]:
    """One colour per method (tab10, in the order given), the same in every panel."""
    palette = matplotlib.colormaps["tab10"]
    return {method: palette(i % palette.N) for i, method in enumerate(methods)}


def kind_markers(kinds: Sequence[str]) -> dict[str, str]:
    """One marker per level kind, in the order of the kinds' names."""
    return {kind: MARKERS[i % len(MARKERS)] for i, kind in enumerate(sorted(set(kinds)))}


def _kinds(results: Results, agreement: pd.DataFrame) -> pd.Series:
    """The kind of each agreement row's level (the level's own name when the levels table lacks it)."""
    levels = _table(results.label_levels)
    known = (
        {}
        if levels is None
        else dict(zip(levels["level"].astype(str), levels["kind"].astype(str), strict=True))
    )
    return agreement["level"].astype(str).map(lambda level: known.get(level, level))


def _panel(
    ax: Axes,
    rows: pd.DataFrame,
    thresholds: pd.DataFrame,
    colors: Mapping[str, Any],
    markers: Mapping[str, str],
) -> None:
    """One model's panel: per method the curve of ρ [CI] over label mIoU, each level marked by its kind,
    the agreement floor dashed and each method's threshold as a dotted vertical line."""
    for method, group in rows.groupby("method", sort=False):
        group = group.sort_values("miou", kind="stable")
        color = colors[str(method)]
        x, y = group["miou"].to_numpy(float), group["spearman"].to_numpy(float)
        ax.plot(x, y, color=color, linewidth=0.8, alpha=0.6)
        ax.errorbar(
            x,
            y,
            yerr=ci_errors(y, group["spearman_ci_low"], group["spearman_ci_high"]),
            fmt="none",
            ecolor=color,
            elinewidth=0.7,
            capsize=1.5,
        )
        for kind, points in group.groupby("kind", sort=False):
            ax.scatter(
                points["miou"],
                points["spearman"],
                marker=markers[str(kind)],
                color=color,
                edgecolor="black",
                linewidth=0.4,
                s=18,
                zorder=3,
            )
        threshold = thresholds.loc[thresholds["method"] == method, "miou_threshold"]
        if not threshold.empty and math.isfinite(float(threshold.iloc[0])):
            ax.axvline(float(threshold.iloc[0]), color=color, linestyle=":", linewidth=1.0)
    floors = thresholds["agreement"].dropna()
    if not floors.empty:
        ax.axhline(float(floors.iloc[0]), color="black", linestyle="--", linewidth=0.7)
    ax.grid(alpha=0.3)


def _legend(
    fig: Figure, colors: Mapping[str, Any], markers: Mapping[str, str], thresholds: pd.DataFrame, size: str
) -> None:
    """One legend above the panels: the methods' colours, the kinds' markers, the floor and the thresholds."""
    handles = [Line2D([], [], color=c, linewidth=1.2, label=m) for m, c in colors.items()]
    handles += [
        Line2D([], [], linestyle="", marker=mk, markerfacecolor="grey", markeredgecolor="black", label=k)
        for k, mk in markers.items()
    ]
    floors = thresholds["agreement"].dropna()
    if not floors.empty:
        floor = f"agreement floor ({float(floors.iloc[0]):g})"
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.7, label=floor))
    if thresholds["miou_threshold"].notna().any():
        handles.append(Line2D([], [], color="grey", linestyle=":", label="threshold mIoU"))
    fig.legend(
        handles=handles,
        loc="outside upper center",
        fontsize=FONTSIZES[size] - 1,
        ncol=min(len(handles), LEGEND_COLUMNS[size]),
    )


def agreement_figure(results: Results, size: str = "double") -> Figure:
    """Profile agreement against label mIoU, one panel per model: each method's Spearman ρ with its
    exact-label profile and the ρ's CI at every level (marker: the level's kind), the agreement floor
    dashed, and each method's threshold mIoU (where it stopped agreeing) as a dotted line in its colour.

    `size` is the paper column width ("single" or "double"); a folder without the study raises.
    """
    if size not in COLUMN_WIDTHS:
        raise ResultsError(f"size: {size!r} is not one of {', '.join(COLUMN_WIDTHS)}")
    agreement = _agreement(results).assign(kind=lambda t: _kinds(results, t))
    thresholds = _table(results.label_thresholds)
    if thresholds is None:
        thresholds = pd.DataFrame(columns=["model", "method", "agreement", "miou_threshold"])
    models = list(dict.fromkeys(agreement["model"].astype(str)))
    colors = method_colors(list(dict.fromkeys(agreement["method"].astype(str))))
    markers = kind_markers(list(agreement["kind"]))
    columns = min(len(models), PANEL_COLUMNS[size])
    rows = math.ceil(len(models) / columns)
    width = COLUMN_WIDTHS[size]
    panel_height = min(0.75 * width / columns, MAX_PANEL_HEIGHT)
    fig = Figure(figsize=(width, panel_height * rows + 0.8), layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False, sharey=True).ravel())
    for ax in axes[len(models) :]:
        ax.set_axis_off()
    fontsize = FONTSIZES[size]
    for ax, model in zip(axes, models, strict=False):
        _panel(
            ax,
            agreement[agreement["model"].astype(str) == model],
            thresholds[thresholds["model"].astype(str) == model],
            colors,
            markers,
        )
        ax.set_title(model, fontsize=fontsize + 1)
        ax.tick_params(labelsize=fontsize - 1)
    # one label per axis for the whole figure: the panels share their scales, and at a single column a
    # label per panel would not fit
    fig.supxlabel("label mIoU (against the exact labels)", fontsize=fontsize)
    fig.supylabel("Spearman ρ with the exact-label profile", fontsize=fontsize)
    _legend(fig, colors, markers, thresholds, size)
    return fig


def ranked_above(agreement: pd.DataFrame, model: str, method: str, miou: float) -> tuple[int, int]:
    """(ranked, unranked): how many levels of label mIoU above `miou` one model × method has, with and
    without a Spearman CI (a level whose resamples could not be ranked has none)."""
    rows = agreement[(agreement["model"].astype(str) == model) & (agreement["method"].astype(str) == method)]
    above = rows[rows["miou"] > miou]
    ranked = int(above["spearman_ci_low"].notna().sum())
    return ranked, len(above) - ranked


def threshold_sentence(row: Mapping[str, Any], agreement: pd.DataFrame) -> str:
    """What one model × method's threshold says: the mIoU of the best level at which its profile's CI fell
    below the floor and how many levels above it agreed, or that every level tested agreed."""
    model, method, floor = str(row["model"]), str(row["method"]), float(row["agreement"])
    name = label(model, method)
    threshold, lowest = float(row["miou_threshold"]), float(row["lowest_miou_agreeing"])
    if not math.isfinite(threshold):
        if not math.isfinite(lowest):
            return f"{name}: no level's profile could be ranked against the exact-label profile."
        return (
            f"{name}: the profile agreed with the exact-label profile (Spearman CI lower bound ≥ {floor:g}) "
            f"at every level tested, down to label mIoU {lowest:.3f}."
        )
    failed = f"at label mIoU {threshold:.3f} its Spearman CI lower bound fell below {floor:g}"
    ranked, unranked = ranked_above(agreement, model, method, threshold)
    skipped = f"; {unranked} level(s) above could not be ranked" if unranked else ""
    if not ranked:
        return (
            f"{name}: {failed}, and no better labels were tested{skipped}: they must be better than "
            f"mIoU {threshold:.3f}, by how much this study cannot tell."
        )
    return (
        f"{name}: the profile agrees (Spearman CI lower bound ≥ {floor:g}) with labels of mIoU above "
        f"{threshold:.3f} (the {ranked} level(s) tested there{skipped}); {failed}."
    )


def headline_sentence(results: Results, thresholds: pd.DataFrame, agreement: pd.DataFrame) -> str:
    """How good labels must be on this set: the highest threshold over each model's headline method."""
    best = best_methods(results)
    shown = thresholds[
        [best.get(str(m)) == str(k) for m, k in zip(thresholds["model"], thresholds["method"], strict=True)]
    ]
    if shown.empty:
        return "No model's headline method is in the study."
    names = ", ".join(label(str(m), str(k)) for m, k in zip(shown["model"], shown["method"], strict=True))
    floor = float(shown["agreement"].iloc[0])
    failing = shown[shown["miou_threshold"].notna()]
    if failing.empty:
        return (
            f"How good labels must be on this set: every headline profile ({names}) agreed with its "
            f"exact-label profile (Spearman CI lower bound ≥ {floor:g}) at every level tested, down to label "
            f"mIoU {float(shown['lowest_miou_agreeing'].max()):.3f}."
        )
    worst = failing.loc[failing["miou_threshold"].idxmax()]
    model, method, threshold = str(worst["model"]), str(worst["method"]), float(worst["miou_threshold"])
    if not ranked_above(agreement, model, method, threshold)[0]:
        return (
            f"How good labels must be on this set: better than label mIoU {threshold:.3f}, the best labels "
            f"tested, at which {label(model, method)}'s profile fell below the floor ({floor:g}) among the "
            f"headline profiles ({names}); how much better, this study cannot tell."
        )
    return (
        f"How good labels must be on this set: at every level tested above label mIoU {threshold:.3f}, every "
        f"headline profile ({names}) agreed with its exact-label profile (Spearman CI lower bound ≥ "
        f"{floor:g}); the highest threshold is {label(model, method)}'s."
    )


def levels_table(levels: pd.DataFrame) -> pd.DataFrame:
    """The levels as the section lists them: how each was made and how well it matches the exact labels."""
    return pd.DataFrame(
        {
            "level": levels["level"],
            "kind": levels["kind"],
            "description": levels["description"],
            "mIoU": levels["miou"],
            "pixel accuracy": levels["pixel_accuracy"],
            "void share": levels["void_share"],
            "segmenter held-out mIoU": levels["held_out_miou"],
        }
    )


def verdict_counts(verdicts: pd.DataFrame, levels: pd.DataFrame | None) -> pd.DataFrame:
    """Per level (in table order): its mIoU, how many verdicts were compared and how many changed."""
    miou = {} if levels is None else dict(zip(levels["level"].astype(str), levels["miou"], strict=True))
    grouped = verdicts.groupby("level", sort=False)["changed"]
    counts = grouped.agg(compared="size", changed="sum").reset_index()
    counts.insert(1, "mIoU", counts["level"].astype(str).map(miou))
    return counts.astype({"changed": int})


def changed_verdicts(verdicts: pd.DataFrame) -> str:
    """The verdicts that changed as an HTML table: level, model, method, role, criterion, exact → level's."""
    rows = [
        "<tr>"
        + "".join(f"<td>{escape(str(r[c]))}</td>" for c in ("level", "model", "method", "role", "criterion"))
        + f"<td>{verdict_span(str(r['exact']), str(r['exact']))} → "
        f"{verdict_span(str(r['degraded']), str(r['degraded']))}</td></tr>"
        for r in verdicts[verdicts["changed"]].to_dict("records")
    ]
    head = "".join(
        f"<th>{h}</th>" for h in ("level", "model", "method", "role", "criterion", "exact labels → level's")
    )
    return scroll(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def largest_class_changes(classes: pd.DataFrame, top: int = TOP_CLASS_CHANGES) -> pd.DataFrame:
    """The `top` class profile changes largest in |relative change| over every level × model × method."""
    finite = classes[np.isfinite(classes["relative_change"].to_numpy(float))]
    order = finite["relative_change"].abs().sort_values(ascending=False, kind="stable").index
    chosen = finite.loc[order[:top]]
    return pd.DataFrame(
        {
            "level": chosen["level"],
            "model · method": [
                label(str(m), str(k)) for m, k in zip(chosen["model"], chosen["method"], strict=True)
            ],
            "class": chosen["class"],
            "exact-label score": chosen["exact"],
            "level's score": chosen["degraded"],
            "relative change": chosen["relative_change"],
            f"per-image change [{LEVEL} CI]": [
                # three significant digits: scores are small, and two decimals would round most changes to 0.00
                interval_text(v, lo, hi, ".3g")
                for v, lo, hi in zip(
                    chosen["change"], chosen["change_ci_low"], chosen["change_ci_high"], strict=True
                )
            ],
            "images": chosen["images"],
        }
    )


def category_spread(categories: pd.DataFrame) -> pd.DataFrame:
    """Per model × method × category: its score, its classes' lowest and highest scores, and their ratio
    (highest ÷ lowest; NaN where the lowest is not positive): the spread the category's one score hides."""
    low, high = categories["class_min"].to_numpy(float), categories["class_max"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(low > 0, high / low, np.nan)
    return pd.DataFrame(
        {
            "model · method": [
                label(str(m), str(k)) for m, k in zip(categories["model"], categories["method"], strict=True)
            ],
            "category": categories["category"],
            "category score": categories["score"],
            "classes": categories["classes"],
            "class scores min – max": [
                "—" if not (math.isfinite(lo) and math.isfinite(hi)) else f"{lo:.3g} – {hi:.3g}"
                for lo, hi in zip(low, high, strict=True)
            ],
            "max ÷ min": ratio,
        }
    )


def _verdicts_part(results: Results) -> str:
    verdicts = _table(results.label_verdicts)
    if verdicts is None:
        return paragraph("The trust checks were not rerun under the levels' labels: no verdict was compared.")
    counts = verdict_counts(verdicts, _table(results.label_levels))
    changed = int(counts["changed"].sum())
    text = paragraph(
        f"Trust verdicts rerun under each level's labels: {changed} of {int(counts['compared'].sum())} "
        "verdicts (every criterion's and the overall one, per model × method) differ from the exact-label ones."
    )
    return text + table(counts) + (changed_verdicts(verdicts) if changed else "")


def _classes_part(results: Results) -> str:
    classes = _table(results.label_classes)
    if classes is None:
        return ""
    return paragraph(
        f"The largest class profile changes, at most {TOP_CLASS_CHANGES} (relative change of the class's profile score; "
        f"mean per-image change over the images holding the class under both labels, {LEVEL} bootstrap CI)."
    ) + table(largest_class_changes(classes))


def _categories_part(results: Results) -> str:
    categories = _table(results.label_categories)
    if categories is None:
        return ""
    return paragraph(
        "Profiles over Cityscapes' categories beside the class profile: a category's one score stands for "
        "classes whose exact-label scores range from min to max; max ÷ min is how far apart they are."
    ) + table(category_spread(categories))


def label_quality_section(results: Results) -> str:
    """The study's text (the figure leads the section): each profile's threshold mIoU, how good labels must
    be for the headline profiles, the levels, the verdicts that changed, the largest class changes and the
    category profiles ("" when the study did not run)."""
    if not has_study(results):
        return ""
    agreement = _agreement(results)
    intro = paragraph(
        "Each level relabels the evaluated images (the exact labels degraded, or a segmenter's predictions); "
        "every model × method profile is recomputed from the same maps under the level's labels and compared "
        f"with its exact-label profile: Spearman ρ with its {LEVEL} image-bootstrap CI."
    )
    thresholds = _table(results.label_thresholds)
    sentences = (
        ""
        if thresholds is None
        else "".join(paragraph(threshold_sentence(r, agreement)) for r in thresholds.to_dict("records"))
        + paragraph(headline_sentence(results, thresholds, agreement), "recommendation")
    )
    levels = _table(results.label_levels)
    levels_part = "" if levels is None else table(levels_table(levels))
    return (
        intro
        + sentences
        + levels_part
        + _verdicts_part(results)
        + _classes_part(results)
        + _categories_part(results)
    )
