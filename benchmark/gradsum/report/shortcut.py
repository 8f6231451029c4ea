"""The report's Shortcuts section: the `shortcut` trust check's tables as a section and its figures.

The check has a known answer. Models of one spec (a series) are trained on synthetic sets whose sky tint
agrees with the steering sign with probability rho, and each model's causal pull on the tint is measured
without attribution (the tint flipped, the steering change read). A method deserves trust on this check
when its mass on the cue class follows that pull across models. Tables come from `results.checks`; the
section and its figures exist only when the check ran.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

from gradsum.errors import ResultsError
from gradsum.evaluation.shortcut import (
    CONFIDENCE,
    DETECTION_CRITERION,
    DETECTION_TABLE,
    FINETUNE_FIGURES,
    FINETUNE_METHOD_FIGURES,
    FINETUNE_METHODS_TABLE,
    FINETUNE_TABLE,
    METHODS_TABLE,
    MODELS_TABLE,
    ONSET_TABLE,
    TABLE_COLUMNS,
    ShortcutOptions,
)
from gradsum.evaluation.verdicts import (
    ALPHA,
    FAIL,
    INCONCLUSIVE,
    NO_STRONGER_THAN_RANDOM,
    OUTCOMES,
    PASS,
    UNINFORMATIVE,
    overall,
    permutation_outcome,
)
from gradsum.report.html import (
    _paragraph,
    _scroll,
    _with_ci,
    table,
    verdict_span,
)
from gradsum.report.results import Results

#: The tables without which there is no section (fine-tuning is optional).
REQUIRED = (MODELS_TABLE, METHODS_TABLE, DETECTION_TABLE, ONSET_TABLE)
#: Yes/no columns: a CSV round trip may leave them as text.
FLAGS = ("null", "finetuned", "detected")
#: Fine-tuning succeeds when it recovers at least this share of the decorrelated-R² gap ...
RECOVERY_TARGET = 0.5
#: ... and the in-distribution R² falls by no more than this.
R2_TOLERANCE = 0.02
VERDICT_COLUMN = f"{DETECTION_CRITERION.check}_verdict"
#: How the fine-tuning figures are labelled (keys: the check's FINETUNE_FIGURES and FINETUNE_METHOD_FIGURES).
QUANTITY_LABELS = {
    "r2_decorrelated": "R² decorrelated",
    "r2_in_distribution": "R² in distribution",
    "r2_test": "R² test",
    "pull": "causal pull",
    "cue_mass_share": "cue mass",
    "foreground_mass_share": "foreground mass",
}
#: The model-level quantities the fine-tuning figure draws (every one is in its table).
FIGURE_QUANTITIES = ("r2_decorrelated", "r2_in_distribution", "pull")
GAP_RECOVERED = "gap recovered"
#: The fine-tuning table's label of a class's causal erasure effect.
ERASURE_LABEL = "erasure |Δ|"


#: Columns of `ShortcutTables.erasure`.
ERASURE_COLUMNS = ["model", "class", "mean"]
#: The causal profile's effect the fine-tuning table shows before and after.
ERASURE_EFFECT = "abs_delta"


@dataclass(frozen=True)
class ShortcutTables:
    """The shortcut check's tables, flags as booleans; the fine-tuning ones empty when nothing was tuned."""

    models: pd.DataFrame
    methods: pd.DataFrame
    detection: pd.DataFrame
    onset: pd.DataFrame
    finetune: pd.DataFrame
    finetune_methods: pd.DataFrame
    #: the causal check's erasure effect (mean |output change|) of the cue and foreground classes per model:
    #: columns model, class, mean (empty when the causal check did not run)
    erasure: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=ERASURE_COLUMNS))

    @property
    def series(self) -> list[str]:
        """Series names, sorted: the order of colours and onset columns."""
        return sorted(self.models["series"].astype(str).unique())

    @property
    def real_methods(self) -> list[str]:
        """Methods that are not null explainers, by name."""
        return sorted(self.detection.loc[~self.detection["null"], "method"].astype(str))


