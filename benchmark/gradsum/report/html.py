"""The self-contained HTML report: inline CSS, images as data URIs, nothing fetched from a network."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import pandas as pd
from PIL import Image

from gradsum.report.findings import best_methods, findings, meaningful_comparisons
from gradsum.report.plots import label
from gradsum.report.results import Results

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; white-space: nowrap; }
th { background: #eee; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; flex: 1 1 560px; max-width: 100%; } figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
.agrees { color: #176317; font-weight: bold; } .disagrees { color: #a11; font-weight: bold; }
.finding { border-left: 4px solid #a11; padding-left: 0.8em; }
.pass { color: #176317; font-weight: bold; } .fail { color: #a11; font-weight: bold; }
tr.null td { color: #777; }
nav a { margin-right: 1em; } .scroll { overflow-x: auto; max-width: 100%; }
.findings td { white-space: normal; vertical-align: top; } .findings td:first-child { font-weight: bold; }
#findings figure { flex: 1 1 420px; } #findings figure img { max-height: 44vh; }
details > summary { cursor: pointer; color: #335; }
"""
#: PNGs above this size (photographic overlays) are embedded as JPEG when that is smaller: the page must
#: stay a few MB at the default run while plots/ keeps the lossless files.
JPEG_ABOVE = 256 * 1024
JPEG_QUALITY = 85

SECTIONS = (
    ("findings", "Findings"),
    ("trust", "Trust"),
    ("shortcuts", "Shortcuts"),
    ("profiles", "Profiles"),
    ("comparisons", "Comparisons"),
    ("models", "Models"),
    ("attention", "Attention diagnostics"),
    ("overlays", "Samples"),
    ("configuration", "Configuration"),
)

#: Sections left off the page (and its navigation) when they have neither text nor figures: their check
#: did not run, and an empty heading would suggest it had found nothing.
OPTIONAL_SECTIONS = frozenset({"shortcuts"})


@dataclass(frozen=True)
class Plot:
    """A rendered figure for the report: its section, caption and PNG bytes; folded ones sit in a <details>."""

    section: str
    caption: str
    png: bytes
    folded: bool = False


def table(frame: pd.DataFrame) -> str:
    """An escaped HTML table of a DataFrame with compact numbers."""
    html = frame.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:.3g}", border=0, escape=True)
    return _scroll(html)


def _scroll(html: str) -> str:
    # Wide tables (many model × method columns) scroll inside the page instead of widening it.
    return f'<div class="scroll">{html}</div>'


def page_image(png: bytes) -> tuple[str, bytes]:
    """(MIME type, bytes) to embed for a PNG: the PNG itself, or a JPEG of it when it is large and JPEG is smaller."""
    if len(png) <= JPEG_ABOVE:
        return "image/png", png
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    jpeg = buffer.getvalue()
    return ("image/jpeg", jpeg) if len(jpeg) < len(png) else ("image/png", png)


def figure(plot: Plot) -> str:
    """An <figure> with the image embedded as a base64 data URI."""
    mime, image = page_image(plot.png)
    data = base64.b64encode(image).decode("ascii")
    caption = escape(plot.caption)
    return (
        f'<figure><img alt="{caption}" src="data:{mime};base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _paragraph(text: str, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<p{attribute}>{escape(text)}</p>"


def configuration_section(results: Results) -> str:
    """The run's settings from the manifest and its configuration as a key · value table, all folded."""
    manifest = results.manifest
    keys = ("truthset", "methods", "normalisation", "resolution", "seeds", "started", "finished")
    settings = [(k, _compact(manifest[k])) for k in keys if k in manifest]
    if "frame_sizes" in manifest:
        settings.append(("model inputs", inputs_summary(manifest)))
    parts = [table(pd.DataFrame(settings, columns=["setting", "value"]))]
    if isinstance(manifest.get("config"), dict):
        rows = pd.DataFrame(list(flatten(manifest["config"])), columns=["configuration field", "value"])
        parts.append(table(rows))
    if "versions" in manifest:
        parts.append(_paragraph(f"Library versions: {_compact(manifest['versions'])}"))
    return f"<details><summary>settings and configuration</summary>{''.join(parts)}</details>"


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted field, value) rows of a nested configuration; lists of plain values stay on one row."""
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for i, item in enumerate(value):
            yield from flatten(item, f"{prefix}[{i}]")
    elif isinstance(value, list):
        yield prefix, ", ".join(map(str, value))
    else:
        yield prefix, "—" if value is None or value == {} else str(value)


def inputs_summary(manifest: Mapping[str, Any]) -> str:
    """How the split's frames became model input: their sizes, and which were resized for which model."""
    sizes = manifest["frame_sizes"]
    frames = ", ".join(f"{s['frames']} × {s['height']}×{s['width']}" for s in sizes["frames"])
    resized = {model: changes for model, changes in sizes["resized"].items() if changes}
    if not resized:
        return f"frames {frames}, at every model's input size (not resized)"
    how = manifest.get("input_transform", {}).get("resize", "resized")
    changes = "; ".join(f"{model}: {', '.join(c)}" for model, c in resized.items())
    return f"frames {frames}; resized ({how}) for {changes}"


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def models_section(results: Results) -> str:
    """One row per model card: name, task, architecture and every metric."""
    if not results.cards:
        return _paragraph("No model cards in this results folder.")
    rows = [
        {"model": name, "task": card["task"], "architecture": card["architecture"], **card["metrics"]}
        for name, card in sorted(results.cards.items())
    ]
    return table(pd.DataFrame(rows))


