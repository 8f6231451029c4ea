"""The report's Shortcuts section: the `shortcut` trust check's tables as text and HTML tables.

The check has a known answer. Models of one spec (a series) are trained on synthetic sets whose sky tint
agrees with the steering sign with probability rho, and each model's causal pull on the tint is measured
without attribution (the tint flipped, the steering change read). A method deserves trust on this check
when its mass on the cue class follows that pull across models. Every interval, threshold and verdict
shown here comes from `gradsum.evaluation.checks.shortcut`; this module only formats them. The section exists
only when the check ran.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import pandas as pd

from gradsum.evaluation.checks.shortcut import (
    FINETUNE_FIGURES,
    FINETUNE_METHOD_FIGURES,
    R2_TOLERANCE,
    FinetuneOutcome,
    Interval,
    detection_outcomes,
    finetune_outcomes,
    seed_change,
)
from gradsum.evaluation.verdicts import (
    ALPHA,
    FAIL,
    INCONCLUSIVE,
    NO_STRONGER_THAN_RANDOM,
    PASS,
    UNINFORMATIVE,
)
from gradsum.report.page import paragraph, scroll, table, verdict_span, with_ci
from gradsum.report.results import Results
from gradsum.report.shortcut.tables import ShortcutTables, cue_class, shortcut_tables

#: How the fine-tuning figures are labelled (keys: the check's FINETUNE_FIGURES and FINETUNE_METHOD_FIGURES).
QUANTITY_LABELS = {
    "r2_decorrelated": "R² decorrelated",
    "r2_in_distribution": "R² in distribution",
    "r2_test": "R² test",
    "pull": "causal pull",
    "cue_mass_share": "cue mass",
    "foreground_mass_share": "foreground mass",
}
GAP_RECOVERED = "gap recovered"
#: The fine-tuning table's label of a class's causal erasure effect.
ERASURE_LABEL = "erasure |Δ|"


def interval_text(interval: Interval, digits: int = 3) -> str:
    """ "mean [low, high]"; the mean alone when the interval is missing or has no width; "—" for none."""
    if not math.isfinite(interval.mean):
        return "—"
    mean, low, high = (f"{v:.{digits}f}" for v in (interval.mean, interval.low, interval.high))
    # identical seeds (the base's own figures) leave an interval narrower than the digits shown
    return mean if not math.isfinite(interval.low) or low == high else f"{mean} [{low}, {high}]"


def rho_text(value: float) -> str:
    """A rho as the tables name it ("—" when unknown)."""
    return "—" if not math.isfinite(value) else f"{value:g}"


def _fixed(value: float) -> str:
    # two decimals, as `with_ci` writes the figures beside
    return "—" if not math.isfinite(value) else f"{value:.2f}"


def models_table(tables: ShortcutTables) -> pd.DataFrame:
    """What each model learned: its series and rho, the causal pull and R² by tint, with 95% CIs."""
    models = tables.models.sort_values(["series", "finetuned", "rho", "model"], kind="stable")
    rows = [
        {
            "model": row.model,
            "series": row.series,
            "rho": rho_text(float(row.rho)),
            "fine-tuned from": row.base if row.finetuned and isinstance(row.base, str) else "",
            "pull [95% CI]": with_ci(row, "pull"),
            "R² test": _fixed(row.r2_test),
            "R² agreeing": _fixed(row.r2_agreeing),
            "R² decorrelated [95% CI]": with_ci(row, "r2_decorrelated"),
            "gap": _fixed(row.gap),
            "R² in distribution [95% CI]": with_ci(row, "r2_in_distribution"),
        }
        for row in models.itertuples(index=False)
    ]
    return pd.DataFrame(rows)


def onset_columns(tables: ShortcutTables) -> dict[str, str]:
    """series → the detection table's column naming the first rho at which the method detects the shortcut."""
    return {series: f"first rho detected ({series})" for series in tables.series}


def detection_table(tables: ShortcutTables, verdicts: dict[str, str]) -> pd.DataFrame:
    """One row per method, real methods first (highest Spearman first), then the null explainers."""
    detection = tables.detection.assign(
        order=tables.detection["spearman"].astype(float).fillna(-math.inf)
    ).sort_values(["null", "order", "method"], ascending=[True, False, True], kind="stable")
    onset = tables.onset.assign(
        method=tables.onset["method"].astype(str), series=tables.onset["series"].astype(str)
    )
    first = {
        (m, s): float(r) for m, s, r in zip(onset["method"], onset["series"], onset["first_rho"], strict=True)
    }
    rows = []
    for row in detection.itertuples(index=False):
        method = str(row.method)
        rows.append(
            {
                "method": method,
                "null": bool(row.null),
                "models": row.n_models,
                "Spearman ρ with pull [95% CI]": with_ci(row, "spearman"),
                "p (one-sided)": "—" if not math.isfinite(row.p_value) else f"{row.p_value:.3g}",
                "Spearman ρ with rho": _fixed(row.spearman_vs_rho),
                **{
                    column: rho_text(first.get((method, s), math.nan))
                    for s, column in onset_columns(tables).items()
                },
                "verdict": verdicts[method],
            }
        )
    return pd.DataFrame(rows)


