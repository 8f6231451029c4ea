"""Write every plot and `report.html` for a results folder, then re-register them in its manifest."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from gradsum.contract import MANIFEST, PLOTS, REPORT
from gradsum.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from gradsum.progress import Heartbeat
from gradsum.report import compression, label_quality, plots, shortcut
from gradsum.report import overlays as frame_overlays
from gradsum.report.findings import SERIES, best_methods, headline_profiles, models_by_task
from gradsum.report.html import Plot, render_html, verdict_labels
from gradsum.report.input_data import Thumbnail, outlier_cutoffs, shown_outliers, thumbnail_caption
from gradsum.report.results import Results, folder_checksums, load_results, read_results

log = logging.getLogger(__name__)

OVERLAY_STEM = "overlay"
#: The input-data section's outlier thumbnails: `plots/outlier_<model>_<rank>.png`, rank 0 the farthest.
OUTLIER_STEM = "outlier"
#: The label-quality study's curve, in plots/ and in the paper set.
LABEL_AGREEMENT_STEM = "label_agreement"
#: The compression study's figure of each parent, in plots/ and in the paper set: `compression_<parent>`.
COMPRESSION_STEM = "compression"
#: The hybrid ViT panel: (role, method names that fill it, first present wins), in panel order.
#: Names follow the run configs: `gradcam_tokenizer` is GradCAM on the tokenizer, `split` the combined map.
HYBRID_PANEL = (
    ("tokenizer GradCAM", ("gradcam_tokenizer", "split/tokenizer_gradcam")),
    ("attention", ("gradrollout", "split/attention", "rollout", "attention")),
    ("full-model GradCAM", ("gradcam",)),
    ("combined", ("split", "split/product", "split/mean")),
)


@dataclass(frozen=True)
class PendingPlot:
    """A figure still to be drawn: its report section, file stem (under plots/), caption, and whether the
    page folds it away (rarely read figures)."""

    section: str
    stem: str
    caption: str
    draw: Callable[[], Figure]
    folded: bool = False
    #: the file formats written under plots/ (the PNG is the one the page embeds)
    formats: tuple[str, ...] = plots.FORMATS


def slug(text: str) -> str:
    """A file-name-safe form of a model or method name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def family(results: Results, model: str) -> str:
    """`cnn`, `vit`, `hybrid` or `other`: as the pipeline recorded it, else as the card's architecture
    declared it when registered."""
    recorded = results.manifest.get("families", {})
    if isinstance(recorded, dict) and model in recorded:
        return str(recorded[model])
    # imported here: only runs that predate recorded families need the model registry (and torch)
    from gradsum.models.architectures import ARCHITECTURES

    architecture = str(results.cards.get(model, {}).get("architecture", ""))
    return ARCHITECTURES.get(architecture).family if architecture in ARCHITECTURES else "other"


def _pairs(profiles: pd.DataFrame) -> list[tuple[str, str]]:
    return list(profiles[["model", "method"]].drop_duplicates().itertuples(index=False, name=None))


def hybrid_panel(methods: list[str]) -> list[tuple[str, str]]:
    """(role, method) for each role of `HYBRID_PANEL` that one of `methods` fills."""
    chosen = [(role, next((m for m in names if m in methods), None)) for role, names in HYBRID_PANEL]
    return [(role, method) for role, method in chosen if method is not None]


def headline_plots(results: Results) -> list[PendingPlot]:
    """The paper figure per task: each model's recommended profile (GradCAM beside it when another was
    chosen), its GradSUM score and, beside it, its lift, which every method shares a scale on."""
    best = best_methods(results)
    pending = []
    for task, models in models_by_task(results).items():
        rows = headline_profiles(results, models)
        names = ", ".join(plots.label(m, best[m]) for m in models)
        pending.append(
            PendingPlot(
                "findings",
                f"headline_{slug(task)}",
                f"{task}: per-class profiles, each model from its recommended method, or the closest where "
                f"none is recommended ({names}); "
                "left the GradSUM score, right the lift (mass share ÷ area share; 1, dashed: mass in "
                "proportion to area), on one scale for every method",
                lambda r=rows, t=task: plots.headline_figure(r, SERIES, title=t),  # type: ignore[misc]
            )
        )
    return pending