def _figure_columns(trust: pd.DataFrame) -> list[str]:
    """The trust table's figures: columns that come with a `_ci_low` and `_ci_high` beside them."""
    return [c for c in trust.columns if f"{c}_ci_low" in trust.columns and f"{c}_ci_high" in trust.columns]


def _with_ci(row: Any, column: str) -> str:
    value, low, high = (getattr(row, f"{column}{suffix}") for suffix in ("", "_ci_low", "_ci_high"))
    if not isinstance(value, int | float) or value != value:
        return "—"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def trust_section(results: Results) -> str:
    """The trust table: every check's figure with its CI, a verdict per check, and the overall verdict."""
    trust = results.trust
    if trust is None or trust.empty:
        text = _paragraph(
            "No trust checks ran for this run: its profiles carry no measured verdict "
            "(run `gradsum evaluate RESULTS`)."
        )
        return text + ground_truth_section(results)
    figures = _figure_columns(trust)
    verdicts = [c for c in trust.columns if c.endswith("_verdict")]
    head = "".join(
        f"<th>{escape(h)}</th>" for h in ("model", "method", "verdict", *figures, *verdicts, "summary")
    )
    rows = []
    for row in trust.sort_values(["null", "model", "method"]).itertuples(index=False):
        null = str(row.null).lower() in ("true", "1")
        cells = [escape(str(row.model)), escape(str(row.method))]
        cells.append(f'<span class="{row.verdict}">{escape(str(row.verdict))}</span>')
        cells += [_with_ci(row, c) for c in figures]
        cells += [f'<span class="{getattr(row, c)}">{escape(str(getattr(row, c)))}</span>' for c in verdicts]
        cells.append(escape(str(row.summary)))
        rows.append(
            f"<tr{' class=null' if null else ''}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    real = trust[~trust["null"].astype(str).str.lower().isin(("true", "1"))]
    passed = real[real["verdict"] == "pass"]
    lead = _paragraph(
        f"{len(passed)} of {len(real)} model × method profiles pass every trust check. A method passes a "
        "check only where its 95% interval clears the check's threshold and every null explainer's "
        "interval (random, uniform, Sobel edges, class-area prior; greyed rows) on the same images."
    )
    body = _scroll(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return lead + body + ground_truth_section(results)


def ground_truth_section(results: Results) -> str:
    """Each model × method marked as agreeing with the truth set's declared causes or not."""
    truth = results.ground_truth
    if truth is None or truth.empty:
        return _paragraph("No ground-truth check: the truth set declares no causes.")
    agrees = truth["agrees"].astype(str).str.lower().isin(("true", "1", "yes"))
    failed = truth[~agrees]
    if failed.empty:
        summary = _paragraph(f"All {len(truth)} model × method profiles agree with the ground truth.")
    else:
        names = "; ".join(
            f"{r.model} · {r.method} ({r.task}): {r.detail}" for r in failed.itertuples(index=False)
        )
        summary = _paragraph(
            f"Finding: {len(failed)} of {len(truth)} model × method profiles do not agree with the ground truth "
            f"— {names}",
            "finding",
        )
    body = "".join(
        f"<tr><td>{escape(str(r.model))}</td><td>{escape(str(r.method))}</td><td>{escape(str(r.task))}</td>"
        f"<td>{escape(str(r.expected))}</td>"
        f'<td class="{"agrees" if ok else "disagrees"}">{"agrees" if ok else "does not agree"}</td>'
        f"<td>{escape(str(r.detail))}</td></tr>"
        for r, ok in zip(truth.itertuples(index=False), agrees, strict=True)
    )
    head = "".join(f"<th>{h}</th>" for h in ("model", "method", "task", "expected", "outcome", "detail"))
    return summary + _scroll(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def profiles_table(profiles: pd.DataFrame) -> pd.DataFrame:
    """Classes (rows) by model · method (columns), each cell "mean [CI low, CI high] (n)"."""
    cells = profiles.assign(
        run=profiles["model"] + " · " + profiles["method"],
        cell=[
            f"{m:.3g} [{lo:.3g}, {hi:.3g}] ({n})"
            for m, lo, hi, n in zip(
                profiles["score_mean"],
                profiles["score_ci_low"],
                profiles["score_ci_high"],
                profiles["n_images"],
                strict=True,
            )
        ],
    )
    grid = cells.pivot_table(
        index=["class_id", "class"], columns="run", values="cell", aggfunc="first", sort=False
    )
    return grid.sort_index().reset_index().drop(columns="class_id").rename_axis(columns=None)


def profiles_section(results: Results) -> str:
    """The profile table of GradSUM scores with their bootstrap CIs, image counts and trust verdicts."""
    grid = profiles_table(results.profiles)
    verdicts = verdict_labels(results)
    grid = grid.rename(columns={run: f"{run} ({verdicts[run]})" for run in grid.columns if run in verdicts})
    return _paragraph(
        "GradSUM score: mean [95% bootstrap CI] (images containing the class); each column carries its "
        "method's trust verdict for that model."
    ) + table(grid)


def verdict_labels(results: Results) -> dict[str, str]:
    """ "model · method" → "trusted" or "fails: <checks>" from the trust table ("not evaluated" without one)."""
    runs = (results.profiles["model"] + " · " + results.profiles["method"]).unique()
    labels = dict.fromkeys(runs, "not evaluated")
    if results.trust is not None:
        for row in results.trust.itertuples(index=False):
            failed = str(row.failed) if isinstance(row.failed, str) else ""
            labels[f"{row.model} · {row.method}"] = "trusted" if row.verdict == "pass" else f"fails: {failed}"
    return labels


def comparisons_section(results: Results) -> str:
    """Rank agreement and differing classes for the pairs worth comparing: the same task, and the same method
    across models or the same model across methods. comparisons.csv keeps every pair."""
    if results.comparisons is None or results.comparisons.empty:
        return _paragraph("Only one model × method ran; nothing to compare.")
    comparisons = meaningful_comparisons(results)
    if comparisons.empty:
        return _paragraph("No two profiles of the same task share a model or a method; nothing to compare.")
    summary = (
        comparisons.assign(differs=comparisons["differs"].astype(str).str.lower() == "true")
        .groupby(["a", "b"], sort=False)
        .agg(
            spearman_rho=("spearman_rho", "first"),
            ci_low=("spearman_ci_low", "first"),
            ci_high=("spearman_ci_high", "first"),
            classes=("class", "size"),
            differing=("differs", "sum"),
        )
        .reset_index()
    )
    differing = comparisons[comparisons["differs"].astype(str).str.lower() == "true"]
    columns = ["a", "b", "class", "n_pairs", "mean_a", "mean_b", "mean_diff", "p_holm"]
    detail = (
        f"<details><summary>the {len(differing)} differing classes</summary>{table(differing[columns])}</details>"
        if not differing.empty
        else _paragraph("No class differs between any compared pair after Holm correction.")
    )
    return (
        _paragraph(
            "Spearman rank correlation of the profiles (95% CI) and classes that differ (paired test, Holm), "
            "for profiles of the same task under the same method or of the same model under different "
            "methods. Every pair, across tasks too, is in comparisons.csv."
        )
        + table(summary)
        + detail
    )


def findings_section(results: Results) -> str:
    """The questions the run asks, one row each: the answer (ρ [CI], differing classes) and the trust
    verdicts of both profiles; then which method the headline figure shows per model."""
    verdicts = verdict_labels(results)
    rows = []
    for found in findings(results):
        trust = [
            _verdict_span(label(model, found.method), verdicts[label(model, found.method)])
            for model in (found.model_a, found.model_b)
        ]
        rows.append(
            f"<tr><td>{escape(found.question)}</td><td>{escape(found.answer)}</td>"
            f"<td>{'<br>'.join(trust)}</td></tr>"
        )
    head = "<tr><th>question</th><th>answer</th><th>trust verdicts</th></tr>"
    questions = (
        f'<table class="findings"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
        if rows
        else _paragraph("No two models share a task and a method: the run asks no comparison question.")
    )
    # Imported here: report.shortcut builds on this module's table helpers.
    from gradsum.report.shortcut import shortcut_findings

    known = "".join(_paragraph(answer) for answer in shortcut_findings(results))
    questions = (
        f'<div class="finding">{known}<a href="#shortcuts">Shortcuts</a></div>' if known else ""
    ) + questions
    best = best_methods(results)
    chosen = "; ".join(f"{model}: {method}" for model, method in best.items())
    basis = (
        "the method passing most trust checks, ties broken by causal agreement"
        if results.trust is not None and not results.trust.empty
        else "no trust checks ran, so GradCAM where it ran"
    )
    return questions + _paragraph(
        f"The figure shows each model's profile from its best method ({basis}): {chosen}. "
        "GradCAM stays beside it where another method won."
    )


def _verdict_span(name: str, verdict: str) -> str:
    css = "pass" if verdict == "trusted" else "fail" if verdict.startswith("fails") else ""
    return f'{escape(name)}: <span class="{css}">{escape(verdict)}</span>'


def attention_section(results: Results) -> str:
    """Mean attention entropy relative to uniform per model (1 = uniform), as a check on the seed's claim."""
    if results.attention is None or results.attention.empty:
        return _paragraph("No vision transformer in this run.")
    summary = (
        results.attention.groupby("model", sort=False)["entropy_ratio"]
        .agg(["mean", "min", "max"])
        .reset_index()
        .rename(columns={"mean": "entropy_ratio_mean", "min": "lowest head", "max": "highest head"})
    )
    return _paragraph(
        "Entropy of each head's attention relative to uniform attention; values near 1 mean the heads "
        "spread attention almost evenly. The seed talk found attention close to uniform and suspected the "
        "tokenizer CNN does the heavy lifting: compare these ratios and the per-layer profiles below with "
        "the hybrid's tokenizer and combined profiles."
    ) + table(summary)


def shortcuts_section(results: Results) -> str:
    """The shortcut check's known-answer test ("" when it did not run)."""
    # Imported here: report.shortcut builds on this module's table helpers.
    from gradsum.report.shortcut import shortcut_section

    return shortcut_section(results)


_SECTION_TEXT: dict[str, Callable[[Results], str]] = {
    "findings": findings_section,
    "configuration": configuration_section,
    "models": models_section,
    "trust": trust_section,
    "shortcuts": shortcuts_section,
    "profiles": profiles_section,
    "comparisons": comparisons_section,
    "attention": attention_section,
    "overlays": lambda results: "",
}


#: Sections whose figures come before their text: the headline figure is compact and the findings table
#: runs long, so both fit the first screen only in this order.
FIGURES_FIRST = frozenset({"findings"})


def render_html(results: Results, plots: Sequence[Plot]) -> str:
    """The whole report page for a results folder and its rendered plots."""
    texts = {key: _SECTION_TEXT[key](results) for key, _ in SECTIONS}
    present = [
        (key, title)
        for key, title in SECTIONS
        if key not in OPTIONAL_SECTIONS or texts[key] or any(p.section == key for p in plots)
    ]
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title in present)
    sections = []
    for key, title in present:
        shown = [p for p in plots if p.section == key]
        figures = "".join(figure(p) for p in shown if not p.folded)
        folded = [figure(p) for p in shown if p.folded]
        text = texts[key]
        if key == "overlays" and not shown:
            text = _paragraph("No sample overlays were saved for this run.")
        gallery = f'<div class="gallery">{figures}</div>' if figures else ""
        if folded:
            gallery += (
                f"<details><summary>{len(folded)} more figures</summary>"
                f'<div class="gallery">{"".join(folded)}</div></details>'
            )
        body = gallery + text if key in FIGURES_FIRST else text + gallery
        sections.append(f'<section id="{key}"><h2>{escape(title)}</h2>{body}</section>')
    title = f"GradSUM report · {results.name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><h1>{escape(title)}</h1><nav>{nav}</nav>{''.join(sections)}</body></html>\n"
    )
