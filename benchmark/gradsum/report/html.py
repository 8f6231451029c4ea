"""The self-contained HTML report: inline CSS, images as data URIs, nothing fetched from a network."""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import pandas as pd
from PIL import Image

from gradsum.contract import COMPARISONS
from gradsum.evaluation.base import CHANCE, CONFOUND, CONTROL, HEURISTIC, METHOD, ROLES
from gradsum.evaluation.verdicts import ALPHA, FAIL, MEANINGS, NO_STRONGER_THAN_RANDOM, NOT_RUN, OUTCOMES
from gradsum.report.compression import compression_section
from gradsum.report.findings import (
    best_methods,
    criterion_keys,
    findings,
    meaningful_comparisons,
    recommendations,
)
from gradsum.report.input_data import input_data_section
from gradsum.report.label_quality import label_quality_section
from gradsum.report.page import paragraph, scroll, table, verdict_span
from gradsum.report.plots import label
from gradsum.report.results import Results
from gradsum.report.shortcut import shortcut_findings, shortcut_section

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
.inconclusive { color: #8a5a00; font-weight: bold; } .uninformative { color: #666; font-style: italic; }
.not-run { color: #999; } span[title] { text-decoration: underline dotted; cursor: help; }
tr.null td { color: #777; } tr.control td { background: #f3f6fa; }
.recommendation { margin: 0.2em 0; font-weight: 500; }
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
    ("labels", "Label quality"),
    ("compression", "Compression"),
    ("profiles", "Profiles"),
    ("comparisons", "Comparisons"),
    ("models", "Models"),
    ("attention", "Attention diagnostics"),
    ("input_data", "Issues in the input data"),
    ("overlays", "Samples"),
    ("configuration", "Configuration"),
)

#: Sections left off the page (and its navigation) when they have neither text nor figures: their check
#: did not run, and an empty heading would suggest it had found nothing.
OPTIONAL_SECTIONS = frozenset({"shortcuts", "labels", "compression", "input_data"})


@dataclass(frozen=True)
class Plot:
    """A rendered figure for the report: its section, caption and PNG bytes; folded ones sit in a <details>."""

    section: str
    caption: str
    png: bytes
    folded: bool = False


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
        parts.append(paragraph(f"Library versions: {_compact(manifest['versions'])}"))
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
        return paragraph("No model cards in this results folder.")
    rows = [
        {"model": name, "task": card["task"], "architecture": card["architecture"], **card["metrics"]}
        for name, card in sorted(results.cards.items())
    ]
    return table(pd.DataFrame(rows))


def _figure_columns(trust: pd.DataFrame) -> list[str]:
    """The trust table's figures: columns that come with a `_ci_low` and `_ci_high` beside them."""
    return [c for c in trust.columns if f"{c}_ci_low" in trust.columns and f"{c}_ci_high" in trust.columns]


#: How the trust table names each role: controls have a known answer, nulls know nothing of the model.
ROLE_LABELS = {
    METHOD: "method under test",
    CONTROL: "known-answer control",
    CHANCE: "null: chance",
    CONFOUND: "null: confound",
    HEURISTIC: "null: edge heuristic",
}
#: The outcomes in the order they are counted and explained.
SHOWN_OUTCOMES = (*OUTCOMES, NOT_RUN)
#: The level of the two-sided intervals the verdicts write (their α/2 and 1 − α/2 quantiles).
LEVEL = f"{1 - ALPHA:.0%}"


def _text(value: object) -> str:
    """A table cell that may be NaN after a CSV round trip, as text ("" for none)."""
    return value if isinstance(value, str) else ""


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _interval(record: Mapping[str, Any], stem: str, sign: str = "") -> str:
    """ "value [low, high]" of `stem` and its `_ci_low` / `_ci_high` columns ("—" without a value)."""
    value, low, high = (_number(record.get(f"{stem}{s}")) for s in ("", "_ci_low", "_ci_high"))
    if not math.isfinite(value):
        return "—"
    return f"{value:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"


def _nulls_by_role(trust: pd.DataFrame) -> dict[str, list[str]]:
    """role → the null explainers of that role in the trust table, by name."""
    return {
        role: sorted(set(trust.loc[trust["role"].astype(str) == role, "method"].astype(str)))
        for role in (CHANCE, CONFOUND, HEURISTIC)
    }


def _named(methods: Sequence[str]) -> str:
    return ", ".join(methods) if methods else "none in this run"


def trust_rule(trust: pd.DataFrame) -> str:
    """The verdict rule in a few lines, naming this run's nulls by role, then the four outcomes."""
    nulls = _nulls_by_role(trust)
    text = paragraph(
        f"How a verdict is reached. Each criterion's figure is shown with its {LEVEL} bootstrap interval over "
        "the model's evaluated images; every method, known-answer control and null explainer is scored on "
        f"the same resampled images, so each comparison is paired, one-sided at α = {ALPHA:g}. The chance "
        f"nulls ({_named(nulls[CHANCE])}) and the confounds ({_named(nulls[CONFOUND])}) gate: a method passes "
        "a criterion only where it beats every one of them, and the criterion's chance threshold where it "
        f"has one. The edge heuristic ({_named(nulls[HEURISTIC])}) gates nothing: its column says whether a "
        "method adds over an edge detector. The margin is the figure minus the best gating null's, with its "
        f"paired {LEVEL} interval. A criterion decided across models (the shortcut check) reads its "
        f"permutation p over models: pass where p < {ALPHA:g}, fail where "
        f"p ≥ {NO_STRONGER_THAN_RANDOM:g}, inconclusive between. "
        "Known-answer controls are judged like methods and never recommended; null explainers are greyed."
    )
    outcomes = "".join(
        f"<li>{verdict_span(outcome, outcome)}: {escape(MEANINGS[outcome])}</li>" for outcome in OUTCOMES
    )
    overall = paragraph(
        "A row's verdict: fail if a criterion fails; pass if every informative criterion passes and one of "
        "them compares the map with the model's causes (the sanity check alone shows only that the map "
        "depends on the weights); uninformative if no such criterion is informative; inconclusive "
        "otherwise. A model's recommendation needs the same. Hover over a verdict for its reason."
    )
    return f"{text}<ul>{outcomes}</ul>{overall}"


def outcome_counts(trust: pd.DataFrame, role: str) -> dict[str, int]:
    """How many model × method rows of `role` reached each overall verdict: every outcome, 0 where none
    did ("not run" only where some row has it)."""
    verdicts = trust.loc[trust["role"].astype(str) == role, "verdict"].astype(str)
    counts = {outcome: int((verdicts == outcome).sum()) for outcome in SHOWN_OUTCOMES}
    if not counts[NOT_RUN]:
        del counts[NOT_RUN]
    return counts


def _counts_sentence(trust: pd.DataFrame) -> str:
    """Each outcome counted for the methods under test and the controls: an uninformative row is no failure."""
    parts = []
    for role, name in ((METHOD, "Methods under test"), (CONTROL, "Known-answer controls")):
        counts = outcome_counts(trust, role)
        total = sum(counts.values())
        if total:
            each = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
            parts.append(f"{name}, {total} model × method rows: {each}.")
    return paragraph(" ".join(parts)) if parts else ""


def recommendation_lines(results: Results) -> str:
    """One line per model: the method to use, or that none is shown better than chance and the confounds."""
    table = recommendations(results)
    return "".join(paragraph(str(sentence), "recommendation") for sentence in table["sentence"])


def _role_order(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)


def _criterion_head(trust: pd.DataFrame, key: str) -> list[str]:
    heads = [f"figure [{LEVEL} CI]", f"margin over the best null [{LEVEL} CI]", "verdict"]
    return heads + (["adds over edges"] if f"{key}_heuristic" in trust.columns else [])


def _criterion_cells(trust: pd.DataFrame, record: Mapping[str, Any], key: str) -> list[str]:
    """One criterion's cells of a row: figure [CI], margin [CI] over the null, verdict, heuristic."""
    margin = _interval(record, f"{key}_margin", "+")
    null = _text(record.get(f"{key}_margin_null"))
    outcome = _text(record.get(f"{key}_verdict")) or NOT_RUN
    reason = _text(record.get(f"{key}_reason")) or MEANINGS.get(outcome, "")
    cells = [
        escape(_interval(record, key)),
        escape(f"{margin} over {null}" if margin != "—" and null else margin),
        verdict_span(outcome, outcome, reason),
    ]
    if f"{key}_heuristic" in trust.columns:
        adds = _text(record.get(f"{key}_heuristic"))
        over = _interval(record, f"{key}_over_heuristic", "+")
        tip = f"figure minus the edge detector's: {over}"
        cells.append(verdict_span(adds, "", tip) if adds else "—")
    return cells


def trust_grid(trust: pd.DataFrame) -> str:
    """The trust table: per model, methods, controls, then nulls; per criterion its figure, margin and
    verdict (the reason as a tooltip); controls labelled, nulls greyed with their role."""
    keys = criterion_keys(trust)
    first = "".join(f'<th rowspan="2">{h}</th>' for h in ("model", "method", "role", "verdict"))
    first += "".join(f'<th colspan="{len(_criterion_head(trust, k))}">{escape(k)}</th>' for k in keys)
    second = "".join(f"<th>{escape(h)}</th>" for k in keys for h in _criterion_head(trust, k))
    records = sorted(
        trust.to_dict("records"),
        key=lambda r: (str(r["model"]), _role_order(str(r["role"])), str(r["method"])),
    )
    rows = []
    for record in records:
        role, verdict = str(record["role"]), str(record["verdict"])
        cells = [
            escape(str(record["model"])),
            escape(str(record["method"])),
            escape(ROLE_LABELS.get(role, role)),
            verdict_span(verdict, verdict, _text(record.get("summary"))),
        ]
        cells += [cell for key in keys for cell in _criterion_cells(trust, record, key)]
        css = " class=null" if record["null"] else " class=control" if role == CONTROL else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = f"<thead><tr>{first}</tr><tr>{second}</tr></thead>"
    return scroll(f"<table>{head}<tbody>{''.join(rows)}</tbody></table>")


def own_figures(trust: pd.DataFrame) -> pd.DataFrame:
    """model, method and each check's own figures ("value [CI]"): those beside the criteria's figures."""
    keys = criterion_keys(trust)
    derived = {f"{key}{s}" for key in keys for s in ("", "_margin", "_over_heuristic")}
    columns = [c for c in _figure_columns(trust) if c not in derived]
    records = trust.sort_values(["model", "method"]).to_dict("records")
    return pd.DataFrame(
        [
            {"model": r["model"], "method": r["method"], **{c: _interval(r, c) for c in columns}}
            for r in records
        ],
        columns=["model", "method", *columns],
    )


def trust_section(results: Results) -> str:
    """The rule, the count of each outcome, one recommendation per model, then the trust table."""
    trust = results.trust
    if trust is None or trust.empty:
        text = paragraph(
            "No trust checks ran for this run: its profiles carry no measured verdict "
            "(run `gradsum evaluate RESULTS`)."
        )
        return text + ground_truth_section(results)
    own = own_figures(trust)
    folded = (
        f"<details><summary>each check's own figures</summary>{table(own)}</details>"
        if len(own.columns) > 2
        else ""
    )
    return (
        trust_rule(trust)
        + _counts_sentence(trust)
        + recommendation_lines(results)
        + trust_grid(trust)
        + folded
        + ground_truth_section(results)
    )


def ground_truth_section(results: Results) -> str:
    """Each model × method marked as agreeing with the truth set's declared causes or not."""
    truth = results.ground_truth
    if truth is None or truth.empty:
        return paragraph("No ground-truth check: the truth set declares no causes.")
    agrees = truth["agrees"]
    failed = truth[~agrees]
    if failed.empty:
        summary = paragraph(f"All {len(truth)} model × method profiles agree with the ground truth.")
    else:
        names = "; ".join(
            f"{r.model} · {r.method} ({r.task}): {r.detail}" for r in failed.itertuples(index=False)
        )
        summary = paragraph(
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
    return summary + scroll(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


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
    return paragraph(
        "GradSUM score: mean [95% bootstrap CI] (images containing the class); each column carries its "
        "method's trust verdict for that model."
    ) + table(grid)


def verdict_label(row: Mapping[str, Any]) -> str:
    """A trust row's overall verdict in words: "pass", "fail: <criteria>", "inconclusive", "uninformative"."""
    verdict = str(row["verdict"])
    failed = _text(row.get("failed"))
    return f"{verdict}: {failed}" if verdict == FAIL and failed else verdict


def verdict_labels(results: Results) -> dict[str, str]:
    """ "model · method" → its trust verdict (`verdict_label`); "not evaluated" without a trust row."""
    runs = (results.profiles["model"] + " · " + results.profiles["method"]).unique()
    labels = dict.fromkeys(runs, "not evaluated")
    if results.trust is not None:
        for row in results.trust.to_dict("records"):
            labels[f"{row['model']} · {row['method']}"] = verdict_label(row)
    return labels


def comparisons_section(results: Results) -> str:
    """Rank agreement and differing classes for the pairs worth comparing: the same task, and the same method
    across models or the same model across methods. The comparisons table keeps every pair."""
    if results.comparisons is None or results.comparisons.empty:
        return paragraph("Only one model × method ran; nothing to compare.")
    comparisons = meaningful_comparisons(results)
    if comparisons.empty:
        return paragraph("No two profiles of the same task share a model or a method; nothing to compare.")
    summary = (
        comparisons.groupby(["a", "b"], sort=False)
        .agg(
            spearman_rho=("spearman_rho", "first"),
            ci_low=("spearman_ci_low", "first"),
            ci_high=("spearman_ci_high", "first"),
            classes=("class", "size"),
            differing=("differs", "sum"),
        )
        .reset_index()
    )
    differing = comparisons[comparisons["differs"]]
    columns = ["a", "b", "class", "n_pairs", "mean_a", "mean_b", "mean_diff", "p_holm"]
    detail = (
        f"<details><summary>the {len(differing)} differing classes</summary>{table(differing[columns])}</details>"
        if not differing.empty
        else paragraph("No class differs between any compared pair after Holm correction.")
    )
    return (
        paragraph(
            "Spearman rank correlation of the profiles (95% CI) and classes that differ (paired test, Holm), "
            "for profiles of the same task under the same method or of the same model under different "
            f"methods. Every pair, across tasks too, is in {COMPARISONS.file}."
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
        else paragraph("No two models share a task and a method: the run asks no comparison question.")
    )
    known = "".join(paragraph(answer) for answer in shortcut_findings(results))
    questions = (
        f'<div class="finding">{known}<a href="#shortcuts">Shortcuts</a></div>' if known else ""
    ) + questions
    best = best_methods(results)
    chosen = "; ".join(f"{model}: {method}" for model, method in best.items())
    basis = (
        "the method the trust verdicts recommend; where none is recommended, the method under test with the "
        "largest summed margin lower bounds over the best gating null"
        if results.trust is not None and not results.trust.empty
        else "no trust checks ran, so GradCAM where it ran"
    )
    return (
        questions
        + paragraph(
            f"The figure shows each model's profile from one method ({basis}): {chosen}. "
            "GradCAM stays beside it where another method was chosen."
        )
        + recommendation_lines(results)
    )


def _verdict_span(name: str, verdict: str) -> str:
    outcome = verdict.split(":", 1)[0]
    return f"{escape(name)}: {verdict_span(verdict, outcome)}"


def attention_section(results: Results) -> str:
    """Mean attention entropy relative to uniform per model (1 = uniform), as a check on the GradSUM talk's claim."""
    if results.attention is None or results.attention.empty:
        return paragraph("No vision transformer in this run.")
    summary = (
        results.attention.groupby("model", sort=False)["entropy_ratio"]
        .agg(["mean", "min", "max"])
        .reset_index()
        .rename(columns={"mean": "entropy_ratio_mean", "min": "lowest head", "max": "highest head"})
    )
    return paragraph(
        "Entropy of each head's attention relative to uniform attention; values near 1 mean the heads "
        "spread attention almost evenly. The GradSUM talk found attention close to uniform and suspected the "
        "tokenizer CNN does the heavy lifting: compare these ratios and the per-layer profiles below with "
        "the hybrid's tokenizer and combined profiles."
    ) + table(summary)


def shortcuts_section(results: Results) -> str:
    """The shortcut check's known-answer test ("" when it did not run)."""
    return shortcut_section(results)


_SECTION_TEXT: dict[str, Callable[[Results], str]] = {
    "findings": findings_section,
    "configuration": configuration_section,
    "models": models_section,
    "trust": trust_section,
    "shortcuts": shortcuts_section,
    "labels": label_quality_section,
    "compression": compression_section,
    "profiles": profiles_section,
    "comparisons": comparisons_section,
    "attention": attention_section,
    "input_data": input_data_section,
    "overlays": lambda results: "",
}


#: Sections whose figures come before their text: the headline figure is compact and the findings table
#: runs long, so both fit the first screen only in this order; the label study leads with its curve.
FIGURES_FIRST = frozenset({"findings", "labels", "compression"})


def label_source_notice(results: Results) -> str:
    """A warning paragraph when the truth set's labels were predicted by a segmenter (`gradsum label`):
    by what, with what held-out mIoU, and which pixels the profiles skip; empty for annotated labels."""
    truthset = results.manifest.get("truthset", {})
    parameters = truthset.get("parameters", {}) if isinstance(truthset, dict) else {}
    source = parameters.get("label_source") if isinstance(parameters, dict) else None
    if not isinstance(source, dict) or not source.get("predicted"):
        return ""
    held_out = source.get("held_out_miou")
    quality = (
        f"held-out mIoU {held_out:.3f}" if isinstance(held_out, int | float) else "held-out mIoU unknown"
    )
    threshold = source.get("threshold")
    skipped = (
        f" Pixels it was less than {threshold:g} sure of are unlabelled, and no profile counts them."
        if isinstance(threshold, int | float) and threshold > 0
        else ""
    )
    return paragraph(
        f"The labels of this truth set are predicted, not annotated: {source.get('architecture', 'a segmenter')} "
        f"from {source.get('segmenter', 'an unnamed file')} ({quality}, {source.get('mode', '?')} inference)."
        f"{skipped} The label-quality study (config labels) measures how far profiles move with label mIoU."
    )


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
            text = paragraph("No sample overlays were saved for this run.")
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
        f"<body><h1>{escape(title)}</h1>{label_source_notice(results)}<nav>{nav}</nav>{''.join(sections)}"
        "</body></html>\n"
    )