def _names(methods: Sequence[str]) -> str:
    return ", ".join(methods) if methods else "no method"


def detection_sentence(tables: ShortcutTables, verdicts: dict[str, str], cue: str) -> str:
    """Which real methods pass, fail and stay inconclusive, and any null explainer that passes (a broken check)."""
    real = tables.real_methods
    passing = [m for m in real if verdicts[m] == PASS]
    text = f"{cue.capitalize()} mass follows the causal pull for {_names(passing)} (pass: {len(passing)} of {len(real)})"
    others = (
        (FAIL, "it does not for {} (fail)"),
        (INCONCLUSIVE, "it is not shown either way for {} (inconclusive)"),
        (UNINFORMATIVE, "the check cannot tell for {} (uninformative)"),
    )
    for outcome, words in others:
        named = [m for m in real if verdicts[m] == outcome]
        if named:
            text += "; " + words.format(_names(named))
    text += "."
    nulls = sorted(tables.detection.loc[tables.detection["null"], "method"].astype(str))
    lucky = [m for m in nulls if verdicts[m] == PASS]
    if lucky:
        text += f" Null explainer(s) passing as well, which a sound test should not allow: {_names(lucky)}."
    return text


def _verdict_table(frame: pd.DataFrame) -> str:
    """An HTML table of preformatted cells; null explainers' rows greyed, the verdict as a coloured span."""
    shown = [c for c in frame.columns if c != "null"]
    head = "".join(f"<th>{escape(c)}</th>" for c in shown)
    rows = []
    for record in frame.to_dict("records"):
        cells = [
            verdict_span(str(record[c]), str(record[c])) if c == "verdict" else escape(str(record[c]))
            for c in shown
        ]
        css = " class=null" if record["null"] else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return scroll(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def finetune_long(tables: ShortcutTables) -> pd.DataFrame:
    """One row per fine-tuned model × quantity: base, model, quantity, before, after (gap recovered: after only)."""
    finetune = tables.finetune
    parts = [
        pd.DataFrame(
            {
                "base": finetune["base"],
                "model": finetune["model"],
                "quantity": QUANTITY_LABELS[stem],
                "before": finetune[f"{stem}_before"],
                "after": finetune[f"{stem}_after"],
            }
        )
        for stem in FINETUNE_FIGURES
    ]
    parts.append(
        pd.DataFrame(
            {
                "base": finetune["base"],
                "model": finetune["model"],
                "quantity": GAP_RECOVERED,
                "before": math.nan,
                "after": finetune["gap_recovered"],
            }
        )
    )
    parts += _erasure_parts(tables)
    methods = tables.finetune_methods
    parts += [
        pd.DataFrame(
            {
                "base": methods["base"],
                "model": methods["model"],
                "quantity": [f"{QUANTITY_LABELS[stem]} · {m}" for m in methods["method"]],
                "before": methods[f"{stem}_before"],
                "after": methods[f"{stem}_after"],
            }
        )
        for stem in FINETUNE_METHOD_FIGURES
    ]
    long = pd.concat(parts, ignore_index=True)
    return long.astype({"base": str, "model": str, "before": float, "after": float})


def _erasure_parts(tables: ShortcutTables) -> list[pd.DataFrame]:
    """Before/after rows of each class's erasure effect: the causal profile, measured without attribution."""
    effect = tables.erasure.set_index(["model", "class"])["mean"].astype(float)
    parts = []
    for name in sorted(tables.erasure["class"].astype(str).unique()):
        pairs = tables.finetune[["base", "model"]].astype(str)
        parts.append(
            pd.DataFrame(
                {
                    "base": pairs["base"],
                    "model": pairs["model"],
                    "quantity": f"{ERASURE_LABEL} · {name}",
                    "before": [effect.get((base, name), math.nan) for base in pairs["base"]],
                    "after": [effect.get((model, name), math.nan) for model in pairs["model"]],
                }
            )
        )
    return parts


def quantities(long: pd.DataFrame) -> list[str]:
    """Quantities in table order: the model's, gap recovered, erasure effects, then each method's masses."""
    fixed = [QUANTITY_LABELS[stem] for stem in FINETUNE_FIGURES] + [GAP_RECOVERED]
    rest = set(long["quantity"]) - set(fixed)
    erasure = sorted(q for q in rest if q.startswith(ERASURE_LABEL))
    return fixed + erasure + sorted(rest - set(erasure), key=lambda q: (q.split(" · ", 1)[1], q))


def finetune_table(tables: ShortcutTables) -> pd.DataFrame:
    """Per base and quantity: seeds, before, after and after − before as mean [95% t interval over seeds]."""
    long = finetune_long(tables)
    rows = []
    for base, group in long.groupby("base", sort=True):
        for quantity in quantities(long):
            rows_q = group[group["quantity"] == quantity]
            if rows_q.empty:
                continue
            change = seed_change(rows_q["before"], rows_q["after"])
            rows.append(
                {
                    "base": base,
                    "quantity": quantity,
                    "seeds": change.seeds,
                    "before": interval_text(change.before),
                    "after [95% t CI]": interval_text(change.after),
                    "change [95% t CI]": interval_text(change.change),
                }
            )
    return pd.DataFrame(rows)


def finetune_sentence(outcome: FinetuneOutcome) -> str:
    """What fine-tuning one base did, in words, with its numbers and the evaluation's decision."""
    half = "at least" if outcome.recovers_half else "less than"
    kept = "no fall beyond" if outcome.keeps_in_distribution else "a fall beyond"
    change = interval_text(outcome.in_distribution_change)
    before, after = interval_text(outcome.decorrelated_before), interval_text(outcome.decorrelated_after)
    if not outcome.has_gap:
        # a model without the shortcut: the question is only whether fine-tuning hurts it
        return (
            f"{outcome.base} (no gap to a clean model to recover): fine-tuning ({outcome.seeds} seeds) moved "
            f"R² decorrelated {before} → {after}; in-distribution R² changed by {change} ({kept} {R2_TOLERANCE})."
        )
    return (
        f"{outcome.base}: fine-tuning ({outcome.seeds} seeds) recovered {interval_text(outcome.recovered, 2)} "
        f"of the decorrelated-R² gap (R² decorrelated {before} → {after}), {half} half; in-distribution R² "
        f"changed by {change} ({kept} {R2_TOLERANCE}): {'a success' if outcome.success else 'not a success'}."
    )


def _lead(tables: ShortcutTables, cue: str, from_trust: bool) -> str:
    rhos = ", ".join(rho_text(r) for r in sorted(tables.models["rho"].dropna().unique()))
    source = (
        "the trust table's shortcut verdict"
        if from_trust
        else "the trust table has no shortcut verdict here, so the detection table's p"
    )
    return paragraph(
        "A test with a known answer. Each series is one model spec trained on synthetic sets whose sky tint "
        "agrees with the steering sign with probability rho in the training split (rho = 0: independent, "
        f"50 %; validation and test stay fair); this run has rho {rhos} in series {', '.join(tables.series)}. "
        "The causal pull is measured without attribution: every test scene is re-rendered with the tint "
        "flipped, and the pull is the mean steering change toward the new tint's side (0: the tint is "
        "ignored). R² on scenes whose tint agrees with the steering sign against scenes where it disagrees "
        f"shows what each model learned. A method passes when its mass share on the cue class ({cue}) "
        "follows the pull across models: the Spearman ρ between per-model cue mass and pull, decided by its "
        f"one-sided permutation p over pairings of the models: pass where p < {ALPHA:g}, fail where "
        f"p ≥ {NO_STRONGER_THAN_RANDOM:g} (no stronger than a random pairing), inconclusive between "
        f"({source})."
    )


def shortcut_section(results: Results) -> str:
    """The Shortcuts section's text and tables; "" when the shortcut check did not run."""
    tables = shortcut_tables(results)
    if tables is None:
        return ""
    verdicts, from_trust = detection_outcomes(tables.detection, results.trust)
    cue = cue_class(results)
    parts = [
        _lead(tables, cue, from_trust),
        "<h3>What each model learned</h3>",
        table(models_table(tables)),
        "<h3>Does the attribution see it?</h3>",
        paragraph(
            "Per method: Spearman ρ of per-model cue mass share with the causal pull (bootstrap 95% CI over "
            "images), its one-sided p value, ρ with rho (models not fine-tuned), and per series the smallest "
            "rho at which the cue mass is above the fair model's (paired interval above 0). Null explainers "
            "greyed."
        ),
        _verdict_table(detection_table(tables, verdicts)),
        paragraph(detection_sentence(tables, verdicts, cue)),
    ]
    if not tables.finetune.empty:
        parts += [
            "<h3>Relevance-guided fine-tuning</h3>",
            table(finetune_table(tables)),
            *(paragraph(finetune_sentence(outcome)) for outcome in finetune_outcomes(tables.finetune)),
        ]
    return "".join(parts)


def shortcut_findings(results: Results) -> list[str]:
    """The shortcut test's answers for the report's lead: which methods see the planted shortcut, and what
    fine-tuning did (nothing when the check did not run)."""
    tables = shortcut_tables(results)
    if tables is None:
        return []
    verdicts, _ = detection_outcomes(tables.detection, results.trust)
    answers = [f"Planted shortcut: {detection_sentence(tables, verdicts, cue_class(results))}"]
    return answers + [finetune_sentence(outcome) for outcome in finetune_outcomes(tables.finetune)]