def comparison_plots(results: Results) -> list[PendingPlot]:
    """Grouped profiles worth comparing: per task, each method across its models, each model across methods."""
    profiles = results.profiles
    pending = []
    for task, models in models_by_task(results).items():
        rows = profiles[profiles["model"].isin(models)]
        for method, group in rows.groupby("method", sort=False):
            if group["model"].nunique() > 1:
                pending.append(
                    PendingPlot(
                        "comparisons",
                        f"grouped_{slug(task)}_{slug(str(method))}",
                        f"{task}, {method}: models side by side",
                        lambda g=group, t=f"{task} · {method}": plots.grouped_profile_figure(
                            g, "model", title=t
                        ),  # type: ignore[misc]
                    )
                )
        for model, group in rows.groupby("model", sort=False):
            if group["method"].nunique() > 1:
                pending.append(
                    PendingPlot(
                        "comparisons",
                        f"grouped_{slug(str(model))}_methods",
                        f"{model}: methods side by side",
                        lambda g=group, t=str(model): plots.grouped_profile_figure(g, "method", title=t),  # type: ignore[misc]
                    )
                )
    return pending


def outlier_stems(results: Results) -> Iterator[tuple[str, str, pd.Series]]:
    """(file stem, caption, input_data row) of each outlier thumbnail the report shows, in order."""
    if results.input_data is None or results.input_data.empty:
        return
    cutoffs = outlier_cutoffs(results.input_data)
    shown = shown_outliers(results.input_data)
    ranks = shown.groupby("model", sort=False).cumcount()
    for (_, row), rank in zip(shown.iterrows(), ranks, strict=True):
        stem = f"{OUTLIER_STEM}_{slug(str(row['model']))}_{rank}"
        yield stem, thumbnail_caption(row, cutoffs), row


def outlier_plots(results: Results, thumbnails: Sequence[Thumbnail]) -> list[PendingPlot]:
    """The outlier thumbnails the pipeline drew frames and maps for, in the order the section lists them."""
    drawn = {(t.model, t.method, t.image): t for t in thumbnails}
    pending = []
    for stem, caption, row in outlier_stems(results):
        thumbnail = drawn.get((str(row["model"]), str(row["method"]), str(row["image"])))
        if thumbnail is not None:
            pending.append(
                PendingPlot(
                    "input_data",
                    stem,
                    caption,
                    lambda t=thumbnail: frame_overlays.labelled_overlay_figure(  # type: ignore[misc]
                        t.frame, t.labels, t.heat, f"{t.image} · {plots.label(t.model, t.method)}"
                    ),
                    # photographs: an SVG would only wrap the same pixels
                    formats=("png",),
                )
            )
    return pending


def pending_plots(
    results: Results,
    overlays: plots.OverlayData | None = None,
    thumbnails: Sequence[Thumbnail] = (),
) -> list[PendingPlot]:
    """Every figure the report shows for this folder, in report order."""
    profiles = results.profiles
    verdicts = verdict_labels(results)
    heatmap = PendingPlot(
        "profiles",
        "heatmap_score",
        "GradSUM score by model and class",
        lambda: plots.profile_heatmap(profiles),
    )
    pending = [*headline_plots(results), heatmap]
    pending += [
        PendingPlot(
            "profiles",
            f"profile_{slug(model)}_{slug(method)}",
            f"{plots.label(model, method)} profile ({verdicts[plots.label(model, method)]})",
            lambda m=model, k=method: plots.profile_bar(profiles, m, k),  # type: ignore[misc]
            folded=True,
        )
        for model, method in _pairs(profiles)
    ]
    pending += comparison_plots(results)
    if overlays is not None:
        pending.append(
            PendingPlot(
                "overlays",
                OVERLAY_STEM,
                "samples: image, classes, maps",
                lambda: plots.overlay_grid(overlays),
                # a grid of raster images: an SVG would only wrap the same pixels in megabytes of base64
                formats=("png",),
            )
        )
    pending += _attention_plots(results)
    return (
        pending
        + _trust_plots(results)
        + _shortcut_plots(results)
        + _label_plots(results)
        + _compression_plots(results)
        + outlier_plots(results, thumbnails)
    )