def _flags(column: pd.Series) -> pd.Series:
    return column.astype(str).str.lower().isin(("true", "1", "1.0"))


def _checked(results: Results, name: str) -> pd.DataFrame:
    frame = results.checks.get(name, pd.DataFrame())
    if frame.empty:
        frame = pd.DataFrame(columns=list(TABLE_COLUMNS[name]))
    missing = [c for c in TABLE_COLUMNS[name] if c not in frame.columns]
    if missing:
        raise ResultsError(
            f"{results.path / f'{name}.csv'}: missing column(s) {', '.join(repr(c) for c in missing)}"
        )
    return frame.assign(**{flag: _flags(frame[flag]) for flag in FLAGS if flag in frame.columns})


def shortcut_tables(results: Results) -> ShortcutTables | None:
    """The shortcut tables of a results folder; None when the check did not run or measured no model."""
    if any(name not in results.checks for name in REQUIRED) or results.checks[MODELS_TABLE].empty:
        return None
    return ShortcutTables(
        models=_checked(results, MODELS_TABLE),
        methods=_checked(results, METHODS_TABLE),
        detection=_checked(results, DETECTION_TABLE),
        onset=_checked(results, ONSET_TABLE),
        finetune=_checked(results, FINETUNE_TABLE),
        finetune_methods=_checked(results, FINETUNE_METHODS_TABLE),
        erasure=erasure_effects(results),
    )