def _model_names(table: pd.DataFrame | None) -> list[str]:
    return [] if table is None or table.empty else sorted(table["model"].astype(str).unique())


def _trust_plots(results: Results) -> list[PendingPlot]:
    """The trust section's figures: causal profiles, cascading randomisation, granularity sweeps."""
    figures: tuple[tuple[str, str, Callable[[pd.DataFrame, str], Figure]], ...] = (
        (
            "causal_profiles",
            "output change when each class is erased (the causal profile)",
            plots.causal_profile,
        ),
        (
            "sanity",
            "similarity to the original maps as blocks are re-initialised from the output down",
            plots.cascading_figure,
        ),
        ("granularity", "CAM methods at every depth", plots.granularity),
    )
    pending = []
    for table_name, caption, draw in figures:
        table = results.checks.get(table_name)
        pending += [
            PendingPlot(
                "trust",
                f"{table_name}_{slug(model)}",
                f"{model}: {caption}",
                lambda t=table, m=model, d=draw: d(t, m),  # type: ignore[misc]
            )
            for model in _model_names(table)
        ]
    return pending


def _shortcut_plots(results: Results) -> list[PendingPlot]:
    """The Shortcuts section's figures: detection and series per method, fine-tuning when a model was tuned."""
    tables = shortcut.shortcut_tables(results)
    if tables is None:
        return []
    pending = [
        PendingPlot(
            "shortcuts",
            "shortcut_detection",
            "each model's causal pull of the tint (x) against each method's cue mass share (y), 95% CIs; "
            "a method follows the known answer when the points rise left to right",
            lambda: shortcut.detection_figure(tables),
        ),
        PendingPlot(
            "shortcuts",
            "shortcut_series",
            "cue mass share by rho per series (band: the series' fair model's 95% CI)",
            lambda: shortcut.series_figure(tables),
        ),
    ]
    if not tables.finetune.empty:
        pending.append(
            PendingPlot(
                "shortcuts",
                "shortcut_finetune",
                "before and after relevance-guided fine-tuning: seeds as dots, mean with 95% t interval",
                lambda: shortcut.finetune_figure(tables),
            )
        )
    return pending


def _label_plots(results: Results) -> list[PendingPlot]:
    """The Label quality section's curve: profile agreement against label mIoU (when the study ran)."""
    if not label_quality.has_study(results):
        return []
    return [
        PendingPlot(
            "labels",
            LABEL_AGREEMENT_STEM,
            f"each profile's Spearman ρ with its exact-label profile ({label_quality.LEVEL} image-bootstrap CI) "
            "against the labels' mIoU, one panel per model; marker: how the level's labels were made; "
            "dashed: the agreement floor; dotted, in a method's colour: its threshold, the best label mIoU at "
            "which its profile fell below the floor",
            lambda: label_quality.agreement_figure(results),
        )
    ]


def _compression_plots(results: Results) -> list[PendingPlot]:
    """The Compression section's figures: one per parent, against the compression level (when the study ran)."""
    if not compression.has_study(results):
        return []
    return [
        PendingPlot(
            "compression",
            f"{COMPRESSION_STEM}_{slug(parent)}",
            f"{parent} compressed: the task metric's change, each method's profile Spearman ρ and largest class "
            f"shift against the parent ({compression.LEVEL} CIs) by compression level; dashed: the study's "
            "thresholds, fixed before it ran",
            lambda p=parent: compression.compression_figure(results, p),  # type: ignore[misc]
        )
        for parent in compression.parents(results)
    ]


def _attention_plots(results: Results) -> list[PendingPlot]:
    pending = []
    if results.attention is not None:
        attention = results.attention
        pending += [
            PendingPlot(
                "attention",
                f"attention_entropy_{slug(model)}",
                f"{model}: attention entropy relative to uniform, per layer and head",
                lambda m=model: plots.attention_entropy(attention, m),  # type: ignore[misc]
            )
            for model in attention["model"].unique()
        ]
    if results.attention_profiles is not None:
        layers = results.attention_profiles
        pending += [
            PendingPlot(
                "attention",
                f"attention_layers_{slug(model)}",
                f"{model}: raw-attention class profile per layer",
                lambda m=model: plots.attention_layers(layers, m),  # type: ignore[misc]
            )
            for model in layers["model"].unique()
        ]
    profiles = results.profiles
    for model in profiles["model"].unique():
        panel = hybrid_panel(list(profiles.loc[profiles["model"] == model, "method"].unique()))
        if family(results, model) == "hybrid" and len(panel) > 1:
            methods, titles = [m for _, m in panel], [f"{role}: {m}" for role, m in panel]
            pending.append(
                PendingPlot(
                    "attention",
                    f"methods_{slug(model)}",
                    f"{model}: {', '.join(titles)}, side by side",
                    lambda m=model, k=methods, t=titles: plots.method_panel(profiles, m, k, titles=t),  # type: ignore[misc]
                )
            )
    return pending


def write_report(
    results_dir: str | Path,
    *,
    overlays: plots.OverlayData | None = None,
    thumbnails: Sequence[Thumbnail] | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> Path:
    """Validate a results folder, (re)write its plots and report.html, and bring the manifest up to date.

    Without `manifest` the folder's own manifest.json is verified and its entries for the renderings
    refreshed (`gradsum report`). With it (the pipeline, whose manifest comes last), the tables are
    checked for columns and `manifest` is written with the checksums of every file in the folder.
    Everything is drawn in memory before any file is replaced, so a failure leaves the old files.
    Without `overlays`, an overlay grid already under plots/ is embedded as it is; without `thumbnails`
    (the outliers' frames and maps, which only the pipeline has), so are the outlier thumbnails.
    """
    if manifest is None:
        results = load_results(results_dir)
    else:
        results = read_results(results_dir, {**manifest, "files": {}})
    folder = results.path
    drawn: dict[str, bytes] = {}
    shown: list[Plot] = []
    pending = pending_plots(results, overlays, thumbnails or ())
    heartbeat = Heartbeat("report", len(pending), unit="figures")
    for item in pending:
        heartbeat.add()
        figure = item.draw()
        for fmt in item.formats:
            drawn[f"{PLOTS}/{item.stem}.{fmt}"] = plots.figure_bytes(figure, fmt)
        shown.append(Plot(item.section, item.caption, drawn[f"{PLOTS}/{item.stem}.png"], item.folded))
    if overlays is None:
        shown += [
            Plot("overlays", f"samples ({path.name})", path.read_bytes())
            for path in sorted((folder / PLOTS).glob(f"{OVERLAY_STEM}*.png"))
        ]
    if thumbnails is None:
        saved = [(folder / PLOTS / f"{stem}.png", caption) for stem, caption, _ in outlier_stems(results)]
        shown += [Plot("input_data", caption, path.read_bytes()) for path, caption in saved if path.is_file()]
    page = render_html(results, shown)
    for relative, data in drawn.items():
        atomic_write_bytes(folder / relative, data)
    report = atomic_write_text(folder / REPORT, page)
    files = dict(results.manifest["files"])
    files.update(folder_checksums(folder) if manifest is not None else _checksums(folder, [*drawn, REPORT]))
    atomic_write_json(folder / MANIFEST, {**results.manifest, "files": files})
    log.info("wrote %s and %d plot files", report, len(drawn))
    return report


def _checksums(folder: Path, written: list[str]) -> dict[str, str]:
    return {relative: sha256_file(folder / relative) for relative in written}