def erasure_effects(results: Results) -> pd.DataFrame:
    """The causal profile (erasure |output change|) of the cue and foreground classes, per model."""
    profiles = results.checks.get("causal_profiles")
    if profiles is None or profiles.empty:
        return pd.DataFrame(columns=ERASURE_COLUMNS)
    classes = [cue_class(results), *foreground_classes(results)]
    chosen = profiles[(profiles["effect"] == ERASURE_EFFECT) & profiles["class"].isin(classes)]
    return chosen[ERASURE_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its two-sided t interval (NaN ends for fewer than two values)."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        """ "mean [low, high]"; the mean alone when the interval is missing or has no width; "—" for none."""
        if not math.isfinite(self.mean):
            return "—"
        mean, low, high = (f"{v:.{digits}f}" for v in (self.mean, self.low, self.high))
        # identical seeds (the base's own figures) leave an interval narrower than the digits shown
        return mean if not math.isfinite(self.low) or low == high else f"{mean} [{low}, {high}]"


def t_interval(values: Sequence[float] | pd.Series, confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t(confidence, n − 1) · sd / √n over the finite values (Student t: seeds are few)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, len(x))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half, len(x))


def method_verdicts(tables: ShortcutTables, trust: pd.DataFrame | None) -> tuple[dict[str, str], bool]:
    """Each detection method's outcome (pass, fail, inconclusive, uninformative) and whether it came from
    the trust table.

    The trust table's `shortcut_verdict` decides the criterion by the permutation p over models; every
    model row of a method repeats it, so a method's rows are combined as a row's criteria are (`overall`:
    a fail wins). Without that column, or for a method it does not judge, the detection table's own
    permutation p is read by the same rule.
    """
    detection = tables.detection
    methods = list(detection["method"].astype(str))
    own = {m: permutation_outcome(float(p))[0] for m, p in zip(methods, detection["p_value"], strict=True)}
    if trust is None or VERDICT_COLUMN not in trust.columns:
        return own, False
    judged = trust[trust[VERDICT_COLUMN].isin(OUTCOMES)]
    if judged.empty:
        return own, False
    outcomes = judged.groupby(judged["method"].astype(str))[VERDICT_COLUMN].agg(lambda v: overall(list(v)))
    return {m: str(outcomes[m]) if m in outcomes.index else own[m] for m in methods}, True


def _rho(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:g}"


def _fixed(value: float) -> str:
    # two decimals, as `_with_ci` writes the figures beside
    return "—" if not math.isfinite(value) else f"{value:.2f}"


def models_table(tables: ShortcutTables) -> pd.DataFrame:
    """What each model learned: its series and rho, the causal pull and R² by tint, with 95% CIs."""
    models = tables.models.sort_values(["series", "finetuned", "rho", "model"], kind="stable")
    rows = [
        {
            "model": row.model,
            "series": row.series,
            "rho": _rho(float(row.rho)),
            "fine-tuned from": row.base if row.finetuned and isinstance(row.base, str) else "",
            "pull [95% CI]": _with_ci(row, "pull"),
            "R² test": _fixed(row.r2_test),
            "R² agreeing": _fixed(row.r2_agreeing),
            "R² decorrelated [95% CI]": _with_ci(row, "r2_decorrelated"),
            "gap": _fixed(row.gap),
            "R² in distribution [95% CI]": _with_ci(row, "r2_in_distribution"),
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
                "Spearman ρ with pull [95% CI]": _with_ci(row, "spearman"),
                "p (one-sided)": "—" if not math.isfinite(row.p_value) else f"{row.p_value:.3g}",
                "Spearman ρ with rho": _fixed(row.spearman_vs_rho),
                **{
                    column: _rho(first.get((method, s), math.nan))
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
    return _scroll(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


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


def _quantities(long: pd.DataFrame) -> list[str]:
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
        for quantity in _quantities(long):
            rows_q = group[group["quantity"] == quantity]
            if rows_q.empty:
                continue
            rows.append(
                {
                    "base": base,
                    "quantity": quantity,
                    "seeds": len(rows_q),
                    "before": t_interval(rows_q["before"]).text(),
                    "after [95% t CI]": t_interval(rows_q["after"]).text(),
                    "change [95% t CI]": t_interval(rows_q["after"] - rows_q["before"]).text(),
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class FinetuneOutcome:
    """What fine-tuning one base did over its seeds: gap recovered, decorrelated R², in-distribution change."""

    base: str
    seeds: int
    recovered: Interval
    decorrelated_before: Interval
    decorrelated_after: Interval
    in_distribution_change: Interval

    @property
    def recovers_half(self) -> bool:
        return self.recovered.mean >= RECOVERY_TARGET

    @property
    def keeps_in_distribution(self) -> bool:
        return self.in_distribution_change.mean >= -R2_TOLERANCE

    @property
    def has_gap(self) -> bool:
        """Whether the base had a decorrelated-R² gap to a clean model to recover (not so for the clean one)."""
        return math.isfinite(self.recovered.mean)

    @property
    def sentence(self) -> str:
        """The finding in words, with its numbers."""
        half = "at least" if self.recovers_half else "less than"
        kept = "no fall beyond" if self.keeps_in_distribution else "a fall beyond"
        if not self.has_gap:
            # a model without the shortcut: the question is only whether fine-tuning hurts it
            return (
                f"{self.base} (no gap to a clean model to recover): fine-tuning ({self.seeds} seeds) moved "
                f"R² decorrelated {self.decorrelated_before.text()} → {self.decorrelated_after.text()}; "
                f"in-distribution R² changed by {self.in_distribution_change.text()} ({kept} {R2_TOLERANCE})."
            )
        return (
            f"{self.base}: fine-tuning ({self.seeds} seeds) recovered {self.recovered.text(2)} of the "
            f"decorrelated-R² gap (R² decorrelated {self.decorrelated_before.text()} → "
            f"{self.decorrelated_after.text()}), {half} half; in-distribution R² changed by "
            f"{self.in_distribution_change.text()} ({kept} {R2_TOLERANCE}): "
            f"{'a success' if self.recovers_half and self.keeps_in_distribution else 'not a success'}."
        )


def finetune_outcomes(tables: ShortcutTables) -> list[FinetuneOutcome]:
    """One outcome per fine-tuned base, by name."""
    outcomes = []
    for base, rows in tables.finetune.groupby(tables.finetune["base"].astype(str), sort=True):
        outcomes.append(
            FinetuneOutcome(
                base=str(base),
                seeds=len(rows),
                recovered=t_interval(rows["gap_recovered"]),
                decorrelated_before=t_interval(rows["r2_decorrelated_before"]),
                decorrelated_after=t_interval(rows["r2_decorrelated_after"]),
                in_distribution_change=t_interval(
                    rows["r2_in_distribution_after"] - rows["r2_in_distribution_before"]
                ),
            )
        )
    return outcomes


def _options(results: Results) -> dict[str, Any]:
    """The run's `evaluation.options.shortcut` ({} when absent)."""
    options: Any = results.manifest.get("config")
    for key in ("evaluation", "options", "shortcut"):
        options = options.get(key) if isinstance(options, dict) else None
    return options if isinstance(options, dict) else {}


def cue_class(results: Results) -> str:
    """The class the check measured mass on: the run's `evaluation.options.shortcut.cue`, else the default."""
    return str(_options(results).get("cue", ShortcutOptions.cue))


def foreground_classes(results: Results) -> tuple[str, ...]:
    """The classes the check summed as foreground: the run's option, else the check's default."""
    return tuple(str(name) for name in _options(results).get("foreground", ShortcutOptions.foreground))


def _lead(tables: ShortcutTables, cue: str, from_trust: bool) -> str:
    rhos = ", ".join(_rho(r) for r in sorted(tables.models["rho"].dropna().unique()))
    source = (
        "the trust table's shortcut verdict"
        if from_trust
        else "the trust table has no shortcut verdict here, so the detection table's p"
    )
    return _paragraph(
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
    verdicts, from_trust = method_verdicts(tables, results.trust)
    cue = cue_class(results)
    parts = [
        _lead(tables, cue, from_trust),
        "<h3>What each model learned</h3>",
        table(models_table(tables)),
        "<h3>Does the attribution see it?</h3>",
        _paragraph(
            "Per method: Spearman ρ of per-model cue mass share with the causal pull (bootstrap 95% CI over "
            "images), its one-sided p value, ρ with rho (models not fine-tuned), and per series the smallest "
            "rho at which the cue mass is above the fair model's (paired interval above 0). Null explainers "
            "greyed."
        ),
        _verdict_table(detection_table(tables, verdicts)),
        _paragraph(detection_sentence(tables, verdicts, cue)),
    ]
    if not tables.finetune.empty:
        parts += [
            "<h3>Relevance-guided fine-tuning</h3>",
            table(finetune_table(tables)),
            *(_paragraph(outcome.sentence) for outcome in finetune_outcomes(tables)),
        ]
    return "".join(parts)


def shortcut_findings(results: Results) -> list[str]:
    """The shortcut test's answers for the report's lead: which methods see the planted shortcut, and what
    fine-tuning did (nothing when the check did not run)."""
    tables = shortcut_tables(results)
    if tables is None:
        return []
    verdicts, _ = method_verdicts(tables, results.trust)
    answers = [f"Planted shortcut: {detection_sentence(tables, verdicts, cue_class(results))}"]
    return answers + [outcome.sentence for outcome in finetune_outcomes(tables)]


# Figures ------------------------------------------------------------------------------------------------


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


def _errors(values: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    # A missing interval draws no whisker rather than dropping the point.
    v = values.to_numpy(float)
    return np.nan_to_num(np.clip(np.vstack([v - low.to_numpy(float), high.to_numpy(float) - v]), 0, None))


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
                xerr=_errors(group["pull"], group["pull_ci_low"], group["pull_ci_high"]),
                yerr=_errors(
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
                ax.annotate(_rho(float(rho)), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=6)
        ax.set_title(f"{method}: Spearman ρ = {_with_ci(detection.loc[method], 'spearman')}", fontsize=9)
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
                yerr=_errors(
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
        ax.set_xticks(range(len(rhos)), [_rho(r) for r in rhos])
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
    quantities = [QUANTITY_LABELS[q] for q in FIGURE_QUANTITIES] + [
        q for q in _quantities(long) if " · " in q
    ]
    bases = sorted(long["base"].unique())
    fig, axes = _grid(len(quantities), 4, (2.6, 2.6))
    palette = matplotlib.colormaps["tab10"]
    for ax, quantity in zip(axes, quantities, strict=True):
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
